"""Batches and their augmentation depend only on (seed, stage, epoch, item): not on workers, resumption or world size."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from experiments.engine.data import train_loader
from experiments.engine.distributed import Placement

CPU = torch.device("cpu")


class RandomlyAugmented(Dataset):
    """Item i is (i + a random draw, i): the draw stands in for a random crop or flip."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int):
        return index + torch.rand(()), index


def batches(*, num_workers=0, skip=0, epoch=0, rank=0, world_size=1, batch_size=4, shuffle=True):
    loader = train_loader(RandomlyAugmented(), batch_size=batch_size, seed=3, stage=0, epoch=epoch, skip_batches=skip,
                          shuffle=shuffle, num_workers=num_workers, collate_fn=None,
                          placement=Placement(CPU, rank, world_size))
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_augmentation_is_the_same_with_worker_processes_and_after_skipping_batches():
    full = batches()
    assert len(full) == 5
    assert same(batches(num_workers=2), full)
    assert same(batches(skip=2), full[2:])  # a run resumed after two batches sees the rest unchanged
    assert not same(batches(epoch=1), full)  # another epoch: another order and other draws


def test_loading_in_the_main_process_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    batches()
    assert torch.equal(torch.get_rng_state(), before)


def test_each_epoch_is_the_permutation_drawn_from_seed_plus_epoch_split_over_processes():
    epoch, seed = 2, 3
    permutation = torch.randperm(20, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    single = batches(epoch=epoch, batch_size=4)
    assert [y.tolist() for _, y in single] == [permutation[i:i + 4] for i in range(0, 20, 4)]
    # Two processes with 2 items each: step k's items together are the single process's batch k.
    ranks = [batches(epoch=epoch, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    for k, (x, y) in enumerate(single):
        shards = [ranks[r][k] for r in (0, 1)]
        assert sorted(torch.cat([s[1] for s in shards]).tolist()) == sorted(y.tolist())
        by_item = {int(i): float(v) for s in shards for v, i in zip(*s)}
        assert by_item == {int(i): float(v) for v, i in zip(x, y)}  # the same augmentation on either side


def test_without_shuffling_the_order_is_the_dataset_order():
    assert [y.tolist() for _, y in batches(shuffle=False)] == [list(range(i, i + 4)) for i in range(0, 20, 4)]
