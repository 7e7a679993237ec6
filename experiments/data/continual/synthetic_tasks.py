"""Generated tasks whose labels conflict, so a network trained on them in sequence forgets."""

from __future__ import annotations

from pathlib import Path

import torch

from experiments.data.continual.tasks import Benchmark, make_task
from experiments.data.synthetic import TemplateImages, smooth_patterns


def synthetic_tasks(root: Path, download: bool, seed: int, val_fraction: float, num_tasks: int = 5,
                    classes_per_task: int = 2, train_size: int = 200, test_size: int = 100,
                    image_size: int = 32, noise_std: float = 1.0, task_offset_std: float = 1.0) -> Benchmark:
    """Generated tasks whose labels conflict, so a network trained on them in sequence forgets.

    Every task shows the same `classes_per_task` class templates (smooth colour patterns) and shares the
    label ids 0..classes_per_task-1; each task relabels every template relative to the task before it,
    so what one task teaches the next contradicts. A task-specific offset pattern
    (`task_offset_std`) tells the tasks apart, so a learner that remembers could solve them all.
    Nothing is read from `root` or downloaded; everything follows from `seed`.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = smooth_patterns(classes_per_task, image_size, generator)
    offsets = task_offset_std * smooth_patterns(num_tasks, image_size, generator)
    template_of = [torch.arange(classes_per_task)]
    for _ in range(1, num_tasks):  # a new template for every label: a random derangement of the last
        shift = torch.randperm(classes_per_task, generator=generator)
        while classes_per_task > 1 and (shift == torch.arange(classes_per_task)).any():
            shift = torch.randperm(classes_per_task, generator=generator)
        template_of.append(template_of[-1][shift])
    tasks = []
    for t in range(num_tasks):
        train_labels, test_labels = (torch.randint(classes_per_task, (n,), generator=generator)
                                     for n in (train_size, test_size))
        task_templates = templates[template_of[t]] + offsets[t]  # label -> its image in task t
        train = TemplateImages(task_templates, train_labels.numpy(), noise_std, (seed, t, 0))
        test = TemplateImages(task_templates, test_labels.numpy(), noise_std, (seed, t, 1))
        tasks.append(make_task(f"synthetic_{t}", t, range(classes_per_task), range(classes_per_task), train,
                               test, seed, val_fraction))
    return Benchmark(tuple(tasks), classes_per_task, (3, image_size, image_size))
