"""How far the weights move, in the train metrics of every log line (every optimizer, SAM included):

- `update_size`: ||θ_t − θ_{t−1}|| of the logged step t itself. The weights are copied just before
  that one step (the Trainer knows which steps log), so other steps pay nothing.
- `update_size_per_lr`: the same divided by that step's lr: the effective step size the optimizer
  takes per unit of lr (plain SGD: the gradient norm; Adam's first step: √(number of weights)).
- `distance_travelled`: ||θ_t − θ_0|| from the initial weights, of which one copy is kept on the
  device for the whole run (taken before any resumption: the engine builds the same initial weights
  from the seed, so a resumed run measures from the same θ_0 and needs nothing in the checkpoint).

Norms over all parameters, accumulated in float64 (cmopt.squared_distance, which scripts/update_size.py
uses too); under fsdp each process holds a shard and the squares are summed over the processes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import cmopt
from experiments.engine.strategy import Strategy


class Movement:
    def __init__(self, model: nn.Module, strategy: Strategy):
        self.model, self.strategy = model, strategy
        self.initial = cmopt.weights_copy(model.parameters())
        self.before: list[torch.Tensor] | None = None  # the weights before a step that logs

    def before_step(self, logs: bool) -> None:
        """Called before every step: copies the weights only when the step ends at a log line."""
        self.before = cmopt.weights_copy(self.model.parameters()) if logs else None

    def metrics(self, lr: float) -> dict[str, float | None]:
        """At a log line, on every process (collective under fsdp): the step's update size and the distance."""
        params = list(self.model.parameters())
        squares = {"distance": cmopt.squared_distance(params, self.initial)}
        if self.before is not None:
            squares["update"] = cmopt.squared_distance(params, self.before)
            self.before = None
        squares = self.strategy.sum_over_shards(squares)
        metrics: dict[str, float | None] = {}
        if "update" in squares:
            update = math.sqrt(float(squares["update"]))
            metrics.update(update_size=update, update_size_per_lr=update / lr if lr > 0 else None)
        metrics["distance_travelled"] = math.sqrt(float(squares["distance"]))
        return metrics
