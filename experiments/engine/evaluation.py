"""Measurements of the model the engine trains: evaluation on every split, and flatness.

Evaluation: every process evaluates its own slice of each split; statistics are summed over all
processes' items and divided by the summed counts (works alike under ddp and fsdp). Under fsdp every
forward pass is collective (it gathers the weights), so a process whose slice has fewer batches than
another's repeats a pass on its last batch, uncounted, until all have run the same number.

Flatness (the top Hessian eigenvalue; optionally the Hessian trace, the k-th eigenvalue and |λ_1/λ_k|,
ε-sharpness and the mean loss increase on a sphere of radius ρ) needs Hessian-vector products of
the full model: under fsdp the full weights are gathered into an unsharded copy on the main process,
which measures alone (under ddp the main process's own model already is that copy).
"""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import cmopt
from experiments.engine import data, distributed
from experiments.engine.distributed import Placement
from experiments.engine.strategy import Strategy
from experiments.engine.task import Task, move_to


class Measurements:
    def __init__(self, task: Task, trainer_cfg: DictConfig, placement: Placement, strategy: Strategy,
                 seed: int, unsharded: nn.Module | None):
        self.task, self.t, self.placement, self.strategy, self.seed = task, trainer_cfg, placement, strategy, seed
        self.eval_batch_size = trainer_cfg.eval_batch_size or trainer_cfg.batch_size  # global, like batch_size
        self.flatness_batch = (data.fixed_batch(task.stages[0], trainer_cfg.flatness_batch_size, task.collate_fn)
                               if trainer_cfg.flatness_interval or trainer_cfg.flatness_at_end else None)
        # fsdp: an unsharded copy for flatness, filled with the gathered weights when measuring (main only).
        self.unsharded = unsharded

    def forward(self, model: nn.Module, batch, state=None) -> tuple:
        """(loss, count, stats, next carried state or None): Task.forward with the state when it carries one."""
        if self.task.initial_state is None:
            return (*self.task.forward(model, batch), None)
        return self.task.forward(model, batch, self.task.initial_state(batch) if state is None else state)

    def autocast(self):
        bf16 = self.t.precision == "bf16" and self.placement.device.type == "cuda"  # the CPU runs fp32
        return torch.autocast(self.placement.device.type, dtype=torch.bfloat16, enabled=bf16)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Every eval split: statistics summed over all processes' items, divided by the summed counts."""
        model.eval()
        metrics = {}
        device = self.placement.device
        for split, dataset in self.task.eval_data.items():
            sums = {"loss": torch.zeros((), dtype=torch.float64, device=device),
                    "count": torch.zeros((), dtype=torch.float64, device=device)}
            loader = data.eval_loader(dataset, batch_size=self.eval_batch_size, num_workers=self.t.num_workers,
                                      collate_fn=self.task.collate_fn, placement=self.placement)
            state, passes, batch = None, 0, None  # every split starts from Task.initial_state
            for batch in loader:
                with self.autocast():
                    loss, count, stats, state = self.forward(model, move_to(batch, device), state)
                sums["loss"] += loss.double() * count
                sums["count"] += count
                for name, value in stats.items():
                    sums[name] = sums.get(name, 0) + value.double()
                passes += 1
            if self.strategy.shards_parameters:
                self._pass_with_the_others(model, dataset, batch, passes)
            split_metrics = self.per_item(distributed.sum_across_processes(sums, self.placement))
            metrics.update({f"{split}_{k}": v for k, v in split_metrics.items()})
        model.train()
        return metrics

    def _pass_with_the_others(self, model: nn.Module, dataset, last_batch, passes: int) -> None:
        """Uncounted passes until this process has run as many as the process with the largest slice."""
        missing = data.eval_passes(dataset, self.eval_batch_size, self.placement) - passes
        if missing > 0:
            batch = last_batch if last_batch is not None else data.fixed_batch(dataset, 1, self.task.collate_fn)
            for _ in range(missing):
                with self.autocast():
                    self.forward(model, move_to(batch, self.placement.device))

    def per_item(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        count = float(sums.pop("count"))
        metrics = {name: float(value) / count for name, value in sums.items()}
        if self.task.derive is not None:
            metrics.update(self.task.derive(metrics))
        return metrics

    def flatness(self, model: nn.Module) -> dict[str, float]:
        """Top Hessian eigenvalue (and trace, if asked) of the training loss on a fixed batch, in eval mode,
        on the main process (every process calls it: under fsdp gathering the weights is collective)."""
        if self.strategy.shards_parameters:
            weights = self.strategy.full_state_dict(model)  # collective: every process gathers, main keeps
            if not self.placement.is_main:
                return {}
            self.unsharded.load_state_dict(weights)
            model = self.unsharded
        elif not self.placement.is_main:
            return {}
        batch = move_to(self.flatness_batch, self.placement.device)

        def loss_fn(m, b):
            return self.forward(m, b)[0].float()  # a carried state starts from Task.initial_state

        model.eval()
        # cuDNN's RNN kernels and the fused attention kernels have no double backward, which Hessian-vector
        # products need; the math attention kernel (plain matmuls and softmax) has.
        with torch.backends.cudnn.flags(enabled=False), sdpa_kernel(SDPBackend.MATH):
            metrics = {"top_hessian_eigenvalue": cmopt.top_hessian_eigenvalue(
                model, loss_fn, batch, max_iter=self.t.flatness_max_iter, seed=self.seed)}
            if self.t.hessian_trace_samples:
                metrics["hessian_trace"] = cmopt.hessian_trace(
                    model, loss_fn, batch, n_samples=self.t.hessian_trace_samples, seed=self.seed)
            metrics.update(self._more_flatness(model, loss_fn, batch))
        model.train()
        return metrics


    def _more_flatness(self, model: nn.Module, loss_fn, batch) -> dict[str, float]:
        """With trainer.hessian_top_k >= 2: the k-th Hessian eigenvalue of largest magnitude (Lanczos, at most
        flatness_max_iter products) and |λ_1 / λ_k|, the reviewers' ratio; with trainer.sharpness_rho: the
        ε-sharpness (the largest loss increase found within the ball, sharpness_ascent_steps ascent steps)
        and the mean loss increase over sharpness_samples antithetic pairs on the sphere of that radius."""
        metrics = {}
        k = self.t.hessian_top_k
        if k >= 2:
            values = cmopt.top_hessian_eigenvalues(model, loss_fn, batch, k=k,
                                                   max_iter=max(k, self.t.flatness_max_iter), seed=self.seed)
            metrics["hessian_eigenvalue_k"] = values[-1]
            metrics["hessian_eigenvalue_ratio"] = abs(values[0] / values[-1]) if values[-1] else None
        rho = self.t.sharpness_rho
        if rho is not None:
            metrics["epsilon_sharpness"] = cmopt.epsilon_sharpness(
                model, loss_fn, batch, rho=rho, ascent_steps=self.t.sharpness_ascent_steps, seed=self.seed)
            metrics["average_sharpness"] = cmopt.average_sharpness(
                model, loss_fn, batch, rho=rho, n_samples=self.t.sharpness_samples, seed=self.seed)
        return metrics


def unsharded_copy(model: nn.Module, strategy: Strategy, trainer_cfg: DictConfig, is_main: bool) -> nn.Module | None:
    """Under fsdp, with flatness measured: a copy of the model (before sharding) for the main process."""
    if not strategy.shards_parameters or not is_main or not (trainer_cfg.flatness_interval or trainer_cfg.flatness_at_end):
        return None
    return copy.deepcopy(model)

