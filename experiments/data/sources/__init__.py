"""Readers of each source's files, one module per source: where its files lie, how they are read, and the
message that names the expected layout when they are not there. A reader gives (train, test) datasets of
(normalised 3 x size x size float, label in 0..classes-1); the benchmarks in experiments/data/continual/
decide which tasks, classes and hold-outs are made of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from experiments.data.images import CIFAR_MEAN_STD, IMAGENET_MEAN_STD

# Per-channel mean and std of each training set as widely quoted. notMNIST has no such figures: its
# [0, 1] pixels are mapped to [-1, 1]. A folder of the user's own images is normalised as ImageNet is.
MEAN_STD = {
    "cifar10": CIFAR_MEAN_STD["cifar10"],
    "mnist": ((0.1307,), (0.3081,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "notmnist": ((0.5,), (0.5,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "image_folder": IMAGENET_MEAN_STD,
}


class LabelledImages(Dataset):
    """Items (transform(image), label), `load(index)` giving the PIL image; `labels` known up front."""

    def __init__(self, load: Callable[[int], Image.Image], labels: Sequence[int], transform: Callable):
        self.load, self.labels, self.transform = load, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(index)), int(self.labels[index])


def to_tensor(name: str, size: int) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised 3 x size x size: grayscale repeated to 3 channels, 28x28 padded to 32x32."""
    mean, std = MEAN_STD[name]
    grayscale = len(mean) == 1
    steps = [transforms.Pad((size - 28) // 2)] if grayscale and size > 28 else []
    steps += [transforms.Grayscale(3)] if grayscale else []
    steps += [transforms.ToTensor(), transforms.Normalize(mean * 3 if grayscale else mean,
                                                          std * 3 if grayscale else std)]
    return transforms.Compose(steps)


def open_rgb(path, size: int) -> Image.Image:
    """The image at `path` in RGB (some sources hold grayscale files), resized to size x size if it is not."""
    with Image.open(path) as image:
        return fit(image.convert("RGB"), size)


def fit(image: Image.Image, size: int) -> Image.Image:
    return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)
