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
