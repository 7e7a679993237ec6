"""torch.compile for the optimizer step: `compile_optimizer(opt)` and keep calling `opt.step()`.

The compiled step is the same algorithm as the eager one: the capturable path (every decision on
the device, no host read), traced as one graph without breaks. `opt.step` stays a bound method, so
closures, LR schedulers and SAM (`first_step`/`second_step`, `sam_step`) work unchanged.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import torch
from torch.optim import Optimizer

from cmopt import _sharding
from cmopt.critical import CriticalOptimizer


def compile_optimizer(optimizer: Optimizer, **compile_kwargs: Any) -> Optimizer:
    """Compile `optimizer`'s step in place and return it.

    Works for AdamCM, AdamCG, SGDCM, their SAM wrappers, and torch.optim optimizers. A critical-
    buffer optimizer is switched to `capturable=True` and multi-tensor kernels (its state, if any,
    is converted), and traced with `fullgraph=True`: a graph break is an error, not a slowdown.
    Learning rates changed by a scheduler do not recompile the step. `compile_kwargs` go to
    torch.compile (e.g. `mode="max-autotune-no-cudagraphs"`, `backend=...`).

    Call it once, after building the optimizer and loading any checkpoint, before building the LR
    scheduler; the first two steps compile (state creation, then the steady step).
    """
    target = getattr(optimizer, "base_optimizer", optimizer)  # SAM: its base optimizer takes the step
    if getattr(target, "_compiled", False):
        return optimizer
    if any(_sharding.is_sharded(p) for g in target.param_groups for p in g["params"]):
        raise ValueError(
            f"compile_optimizer: {type(target).__name__} holds sharded (DTensor) parameters, as FSDP2 makes them; "
            f"its compiled step is not supported there. Step it eagerly (do not call compile_optimizer)."
        )
    if isinstance(target, CriticalOptimizer):
        if not all(g["capturable"] and g["foreach"] for g in target.param_groups):
            saved = optimizer.state_dict()
            for group in target.param_groups:
                group.update(capturable=True, foreach=True)
            target.defaults.update(capturable=True, foreach=True)
            optimizer.load_state_dict(saved)  # the counters move onto the device (SAM: groups stay shared)
        compile_kwargs.setdefault("fullgraph", True)
    eager = target.step
    compiled = torch.compile(_own_frame(lambda: eager(), next(_step_numbers)), **compile_kwargs)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        compiled()
        return loss

    target.step = types.MethodType(step, target)
    target._compiled = True
    return optimizer


_step_numbers = itertools.count()  # names each compiled step's own code object


def _own_frame(function: types.FunctionType, number: int) -> types.FunctionType:
    """`function` with a code object of its own.

    torch.compile keeps its compiled graphs (and their guards) on the code object it traced. A lambda
    defined here has ONE code object for every optimizer, so a second optimizer's step would hit the
    first one's entry (whose guards, after a graph break in a torch optimizer, only check that
    `eager` is a method) and silently run eagerly, and each optimizer would use up the shared
    recompile limit. A copy of the code object per call gives every optimizer its own cache.
    """
    code = function.__code__.replace(co_name=f"compiled_step_{number}")
    return types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__, function.__closure__)
