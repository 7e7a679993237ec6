"""TinyImageNet: the official tiny-imagenet-200 folder, or its parquet copy; 3x64x64, classes by sorted wnid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from experiments.data.images import DatasetNotFoundError
from experiments.data.sources import LabelledImages, fit, open_rgb, to_tensor
from experiments.data.sources.hub import parquet_available, read_parquet

TINY_IMAGENET_CLASSES = 200
TINY_IMAGENET_SIZE = 64
TINY_IMAGENET_HUB = "zh-plus/tiny-imagenet"  # parquet copy: splits train and valid, columns image, label
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def tiny_imagenet_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    """(train, test = the official val images) from the folder layout in `root`, else a parquet copy under it."""
    if (root / "wnids.txt").is_file():
        return read_tiny_imagenet_folder(root)
    if parquet_available(root, download):
        return read_tiny_imagenet_parquet(root, download)
    raise DatasetNotFoundError(
        f"tiny_imagenet not found in {root}: no wnids.txt and no parquet files. Expected the official "
        f"layout {root}/wnids.txt, {root}/train/<wnid>/images/*.JPEG, {root}/val/images/*.JPEG and "
        f"{root}/val/val_annotations.txt (unzip {TINY_IMAGENET_URL} and point benchmark.root at its "
        f"tiny-imagenet-200 folder), or its parquet copy under {root}, which benchmark.download=true "
        f"fetches from the Hugging Face Hub ({TINY_IMAGENET_HUB}) when online.")


def read_tiny_imagenet_folder(root: Path) -> tuple[Dataset, Dataset]:
    wnids = sorted(line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip())
    if len(wnids) != TINY_IMAGENET_CLASSES:
        raise DatasetNotFoundError(f"{root / 'wnids.txt'} lists {len(wnids)} classes, not TinyImageNet's "
                                   f"{TINY_IMAGENET_CLASSES}: is {root} the tiny-imagenet-200 folder?")
    train_paths, train_labels = [], []
    for label, wnid in enumerate(wnids):
        paths = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
        if not paths:
            raise DatasetNotFoundError(f"tiny_imagenet: no images in {root / 'train' / wnid / 'images'} "
                                       f"(expected train/<wnid>/images/*.JPEG for every wnid in wnids.txt).")
        train_paths += paths
        train_labels += [label] * len(paths)
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetNotFoundError(f"tiny_imagenet: {annotations} not found (expected val/images/*.JPEG and "
                                   f"val/val_annotations.txt, one '<file>\\t<wnid>\\t...' line per image).")
    index = {wnid: label for label, wnid in enumerate(wnids)}
    val = [line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip()]
    unknown = sorted({wnid for _, wnid in val} - set(index))
    if unknown:
        raise DatasetNotFoundError(f"{annotations} names wnids missing from wnids.txt: {unknown[:5]}.")
    val_paths = [root / "val" / "images" / file for file, _ in val]
    transform, size = to_tensor("tiny_imagenet", TINY_IMAGENET_SIZE), TINY_IMAGENET_SIZE
    return (LabelledImages(lambda i: open_rgb(train_paths[i], size), train_labels, transform),
            LabelledImages(lambda i: open_rgb(val_paths[i], size), [index[w] for _, w in val], transform))


def read_tiny_imagenet_parquet(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    hub = read_parquet(root, download, TINY_IMAGENET_HUB)
    test_split = next((s for s in ("valid", "val", "test") if s in hub), None)
    if "train" not in hub or test_split is None:
        raise DatasetNotFoundError(f"tiny_imagenet parquet files under {root} give splits {sorted(hub)}; "
                                   "expected train-*.parquet and valid-*.parquet.")
    names = getattr(hub["train"].features["label"], "names", None)
    # Hub copies number classes by their own wnid list; renumber by sorted wnid as the folder layout does.
    renumber = np.argsort(np.argsort(names)) if names else np.arange(TINY_IMAGENET_CLASSES)
    transform = to_tensor("tiny_imagenet", TINY_IMAGENET_SIZE)

    def split(hf) -> LabelledImages:
        labels = renumber[list(hf["label"])]
        return LabelledImages(lambda i: fit(hf[i]["image"].convert("RGB"), TINY_IMAGENET_SIZE), labels,
                              transform)

    return split(hub["train"]), split(hub[test_split])
