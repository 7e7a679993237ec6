"""Sharpness-aware minimization (Foret et al. 2021; ASAM, Kwon et al. 2021) around any base optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from cmopt import _sharding, _validation as check
from cmopt._norm import frozen_norm_statistics


class SAM(Optimizer):
    """SAM wrapping a base optimizer built on the same parameter groups.

    Two passes per step: `first_step` moves to p + e with e = ρ·g/||g|| (ASAM: e = ρ·p²·g/||p·g||,
    norms global over all tensors), `second_step` returns to p and steps the base optimizer with the
    gradient taken at p + e. `step(closure)` does both, calling the closure (forward + backward) for
    the second pass. For data-parallel models and BatchNorm use `sam_step`.

    The state dict is the base optimizer's (hyperparameters, moments, critical buffers), so a resumed
    run continues where it stopped; the groups also carry `rho` and `adaptive`.
    """

    def __init__(self, params, base_optimizer: Callable[..., Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **base_kwargs: Any):
        check.hyperparameters("SAM", dict(rho=rho))
        super().__init__(params, dict(rho=rho, adaptive=adaptive))
        self._perturbed: list[torch.Tensor] = []
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # the same dicts: one lr, one schedule
        self.defaults.update(self.base_optimizer.defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check.hyperparameters("SAM", param_group)
        if not hasattr(self, "base_optimizer"):  # still inside __init__
            return super().add_param_group(param_group)
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        self.base_optimizer.add_param_group(param_group)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """p <- p + e, remembering p; the gradient must already be computed at p."""
        self._perturbed = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not self._perturbed:
            return
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / norm
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "old_p" not in state:
                    state["old_p"] = torch.empty_like(p)
                state["old_p"].copy_(p)
                here = _sharding.local(p)  # a sharded tensor's perturbation is its shard's
                e = _sharding.local(p.grad) * scale.to(here.device, here.dtype)
                if group["adaptive"]:
                    e.mul_(here.square())
                here.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to p (restored exactly, not p + e - e) and step the base optimizer."""
        for p in self._perturbed:  # every perturbed tensor, even one the second pass left without a gradient
            p.copy_(self.state[p]["old_p"])
        self._perturbed = []
        self.base_optimizer.step()
        self._opt_called = True  # what LR schedulers check; sam_step never calls self.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):
        if closure is None:
            raise ValueError(
                "SAM.step needs a closure that recomputes the loss and calls backward() (SAM takes a "
                "second gradient at the perturbed weights). Pass step(closure), or call first_step() "
                "and second_step() around your own second forward/backward."
            )
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def _grad_norm(self) -> torch.Tensor:
        """Global L2 norm of g (ASAM: of |p|·g) over full tensors (also when sharded), on the device,
        accumulated in float64 and floored to stay finite for g = 0."""
        grads, values = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grads.append(p.grad)
                g = _sharding.local(p.grad)
                values.append(g * _sharding.local(p).abs() if group["adaptive"] else g)
        device, dtype = values[0].device, values[0].dtype
        norm = torch.stack([n.to(device) for n in _sharding.norms(grads, False, values)]).square().sum().sqrt()
        norm = norm.to(dtype)
        return norm.clamp(min=torch.finfo(norm.dtype).tiny)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict, passed through the hooks registered on SAM itself too."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = self.base_optimizer.state_dict()
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            state_dict = post_hook(self, state_dict) or state_dict
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = pre_hook(self, state_dict) or state_dict
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self):
        return {**super().__getstate__(), "base_optimizer": self.base_optimizer, "_perturbed": self._perturbed}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.param_groups = self.base_optimizer.param_groups  # one list of groups, shared again after a copy

    def __repr__(self) -> str:
        return f"SAM({self.base_optimizer!r})"


def sam_step(optimizer: SAM, model: nn.Module, compute_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One SAM step for a plain or DistributedDataParallel model; returns the first pass's loss.

    `compute_loss()` runs the forward pass and returns the loss (no backward). The first pass runs
    under `model.no_sync()`, so each process perturbs with its own gradient (as the SAM paper does);
    the second pass is all-reduced as usual. BatchNorm statistics are updated by the first pass only.
    Gradients are cleared before the first pass and after the second, so a step neither reads nor
    leaves behind a gradient: a loop of `sam_step` calls needs no `zero_grad()`.
    """
    optimizer.zero_grad()
    no_sync = model.no_sync if hasattr(model, "no_sync") else contextlib.nullcontext
    with no_sync():
        loss = compute_loss()
        loss.backward()
    optimizer.first_step(zero_grad=True)
    with frozen_norm_statistics(model):
        compute_loss().backward()
    optimizer.second_step(zero_grad=True)
    return loss.detach()
