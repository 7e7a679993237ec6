"""CIFAR-10, MNIST, Fashion-MNIST and SVHN in torchvision's layouts, as 3x32x32 (train, test) datasets.

torchvision's own "Dataset not found. You can use download=True" is not passed on: the messages here name
the folder, the files and the config key (benchmark.download) a user sets.
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torch.utils.data import Dataset

from experiments.data.images import DatasetNotFoundError, cifar_layout_message
from experiments.data.sources import to_tensor
from experiments.options import UserError

DOWNLOAD_KEY = "benchmark.download"


def cifar10_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / "cifar10", to_tensor("cifar10", 32)
    try:
        return tuple(torchvision.datasets.CIFAR10(folder, train=train, transform=transform,
                                                  download=download and train) for train in (True, False))
    except (OSError, RuntimeError) as error:
        raise DatasetNotFoundError(cifar_layout_message("cifar10", folder, download, error,
                                                        group="benchmark")) from error


def mnist_like_splits(name: str, dataset_class: type, root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / name, to_tensor(name, 32)
    try:
        return tuple(dataset_class(folder, train=train, transform=transform, download=download and train)
                     for train in (True, False))
    except (OSError, RuntimeError) as error:
        raw = folder / dataset_class.__name__ / "raw"
        files = [file.removesuffix(".gz") for file, _ in dataset_class.resources]
        raise DatasetNotFoundError(
            f"{name} not found in {raw} ({why(download, error, raw, files)}). Expected {', '.join(files)} (the "
            f"idx files, unzipped) in {raw}. Set {DOWNLOAD_KEY}=true to fetch them with torchvision when "
            f"online, or fetch them from {dataset_class.mirrors[0]}.") from error


def svhn_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / "svhn", to_tensor("svhn", 32)
    try:
        splits = tuple(torchvision.datasets.SVHN(folder, split=split, transform=transform, download=download)
                       for split in ("train", "test"))
    except (OSError, RuntimeError) as error:
        files = ["train_32x32.mat", "test_32x32.mat"]
        raise DatasetNotFoundError(
            f"svhn not found in {folder} ({why(download, error, folder, files)}). Expected train_32x32.mat "
            f"and test_32x32.mat (the cropped-digits format) in {folder}. Set {DOWNLOAD_KEY}=true to fetch "
            f"them with torchvision when online, or fetch them from http://ufldl.stanford.edu/housenumbers/."
        ) from error
    except ModuleNotFoundError as error:  # torchvision reads .mat files with scipy, an optional dependency
        raise UserError(f"SVHN's .mat files are read with scipy, which is not installed "
                                  f"({error}): pip install scipy.") from error
    return splits


def why(download: bool, error: Exception, folder: Path, files: list[str]) -> str:
    """The missing files, or torchvision's reason when it was asked to download or rejected files present."""
    missing = [file for file in files if not (folder / file).is_file()]
    if download:
        return f"the download failed: {error}"
    return f"missing {', '.join(missing)}" if missing else f"torchvision rejected the files: {error}"
