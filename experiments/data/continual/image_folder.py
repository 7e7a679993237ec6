"""Your own labelled images: one ImageFolder tree split into tasks of disjoint classes, as TinyImageNet is."""

from __future__ import annotations

from pathlib import Path

from experiments.data.continual.tasks import Benchmark, check_classes_per_task, class_incremental_tasks
from experiments.data.sources.image_folder import image_folder_splits
from experiments.options import UserError

MIN_CLASSES = 2  # one class is no classification task


def image_folder(root: Path, download: bool, seed: int, val_fraction: float, classes_per_task: int = 2,
                 image_size: int = 32) -> Benchmark:
    """The classes of `root`/train/<class>/* in tasks of `classes_per_task`, in an order drawn from `seed`
    (a Split-MNIST-style sequence from any labelled folder); `root`/val/<class>/* or test/<class>/* is
    the test split. Images are resized to 3 x image_size x image_size and normalised as ImageNet's.
    Task t is `image_folder_<t>`; its val split is the same seeded, class-balanced hold-out as every
    benchmark's. Nothing is downloaded.
    """
    if download:
        raise UserError("benchmark=image_folder reads your own folder and downloads nothing: "
                         "set benchmark.download=false.")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise UserError(f"benchmark.image_size={image_size} must be an integer >= 8 (pixels a side), "
                         "e.g. benchmark.image_size=32.")
    train, test = image_folder_splits(root, image_size)
    num_classes = len(train.classes)
    if num_classes < MIN_CLASSES:
        raise UserError(f"image_folder: {root}/train holds {num_classes} class folder(s) "
                         f"({', '.join(train.classes)}); a task needs at least {MIN_CLASSES} classes. Add "
                         f"class folders, or point benchmark.root at another folder.")
    check_classes_per_task(classes_per_task, num_classes, f"the {root}/train folder's")
    tasks = class_incremental_tasks("image_folder", train, test, num_classes, classes_per_task, seed,
                                    val_fraction)
    return Benchmark(tuple(tasks), num_classes, (3, image_size, image_size))
