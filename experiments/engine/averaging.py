"""`trainer.weight_averaging`: evaluate (and select) an average of the weights instead of the weights.

- `none`: the trained weights, as without this module.
- `ema`: an exponential moving average after every step, θ̄ ← decay·θ̄ + (1 − decay)·θ (the first step
  copies θ), of the parameters and buffers (BatchNorm statistics too), `trainer.ema_decay`.
- `swa`: stochastic weight averaging, the equal-weight mean of θ after every step once the run is past
  `trainer.swa_start` (a fraction of its steps). A model with BatchNorm has its statistics recomputed
  for the averaged weights before each evaluation (torch's update_bn: one forward pass over the whole
  training set of the stage being trained, on every process alike, under a forked RNG so that training's
  random streams are untouched). Before the first average, evaluations see the trained weights.

Both are torch.optim.swa_utils.AveragedModel (get_ema_multi_avg_fn / get_swa_multi_avg_fn): one more
copy of the weights (logged as `averaging_state_bytes`, beside `optimizer_state_bytes`). Evaluation and
best_model.pt (the selection) use the averaged weights; flatness is measured on the trained ones. The
averaged model is saved in the checkpoint with the model and optimizer and resumes exactly. It works with
every optimizer; under `trainer.strategy=fsdp` it is refused (the averaged copy is not sharded).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn, update_bn

from experiments.engine import data
from experiments.engine.distributed import Placement
from experiments.engine.evaluation import Measurements
from experiments.engine.task import move_to
from experiments.options import UserError

KINDS = ("none", "ema", "swa")


class Averaging:
    def __init__(self, model: nn.Module, trainer_cfg: DictConfig, total_steps: int, strategy_name: str,
                 measurements: Measurements):
        self.kind, self.t, self.measurements = trainer_cfg.weight_averaging, trainer_cfg, measurements
        self.averaged: AveragedModel | None = None
        if self.kind == "none":
            return
        if strategy_name != "ddp":
            raise UserError(f"trainer.weight_averaging={self.kind} keeps a whole copy of the weights on every "
                            f"process and runs with trainer.strategy=ddp only (now {strategy_name}); use "
                            "trainer.strategy=ddp or trainer.weight_averaging=none.")
        self.placement = measurements.placement
        if self.kind == "ema":
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(trainer_cfg.ema_decay),
                                          use_buffers=True)
            self.start = 0
        else:
            self.averaged = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn())
            self.start = int(trainer_cfg.swa_start * total_steps)  # averages after steps start+1 ... total
        self.has_norm_statistics = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    @property
    def module(self) -> nn.Module | None:
        """The averaged model once it holds an average (None before, and without averaging)."""
        if self.averaged is None or int(self.averaged.n_averaged) == 0:
            return None
        return self.averaged.module

    def after_step(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step` (counted from 1)."""
        if self.averaged is not None and step > self.start:
            self.averaged.update_parameters(model)

    def evaluated(self, model: nn.Module, train_data: Dataset) -> nn.Module:
        """The model an evaluation (and the selection) sees; SWA's BatchNorm statistics recomputed first."""
        averaged = self.module
        if averaged is None:
            return model
        if self.kind == "swa" and self.has_norm_statistics:
            self._recompute_norm_statistics(averaged, train_data)
        return averaged

    def state_bytes(self) -> dict[str, int]:
        """The averaged copy's bytes (parameters and buffers), for the train metrics."""
        if self.averaged is None:
            return {}
        tensors = [*self.averaged.module.parameters(), *self.averaged.module.buffers()]
        return {"averaging_state_bytes": sum(t.numel() * t.element_size() for t in tensors)}

    def _recompute_norm_statistics(self, averaged: nn.Module, train_data: Dataset) -> None:
        whole = Placement(self.placement.device)  # every process passes over the whole set: the same statistics
        loader = data.eval_loader(train_data, batch_size=self.measurements.eval_batch_size,
                                  num_workers=self.t.num_workers, collate_fn=self.measurements.task.collate_fn,
                                  placement=whole)
        forward = _TaskForward(averaged, self.measurements.forward, self.placement.device)
        devices = [self.placement.device] if self.placement.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            update_bn(((batch,) for batch in loader), forward)  # a 1-tuple: update_bn passes its first item


class _TaskForward(nn.Module):
    """What update_bn calls: the Task's own forward pass (batches of any structure, moved to the device)."""

    def __init__(self, module: nn.Module, forward: Callable, device: torch.device):
        super().__init__()
        self.module, self.task_forward, self.device = module, forward, device

    def forward(self, batch):
        return self.task_forward(self.module, move_to(batch, self.device))
