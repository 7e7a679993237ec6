"""notMNIST: the notMNIST_small letter folders, or a parquet copy; a fixed 10% of its images is the test split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from experiments.data.images import DatasetNotFoundError
from experiments.data.sources import LabelledImages, fit, to_tensor
from experiments.data.sources.hub import parquet_available, read_parquet
from experiments.data.splits import balanced_holdout

log = logging.getLogger(__name__)

NOTMNIST_LETTERS = "ABCDEFGHIJ"
NOTMNIST_TEST_FRACTION = 0.1
NOTMNIST_SPLIT_SEED = 0  # fixed, so every run is tested on the same notMNIST images
NOTMNIST_HUB = "anubhavmaity/notMNIST"  # a parquet copy on the Hugging Face Hub (columns image, label)
NOTMNIST_URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"


def notmnist_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    """notMNIST_small's letter folders (unreadable PNGs skipped and counted), else a parquet copy; a fixed,
    seeded 10% of its images is the test split."""
    folder, parquet_folder = root / "notMNIST_small", root / "notmnist"
    if folder.is_dir():
        pixels, labels = read_notmnist_folder(folder)
    elif parquet_available(parquet_folder, download):
        pixels, labels = read_notmnist_parquet(parquet_folder, download)
    else:
        raise DatasetNotFoundError(
            f"notmnist not found: neither {folder} nor parquet files under {parquet_folder}. Expected "
            f"{folder}/A/*.png ... {folder}/J/*.png (unpack {NOTMNIST_URL} into {root}), or a parquet copy "
            f"(columns image, label) under {parquet_folder}, which benchmark.download=true fetches from "
            f"the Hugging Face Hub ({NOTMNIST_HUB}) when online.")
    train, test = balanced_holdout(labels, NOTMNIST_TEST_FRACTION, np.random.default_rng(NOTMNIST_SPLIT_SEED))
    transform = to_tensor("notmnist", 32)
    return tuple(LabelledImages(lambda i, split=pixels[items]: Image.fromarray(split[i]), labels[items],
                                transform) for items in (train, test))


def read_notmnist_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels, skipped, total = [], [], 0, 0
    for label, letter in enumerate(NOTMNIST_LETTERS):
        for path in sorted((folder / letter).glob("*.png")):
            total += 1
            try:
                with Image.open(path) as image:
                    pixels.append(np.asarray(as_28x28_gray(image)))
                labels.append(label)
            except (OSError, SyntaxError, ValueError):  # the archive holds a few truncated or empty PNGs
                skipped += 1
    if not labels:
        raise DatasetNotFoundError(f"notmnist: no readable PNG in {folder}/A..J ({total} files tried). "
                                   f"Expected {folder}/A/*.png ... {folder}/J/*.png from {NOTMNIST_URL}.")
    log.warning("notMNIST: skipped %d unreadable image(s) of %d in %s", skipped, total, folder)
    return np.stack(pixels), np.asarray(labels)


def read_notmnist_parquet(folder: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    hub = read_parquet(folder, download, NOTMNIST_HUB)
    records = [record for split in hub.values() for record in split]
    names = next(iter(hub.values())).features["label"]
    letters = getattr(names, "names", None)  # a ClassLabel's names map ids to letters when present
    labels = [NOTMNIST_LETTERS.index(letters[r["label"]]) if letters else int(r["label"]) for r in records]
    return np.stack([np.asarray(as_28x28_gray(r["image"])) for r in records]), np.asarray(labels)


def as_28x28_gray(image: Image.Image) -> Image.Image:
    return fit(image.convert("L"), 28)
