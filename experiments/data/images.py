"""Image-classification datasets: CIFAR-10/100 (torchvision), ImageNet (ImageFolder), synthetic stand-in.

    data = build_image_datasets("cifar10", root="data/cifar10", download=True, val_size=5000)
    data.train[0]   # (normalised 3x32x32 float tensor, int label), augmented
    data.val        # 5,000 training images (500 per class), not augmented; None without val_size
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import Subset
from torchvision import transforms

from experiments.data.splits import balanced_holdout_of_size, labels_of
from experiments.data.synthetic import TemplateImages, smooth_patterns
from experiments.options import UserError, check_options


# Per-channel mean and std of the training sets (CIFAR's is the per-pixel std, not the often-copied 0.2023).
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR_CLASSES = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
COMMON_ARGUMENTS = ("name", "root", "download", "augment", "val_size", "val_seed")


@dataclass(frozen=True)
class ImageDatasets:
    train: torch.utils.data.Dataset  # items (float C x H x W, normalised; int label), augmented
    test: torch.utils.data.Dataset  # no augmentation
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    train_unaugmented: torch.utils.data.Dataset | None = None  # the train split under the test transform
    val: torch.utils.data.Dataset | None = None  # a class-balanced hold-out of train, not augmented


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset's files are not where the builder looked; the message names the expected layout."""


def check_same_classes(what: str, train: torchvision.datasets.ImageFolder, test: torchvision.datasets.ImageFolder,
                       root: Path, test_folder: str) -> None:
    """Raise DatasetNotFoundError unless root/train and root/<test_folder> hold the same class folders (the
    labels are their positions in sorted order, so they would not match)."""
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetNotFoundError(
            f"{what} train/ and {test_folder}/ under {root} have different class folders (only in train: "
            f"{only_train[:5]}, only in {test_folder}: {only_test[:5]}), so labels would not match. "
            f"Give both the same class folders.")


def build_image_datasets(name: str, root: str = "data", *, download: bool = False, augment: bool = True,
                         val_size: int = 0, val_seed: int = 0, **options) -> ImageDatasets:
    """Train, validation and test splits of the dataset called `name` (one of IMAGE_DATASET_NAMES).

    `root` is the dataset's own folder (e.g. data/cifar10). `download=True` fetches CIFAR when the
    network allows; ImageNet is never downloaded and the synthetic data is generated. `augment=False`
    gives the train split the test transform. `val_size` > 0 holds out exactly that many training items,
    the same share of every class, drawn from `val_seed` (fixed, so every run of a sweep shares the split),
    as a validation split without augmentation. `options` are the dataset's own: see its builder below.
    """
    if name not in BUILDERS:
        raise UserError(f"Unknown dataset {name!r}. Valid names: {', '.join(IMAGE_DATASET_NAMES)}.")
    builder = BUILDERS[name]
    check_options("Dataset", name, builder, options, given_apart=COMMON_ARGUMENTS, common=COMMON_ARGUMENTS[1:])
    data = builder(name, Path(root), download, augment, **options)
    if not isinstance(val_size, int) or isinstance(val_size, bool) or not 0 <= val_size < len(data.train):
        raise UserError(f"dataset.val_size={val_size!r} must be an integer from 0 (no validation split) to "
                         f"below the {len(data.train)} training items, e.g. dataset.val_size=5000 for CIFAR.")
    return with_validation(data, val_size, val_seed) if val_size else data


def with_validation(data: ImageDatasets, val_size: int, val_seed: int) -> ImageDatasets:
    """`data` with exactly `val_size` training items moved to a validation split (class-balanced, seeded)."""
    kept, held = balanced_holdout_of_size(labels_of(data.train), val_size, np.random.default_rng(val_seed))
    return dataclasses.replace(data, train=Subset(data.train, kept),
                               val=Subset(data.train_unaugmented or data.train, held))


def cifar(name: str, root: Path, download: bool, augment: bool) -> ImageDatasets:
    """CIFAR-10 or CIFAR-100 in torchvision's python-pickle layout under `root`."""
    dataset_class = CIFAR_CLASSES[name]
    normalize = transforms.Normalize(*CIFAR_MEAN_STD[name])
    test_transform = transforms.Compose([transforms.ToTensor(), normalize])
    train_transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize,
    ]) if augment else test_transform
    try:
        train = dataset_class(root, train=True, transform=train_transform, download=download)
        test = dataset_class(root, train=False, transform=test_transform)
    except (OSError, RuntimeError) as error:  # missing files, a failed download or a failed md5 check
        raise DatasetNotFoundError(cifar_layout_message(name, root, download, error)) from error
    unaugmented = dataset_class(root, train=True, transform=test_transform)
    return ImageDatasets(train, test, CIFAR_NUM_CLASSES[name], (3, 32, 32), unaugmented)


def cifar_layout_message(name: str, root: Path, download: bool, error: Exception, group: str = "dataset") -> str:
    """What is missing from `root` and how to get it; `group` is the config group whose `download` fetches it."""
    dataset_class = CIFAR_CLASSES[name]
    folder = root / dataset_class.base_folder
    files = [f for f, _ in dataset_class.train_list + dataset_class.test_list]
    files.append(dataset_class.meta["filename"])
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        found = f"missing {', '.join(missing)}"
    else:
        found = f"all files present, but torchvision rejected them: {error}"
    if download:
        how = f"The download failed ({error}); without network, fetch {dataset_class.url} elsewhere"
    else:
        how = f"Set {group}.download=true to fetch it when online, or fetch {dataset_class.url}"
    return (f"{name} not found in {folder} ({found}). Expected the folder {folder} holding "
            f"{', '.join(files)}: the python version of the dataset. {how} and unpack it into {root}.")


def imagenet(name: str, root: Path, download: bool, augment: bool, image_size: int = 224) -> ImageDatasets:
    """ImageNet from class folders: root/train/<class>/*.JPEG and root/val/<class>/*, same classes in both."""
    if download:
        raise UserError("ImageNet cannot be downloaded here (its licence needs an account at "
                         "image-net.org). Set dataset.download=false and place the train/ and val/ class "
                         f"folders under {root}.")
    normalize = transforms.Normalize(*IMAGENET_MEAN_STD)
    test_transform = transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size),
        transforms.ToTensor(), normalize,
    ])
    train_transform = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize,
    ]) if augment else test_transform
    splits = {}
    for split, transform in (("train", train_transform), ("val", test_transform)):
        try:
            splits[split] = torchvision.datasets.ImageFolder(root / split, transform=transform)
        except FileNotFoundError as error:  # no such folder, no class folders, or no images in them
            raise DatasetNotFoundError(
                f"ImageNet split {split!r} not found in {root / split} ({error}). Expected "
                f"{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG, one folder per class "
                f"(e.g. n01440764) with the same class folders in both; the official val images come "
                f"flat and must first be sorted into class folders. ImageNet is not downloaded "
                f"automatically: get it from https://image-net.org."
            ) from error
    train, test = splits["train"], splits["val"]
    check_same_classes("ImageNet", train, test, root, "val")
    unaugmented = torchvision.datasets.ImageFolder(root / "train", transform=test_transform)
    return ImageDatasets(train, test, len(train.classes), (3, image_size, image_size), unaugmented)


def synthetic(name: str, root: Path, download: bool, augment: bool, num_classes: int = 10,
              train_size: int = 4096, test_size: int = 1024, image_size: int = 32, noise_std: float = 2.0,
              seed: int = 0) -> ImageDatasets:
    """CIFAR-shaped images whose class is a smooth random colour pattern under noise (experiments/data/
    synthetic.py); `root`, `download` and `augment` have no effect."""
    generator = torch.Generator().manual_seed(seed)
    templates = smooth_patterns(num_classes, image_size, generator)
    train_labels, test_labels = (torch.randint(num_classes, (size,), generator=generator)
                                 for size in (train_size, test_size))
    return ImageDatasets(TemplateImages(templates, train_labels, noise_std, (seed, 0)),
                         TemplateImages(templates, test_labels, noise_std, (seed, 1)),
                         num_classes, (3, image_size, image_size))


BUILDERS = {"cifar10": cifar, "cifar100": cifar, "imagenet": imagenet, "synthetic": synthetic}
IMAGE_DATASET_NAMES = tuple(BUILDERS)
