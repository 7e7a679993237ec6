"""Loaders whose order and augmentation depend only on (seed, stage, epoch, item), so a run resumes mid-epoch.

A BatchStream (text cut into contiguous columns) orders its own batches instead: its batches are
taken in order, this process's columns of each.

Each epoch's order is the permutation DistributedSampler draws from seed + epoch (for every world
size, including one process), split across processes. Each item's augmentation draws from an RNG
seeded by (seed, stage, epoch, dataset index), so it is the same whichever worker loads it, whether
or not the run was resumed, and however many processes share the epoch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from experiments.engine.distributed import Placement
from experiments.engine.task import BatchStream


class SeededItems(Dataset):
    """`dataset[index]` loaded under RNGs (torch, numpy, random) seeded from (seed, stage, epoch, index).

    Keys are (index, item_seed) pairs; the caller's RNG states are restored afterwards, so loading in
    the main process (num_workers=0) leaves the training RNG untouched.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        """A batch's items (DataLoader calls this once per batch): RNG states saved once, not per item."""
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return [self._load(index, seed) for index, seed in keys]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)

    def _load(self, index: int, seed: int):
        torch.default_generator.manual_seed(seed)  # the CPU's only: torch.manual_seed also queues CUDA work
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


def item_seed(seed: int, stage: int, epoch: int, index: int) -> int:
    # Distinct for every (stage, epoch, index) in any realistic run; fits in 63 bits.
    return ((seed * 1_000_003 + stage * 10_007 + epoch) * 2**31 + index) & (2**63 - 1)


def epoch_order(size: int, *, seed: int, epoch: int, shuffle: bool, placement: Placement) -> list[int]:
    """This process's share of the epoch's permutation (padded by DistributedSampler to equal shares)."""
    sampler = DistributedSampler(range(size), num_replicas=placement.world_size, rank=placement.rank,
                                 shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def train_loader(dataset: Dataset | BatchStream, *, batch_size: int, seed: int, stage: int, epoch: int,
                 skip_batches: int, shuffle: bool, num_workers: int, collate_fn: Callable | None,
                 placement: Placement) -> Iterable:
    """This process's batches of one epoch (batch_size per process, last partial batch dropped),
    starting after the first `skip_batches` of them."""
    if isinstance(dataset, BatchStream):
        return dataset.batches(batch_size * placement.world_size, placement.rank, placement.world_size)[skip_batches:]
    order = epoch_order(len(dataset), seed=seed, epoch=epoch, shuffle=shuffle, placement=placement)
    order = order[: len(order) // batch_size * batch_size][skip_batches * batch_size:]
    keys = [(i, item_seed(seed, stage, epoch, i)) for i in order]
    return _loader(SeededItems(dataset), keys, batch_size, num_workers, collate_fn, seed)


def eval_loader(dataset: Dataset | BatchStream, *, batch_size: int, num_workers: int,
                collate_fn: Callable | None, placement: Placement) -> Iterable:
    """This process's slice of the split: every item exactly once over all processes, no padding.

    `batch_size` is the global one: a BatchStream splits it over the processes, a Dataset's slice is
    loaded in batches of its share."""
    if isinstance(dataset, BatchStream):
        return dataset.batches(batch_size, placement.rank, placement.world_size)
    batch_size = max(1, batch_size // placement.world_size)
    keys = [(i, item_seed(0, 0, 0, i)) for i in range(placement.rank, len(dataset), placement.world_size)]
    return _loader(SeededItems(dataset), keys, batch_size, num_workers, collate_fn, seed=0)


def eval_passes(dataset: Dataset | BatchStream, batch_size: int, placement: Placement) -> int:
    """The most batches any process's eval_loader yields (the first processes hold one item more)."""
    if isinstance(dataset, BatchStream):
        return max(len(dataset.batches(batch_size, rank, placement.world_size))
                   for rank in range(placement.world_size))
    per_process = -(-len(dataset) // placement.world_size)
    return -(-per_process // max(1, batch_size // placement.world_size))


def batches_per_epoch(dataset: Dataset | BatchStream, batch_size: int, placement: Placement) -> int:
    if isinstance(dataset, BatchStream):
        return len(dataset.batches(batch_size * placement.world_size, placement.rank, placement.world_size))
    per_process = -(-len(dataset) // placement.world_size)
    return per_process // batch_size


def fixed_batch(dataset: Dataset | BatchStream, size: int, collate_fn: Callable | None):
    """The first `size` items under fixed seeds: the same batch at every measurement (flatness).

    For a BatchStream: its first batch of `size` (the first window of `size` columns)."""
    if isinstance(dataset, BatchStream):
        return dataset.batches(size, 0, 1)[0]
    keys = [(i, item_seed(0, 0, 0, i)) for i in range(min(size, len(dataset)))]
    samples = SeededItems(dataset).__getitems__(keys)
    return (collate_fn or torch.utils.data.default_collate)(samples)


def _loader(dataset: SeededItems, keys: list, batch_size: int, num_workers: int, collate_fn, seed: int):
    # The loader's own generator: creating it must not draw from the global RNG that dropout uses.
    return DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers,
                      collate_fn=collate_fn, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False, pin_memory=torch.cuda.is_available())
