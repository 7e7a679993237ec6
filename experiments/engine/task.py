"""What a runner hands the engine: a model, its data, and how to turn a batch into a loss and statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

# forward(model, batch) -> (mean loss, number of items it averages over, {statistic: sum over the batch});
# with a carried state (Task.initial_state): forward(model, batch, state) -> (the same three, the next state).
Forward = Callable[..., tuple]


@runtime_checkable
class BatchStream(Protocol):
    """Data that forms and orders its own batches (e.g. a text stream cut into contiguous columns).

    `batches(batch_size, rank, world_size)` is this process's part of each global batch of `batch_size`
    items, in training order: element k is the k-th step's batch. Used as a training stage it replaces
    shuffling and the sampler; as an evaluation split, each process evaluates its own part.
    """

    def batches(self, batch_size: int, rank: int, world_size: int) -> Sequence[Any]: ...


@dataclass
class Task:
    """One training problem, independent of images, text or continual learning.

    `train_data` is one Dataset (or BatchStream), or a sequence of them trained one after another
    (continual learning's tasks; each is a *stage* trained for `trainer.epochs` epochs and followed by
    an evaluation). Every split in `eval_data` is evaluated with `forward`; a metric is the sum of a
    statistic over the split divided by the summed counts, e.g. stat "acc" = number correct gives
    accuracy, and `derive` adds metrics computed from those (perplexity = exp(loss)). `summarize`
    turns all metrics.jsonl lines into extra summary.json entries (continual learning's accuracy matrix).

    `initial_state(batch)`, when given, makes the state carried from batch to batch (an LSTM's hidden
    state): the engine starts it from `initial_state` at every epoch and every evaluation, passes it to
    `forward` and keeps what `forward` returns (detached) for the next batch, and saves it in checkpoints.

    `select` = (metric, "min" or "max"): the evaluation metric (e.g. "val_ppl") that picks the best
    checkpoint; summary.json then reports every metric at that evaluation (and `final_*` at the end),
    and the best model is kept in the run folder. `items` names what `count` counts (tokens, images).
    `summarize(evaluations, train_totals)` gets every evaluation line logged and the exact sums over
    all training steps and processes of each training statistic (and "count", "loss").

    `shard_units`: the blocks that trainer.strategy=fsdp shards one by one (a ResNet's stages, an LSTM's
    layers, a transformer's blocks), before the root; the model builder says which.
    """

    model: nn.Module
    train_data: Dataset | BatchStream | Sequence[Dataset | BatchStream]
    eval_data: dict[str, Dataset | BatchStream]
    forward: Forward
    derive: Callable[[dict[str, float]], dict[str, float]] | None = None
    collate_fn: Callable[[list], Any] | None = None
    summarize: Callable[[list[dict[str, Any]], dict[str, float]], dict[str, Any]] | None = None
    initial_state: Callable[[Any], Any] | None = None
    select: tuple[str, str] | None = None
    items: str = "items"
    shard_units: Sequence[nn.Module] = ()

    @property
    def stages(self) -> list[Dataset | BatchStream]:
        return list(self.train_data) if isinstance(self.train_data, (list, tuple)) else [self.train_data]


def move_to(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor in it (nested in tuples, lists, dicts) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch


def detach(state: Any) -> Any:
    """The carried state cut from the graph of the batch that produced it (truncated backpropagation)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (list, tuple)):
        return type(state)(detach(s) for s in state)
    if isinstance(state, dict):
        return {k: detach(v) for k, v in state.items()}
    return state
