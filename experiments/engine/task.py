"""What a runner hands the engine: a model, its data, and how to turn a batch into a loss and statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

# forward(model, batch) -> (mean loss, number of items it averages over, {statistic: sum over the batch})
Forward = Callable[[nn.Module, Any], tuple[torch.Tensor, int | torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Task:
    """One training problem, independent of images, text or continual learning.

    `train_data` is one Dataset, or a sequence of them trained one after another (continual
    learning's tasks; each is a *stage* trained for `trainer.epochs` epochs and followed by an
    evaluation). Every Dataset in `eval_data` is evaluated with `forward`; a metric is the sum of
    a statistic over the split divided by the summed counts, e.g. stat "acc" = number correct gives
    accuracy, and `derive` adds metrics computed from those (perplexity = exp(loss)). `summarize`
    turns all metrics.jsonl lines into extra summary.json entries (continual learning's accuracy matrix).
    """

    model: nn.Module
    train_data: Dataset | Sequence[Dataset]
    eval_data: dict[str, Dataset]
    forward: Forward
    derive: Callable[[dict[str, float]], dict[str, float]] | None = None
    collate_fn: Callable[[list], Any] | None = None
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None

    @property
    def stages(self) -> list[Dataset]:
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
