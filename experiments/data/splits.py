"""Validation hold-outs shared by the data builders: seeded, class-balanced, drawn from the training set."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


def labels_of(dataset: Dataset) -> np.ndarray:
    """Every item's label without loading images (torchvision keeps them as targets or labels)."""
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = dataset.labels
    return np.asarray(labels, dtype=np.int64)


def balanced_holdout(labels: np.ndarray, fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: floor(fraction * n_c + 1/2) drawn at random from each class c; sorted."""
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        held.append(rng.permutation(members)[:int(fraction * len(members) + 0.5)])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def balanced_holdout_of_size(labels: np.ndarray, size: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: exactly `size` held out, drawn at random within each class.

    Class c's share is size * n_c / n: each class gets its share rounded down, and the items left over
    go one each to the classes with the largest remainders (the lower class first on ties).
    """
    classes, counts = np.unique(labels, return_counts=True)
    shares = size * counts / len(labels)
    quota = np.floor(shares).astype(np.int64)
    by_remainder = sorted(range(len(classes)), key=lambda i: (-(shares[i] - quota[i]), classes[i]))
    quota[by_remainder[:size - int(quota.sum())]] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, quota)]
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out
