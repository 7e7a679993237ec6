"""Continual-learning benchmarks: a sequence of tasks, each with its own train / val / test splits.

    benchmark = build_benchmark("five_datasets", root="data", download=True)
    task = benchmark.tasks[1]                 # MNIST, with the default order
    image, label, task_id = task.train[0]     # normalised 3x32x32 float, global label in task.classes, 1

One benchmark per module here (which tasks, which classes, which hold-outs); the readers of each source's
files are in experiments/data/sources/. Labels are global: task t of five_datasets has classes
10t..10t+9, a TinyImageNet or image_folder task the next `classes_per_task` classes of a seeded class
order. Each task's val split is a seeded, class-balanced hold-out of its training set (for choosing
hyperparameters; the test split is never used for that). There is no augmentation: an online learner
sees each training image once.
"""

from __future__ import annotations

from pathlib import Path

from experiments.data.continual.five_datasets import FIVE_DATASET_NAMES, five_datasets
from experiments.data.continual.image_folder import image_folder
from experiments.data.continual.synthetic_tasks import synthetic_tasks
from experiments.data.continual.tasks import Benchmark, ContinualTask
from experiments.data.continual.tiny_imagenet import tiny_imagenet
from experiments.data.images import DatasetNotFoundError
from experiments.options import UserError, check_options

__all__ = ["CONTINUAL_BENCHMARK_NAMES", "FIVE_DATASET_NAMES", "Benchmark", "ContinualTask",
           "DatasetNotFoundError", "build_benchmark"]

BUILDERS = {"five_datasets": five_datasets, "tiny_imagenet": tiny_imagenet, "image_folder": image_folder,
            "synthetic_tasks": synthetic_tasks}
CONTINUAL_BENCHMARK_NAMES = tuple(BUILDERS)
COMMON_ARGUMENTS = ("name", "root", "download", "seed", "val_fraction")


def build_benchmark(name: str, root: str = "data", *, download: bool = False, seed: int = 0,
                    val_fraction: float = 0.1, **options) -> Benchmark:
    """The benchmark called `name` (one of CONTINUAL_BENCHMARK_NAMES) as a sequence of tasks.

    `root` is the benchmark's folder (see each builder for its layout). `download=True` fetches what the
    network allows. `seed` draws what is random about the benchmark (class or task order, val hold-outs,
    synthetic images); `val_fraction` of each task's training set is held out as its val split.
    `options` are the benchmark's own: see its builder.
    """
    if name not in BUILDERS:
        raise UserError(f"Unknown benchmark {name!r}. Valid names: {', '.join(CONTINUAL_BENCHMARK_NAMES)}.")
    if not 0 <= val_fraction < 1:
        raise UserError(f"benchmark.val_fraction={val_fraction} must be in [0, 1): the fraction of each "
                         "task's training set held out for validation.")
    builder = BUILDERS[name]
    check_options("Benchmark", name, builder, options, given_apart=COMMON_ARGUMENTS,
                  common=COMMON_ARGUMENTS[1:])
    return builder(Path(root), download, seed, val_fraction, **options)
