"""A folder of the user's own labelled images in ImageFolder's layout: train/<class>/* and, as the test
split, val/<class>/* or test/<class>/*, the same class folders in both; classes numbered by sorted name."""

from __future__ import annotations

from pathlib import Path

import torchvision
from torchvision import transforms

from experiments.data.images import DatasetNotFoundError, check_same_classes
from experiments.data.sources import to_tensor

TEST_FOLDERS = ("val", "test")  # the first of these that exists is the test split


def image_folder_splits(root: Path, image_size: int) -> tuple[torchvision.datasets.ImageFolder, ...]:
    """(train, test) ImageFolders of `root`, every image resized to 3 x image_size x image_size."""
    layout = (f"Expected {root}/train/<class>/*.png (or .jpg, ...) and {root}/val/<class>/* or "
              f"{root}/test/<class>/* as the test split, one folder per class, the same class folders in both.")
    test_folder = next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)
    if not (root / "train").is_dir() or test_folder is None:
        found = [name for name in ("train", *TEST_FOLDERS) if (root / name).is_dir()]
        raise DatasetNotFoundError(f"image_folder: {root} has {'only ' + ', '.join(found) if found else 'no'} "
                                   f"split folder{'s' if len(found) != 1 else ''}. {layout} Point "
                                   f"benchmark.root at such a folder.")
    transform = transforms.Compose([transforms.Resize((image_size, image_size)),
                                    to_tensor("image_folder", image_size)])
    splits = []
    for folder in (root / "train", test_folder):
        try:
            splits.append(torchvision.datasets.ImageFolder(folder, transform=transform))
        except FileNotFoundError as error:  # no class folders, or no images in them
            raise DatasetNotFoundError(f"image_folder: no images found in {folder} ({error}). {layout}") from error
    check_same_classes("image_folder:", *splits, root, test_folder.name)
    return tuple(splits)
