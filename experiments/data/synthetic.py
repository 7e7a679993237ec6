"""Synthetic images with a learnable signal, shared by the image and the online-learning runners.

    generator = torch.Generator().manual_seed(seed)
    templates = smooth_patterns(10, 32, generator)            # one 3x32x32 pattern per class
    data = TemplateImages(templates, labels, noise_std=2.0, seed=(seed, 0))
    image, label = data[i]                                    # templates[labels[i]] + noise, the same every time
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def smooth_patterns(count: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random colour patterns of 3 x image_size x image_size, upsampled from 4x4 so that
    convolutions with pooling see them."""
    coarse = torch.randn(count, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear",
                                           align_corners=False)


class TemplateImages(Dataset):
    """Item i: the template of its label plus Gaussian noise drawn from (seed, i), the same every time."""

    def __init__(self, templates: torch.Tensor, labels: torch.Tensor, noise_std: float, seed: tuple[int, ...]):
        self.templates, self.labels, self.noise_std, self.seed = templates, labels, noise_std, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index])
        rng = np.random.default_rng([*self.seed, index])
        noise = torch.from_numpy(rng.standard_normal(self.templates.shape[1:], dtype=np.float32))
        return self.templates[label] + self.noise_std * noise, label
