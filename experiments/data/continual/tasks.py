"""What every benchmark is made of: tasks of disjoint global labels, each with train / val / test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from experiments.data.splits import balanced_holdout, labels_of
from experiments.options import UserError


@dataclass(frozen=True)
class ContinualTask:
    name: str
    classes: tuple[int, ...]  # global label ids this task's items carry
    train: Dataset  # items (float C x H x W, normalised; int global label; int task id)
    val: Dataset  # a seeded, class-balanced hold-out of the training set
    test: Dataset


@dataclass(frozen=True)
class Benchmark:
    tasks: tuple[ContinualTask, ...]  # in training order; task t's items carry task id t
    num_classes: int  # size of the label space shared by all tasks (one logit each)
    image_shape: tuple[int, int, int]  # (C, H, W)

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    @property
    def task_classes(self) -> list[tuple[int, ...]]:
        return [task.classes for task in self.tasks]


class TaskSplit(Dataset):
    """The items `indices` of `base` as (image, global label, task id); `global_label[local]` maps labels."""

    def __init__(self, base: Dataset, indices: Sequence[int], global_label: Sequence[int], task_id: int):
        self.base, self.indices, self.task_id = base, np.asarray(indices, dtype=np.int64), task_id
        self.global_label = np.asarray(global_label, dtype=np.int64)
        self.labels = self.global_label[labels_of(base)[self.indices]]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, _ = self.base[int(self.indices[index])]
        return image, int(self.labels[index]), self.task_id


def make_task(name: str, task_id: int, local_classes: Sequence[int], global_label: Sequence[int],
              train: Dataset, test: Dataset, seed: int, val_fraction: float) -> ContinualTask:
    """The task made of the items of `train` / `test` whose (local) label is in `local_classes`; its val
    split is `val_fraction` of each class of its training items, drawn from (seed, task_id)."""
    train_items = np.flatnonzero(np.isin(labels_of(train), local_classes))
    test_items = np.flatnonzero(np.isin(labels_of(test), local_classes))
    rng = np.random.default_rng([seed, task_id])
    kept, held = balanced_holdout(labels_of(train)[train_items], val_fraction, rng)
    classes = tuple(sorted(int(global_label[c]) for c in local_classes))
    return ContinualTask(name, classes, TaskSplit(train, train_items[kept], global_label, task_id),
                         TaskSplit(train, train_items[held], global_label, task_id),
                         TaskSplit(test, test_items, global_label, task_id))


def class_incremental_tasks(name: str, train: Dataset, test: Dataset, num_classes: int, classes_per_task: int,
                            seed: int, val_fraction: float) -> list[ContinualTask]:
    """The `num_classes` classes of one labelled dataset (labels 0..num_classes-1) in tasks of
    `classes_per_task`, in a class order drawn from `seed`; global label g = the class's place in that
    order, so task t holds the global labels t * classes_per_task onwards. Task t is called `<name>_<t>`."""
    order = np.random.default_rng([seed, 2]).permutation(num_classes)
    global_label = np.argsort(order)  # class order[g] gets global label g
    return [make_task(f"{name}_{t}", t, order[t * classes_per_task:(t + 1) * classes_per_task], global_label,
                      train, test, seed, val_fraction) for t in range(num_classes // classes_per_task)]


def check_classes_per_task(classes_per_task: int, num_classes: int, what: str) -> None:
    """Raise ValueError unless `classes_per_task` divides the `num_classes` classes of `what` into equal tasks."""
    whole = isinstance(classes_per_task, int) and not isinstance(classes_per_task, bool)
    if not whole or classes_per_task < 1 or num_classes % classes_per_task:
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        example = min(divisors, key=lambda d: abs(num_classes // d - 5))  # about five tasks
        raise UserError(f"benchmark.classes_per_task={classes_per_task} must divide {what} {num_classes} "
                         f"classes into equal tasks: one of {divisors}, e.g. benchmark.classes_per_task={example}.")
