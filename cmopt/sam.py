"""Sharpness-aware minimization (Foret et al. 2021; ASAM, Kwon et al. 2021) around any base optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
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
        for p in self._perturbed:
            state = self.state[p]
            if "old_p" not in state:
                state["old_p"] = torch.empty_like(p)
            state["old_p"].copy_(p)
        self.perturb()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def perturb(self, at: Mapping[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """w <- w + e, with e = ρ·g/||g|| (ASAM: ρ·w²·g/||w·g||) from each group's (w, g), norms global.

        By default (w, g) is (p, p.grad) for every parameter with a gradient: `first_step` without
        remembering p. `at` maps a parameter p to the tensor w that stands in its place and the gradient g
        to take (under FSDP2, `sam_step` passes each process's unsharded copy of p and its own gradient);
        parameters it does not map are left alone."""
        groups = []
        for group in self.param_groups:
            pairs = [(p, p.grad) for p in group["params"] if p.grad is not None] if at is None \
                else [at[p] for p in group["params"] if p in at]
            groups.append((group, pairs))
        if not any(pairs for _, pairs in groups):
            return
        norm = self._grad_norm(groups)
        for group, pairs in groups:
            scale = group["rho"] / norm
            for w, g in pairs:
                here = _sharding.local(w)  # a sharded tensor's perturbation is its shard's
                e = _sharding.local(g) * scale.to(here.device, here.dtype)
                if group["adaptive"]:
                    e.mul_(here.square())
                here.add_(e)

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

    def _grad_norm(self, groups: list[tuple[dict, list[tuple[torch.Tensor, torch.Tensor]]]]) -> torch.Tensor:
        """Global L2 norm of g (ASAM: of |w|·g) over every group's full tensors (also when sharded), on
        the device, accumulated in float64 and floored to stay finite for g = 0."""
        grads, values = [], []
        for group, pairs in groups:
            for w, g in pairs:
                grads.append(g)
                here = _sharding.local(g)
                values.append(here * _sharding.local(w).abs() if group["adaptive"] else here)
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
    """One SAM step for a plain, DistributedDataParallel or FSDP2 (`fully_shard`) model; returns the first
    pass's loss.

    `compute_loss()` runs the forward pass and returns the loss (no backward). The first pass runs
    under `model.no_sync()`, so each process perturbs with its own gradient (as the SAM paper does);
    the second pass is all-reduced as usual. An FSDP2 model does the same (`_fsdp_sam_step`): each
    process perturbs its own full copy of the weights with its own gradient, and the sharded
    parameters stay at p. BatchNorm statistics are updated by the first pass only.
    Gradients are cleared before the first pass and after the second, so a step neither reads nor
    leaves behind a gradient: a loop of `sam_step` calls needs no `zero_grad()`.
    """
    if _fsdp_modules(model):
        return _fsdp_sam_step(optimizer, model, compute_loss)
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


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 modules of `model` (root first), or [] when it is not sharded with `fully_shard`."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)] if isinstance(model, FSDPModule) else []


def _fsdp_sam_step(optimizer: SAM, model: nn.Module, compute_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
    """SAM on an FSDP2 model as under DDP: both passes run at full weights each process holds unsharded.

    FSDP2's no_sync is `set_requires_gradient_sync(False)`; with resharding after forward and backward
    off, the all-gathered weights stay registered on the modules through both passes. The first pass's
    gradient is taken with autograd.grad (nothing lands in .grad, so nothing is reduce-scattered or
    accumulated into the second pass, also under a mixed-precision policy); `optimizer.perturb` moves
    the unsharded copies by this process's own e; the second pass reduce-scatters into the sharded
    gradients; resharding drops the perturbed copies, so the sharded parameters, which the base optimizer
    steps, never left p. While it runs each process holds the full weights and its full local gradient,
    as under DDP. The model is left with fully_shard's defaults (the root keeps its weights gathered
    after forward, every other module reshards; all reshard after backward and reduce their gradients).
    """
    modules = _fsdp_modules(model)
    for module in modules:
        module.reshard()  # the registered parameters are the sharded ones the optimizer holds
    sharded = dict(model.named_parameters())
    optimizer.zero_grad()
    try:
        for module in modules:
            module.set_reshard_after_forward(False, recurse=False)
        model.set_reshard_after_backward(False)
        model.set_requires_gradient_sync(False)
        loss = compute_loss()
        unsharded = dict(model.named_parameters())  # every module's all-gathered weights (this process's p)
        names = [n for n, p in sharded.items() if p.requires_grad and n in unsharded]
        grads = torch.autograd.grad(loss, [unsharded[n] for n in names], allow_unused=True)
        optimizer.perturb({sharded[n]: (unsharded[n], g) for n, g in zip(names, grads) if g is not None})
        del grads
        model.set_requires_gradient_sync(True)
        with frozen_norm_statistics(model):
            compute_loss().backward()  # at this process's p + e; reduce-scattered into the shards' gradients
    finally:
        model.set_requires_gradient_sync(True)
        model.set_reshard_after_backward(True)
        for module in modules:
            module.set_reshard_after_forward(module is not model, recurse=False)
            module.reshard()  # drops the perturbed unsharded copies
    optimizer.second_step(zero_grad=True)  # nothing to restore: the sharded parameters are still p
    return loss.detach()
