"""TinyImageNet's 200 classes in tasks of disjoint classes, in a seeded class order."""

from __future__ import annotations

from pathlib import Path

from experiments.data.continual.tasks import Benchmark, check_classes_per_task, class_incremental_tasks
from experiments.data.sources.tiny_imagenet import TINY_IMAGENET_CLASSES, TINY_IMAGENET_SIZE, tiny_imagenet_splits


def tiny_imagenet(root: Path, download: bool, seed: int, val_fraction: float,
                  classes_per_task: int = 20) -> Benchmark:
    """TinyImageNet's 200 classes in tasks of `classes_per_task` disjoint classes, in an order drawn from
    `seed`; 3x64x64 images; the official val images are the test split.

    Expected in `root`: the official tiny-imagenet-200 folder (wnids.txt, train/<wnid>/images/*.JPEG,
    val/images/*.JPEG with val/val_annotations.txt), or its parquet copy (train-*.parquet,
    valid-*.parquet) anywhere under root, which download=true fetches from the Hugging Face Hub.
    Classes are numbered by sorted wnid; global label = the class's position in the drawn order.
    """
    check_classes_per_task(classes_per_task, TINY_IMAGENET_CLASSES, "TinyImageNet's")
    train, test = tiny_imagenet_splits(root, download)
    tasks = class_incremental_tasks("tiny_imagenet", train, test, TINY_IMAGENET_CLASSES, classes_per_task,
                                    seed, val_fraction)
    return Benchmark(tuple(tasks), TINY_IMAGENET_CLASSES, (3, TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE))
