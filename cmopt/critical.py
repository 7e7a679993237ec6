"""The optimizer base class of Adam+CM, Adam+CG and SGD+CM: validation, lazy state, one critical
buffer per parameter group (cmopt.buffer), and a state dict that keeps all of it.

A step, per group: the candidate's priority s = Σ_i ||g_i||; the subclass's `_update` moves the
parameters, reading mean(B) through `plus_mean` before the insertion, and hands back the tensors to
store (momenta or gradients); the buffer admits the candidate, stores it and decays its priorities.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from cmopt import _validation as check
from cmopt._ops import Ops
from cmopt.buffer import CriticalBuffer, DeviceBuffer, HostBuffer

IMPLEMENTATION_CHOICES = ("foreach", "capturable", "buffer_dtype")


def _step_dtype(param: torch.Tensor) -> torch.dtype:
    return torch.promote_types(param.dtype, torch.float32)


def _priority_dtype(params: Iterable[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


class CriticalOptimizer(Optimizer):
    """Base class. `critical_buffers[i]` is the buffer of `param_groups[i]`: None until the group's
    first step with a gradient, and always None with capacity 0 (then the optimizer is its base one)."""

    buffer_key = "critical_momenta"  # what the buffer stores, as state dicts of version 0.1.0 named it

    def __init__(self, params, defaults: dict[str, Any]):
        check.hyperparameters(type(self).__name__, defaults)
        self.critical_buffers: list[CriticalBuffer | None] = []
        super().__init__(params, defaults)

    def __getstate__(self):
        return {**super().__getstate__(), "critical_buffers": self.critical_buffers}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("critical_buffers", [None] * len(self.param_groups))
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("buffer_dtype", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check.hyperparameters(type(self).__name__, param_group)
        super().add_param_group(param_group)
        self.critical_buffers.append(None)

    # ---- what a subclass provides -------------------------------------------------------------

    def _init_tensor_state(self, group: dict, param: torch.Tensor, state: dict) -> None:
        """Create the subclass's own per-tensor state (moments, momentum buffer)."""
        raise NotImplementedError

    def _update(self, group, ops: Ops, params, grads, states, *, first: bool, plus_mean) -> list[torch.Tensor]:
        """Update `params` in place and return the candidates to store in the buffer, one per tensor.

        `first`: these tensors have no state before this step. `plus_mean(xs)`: x + mean(B) for each
        of them, B as held before this step's insertion; None when the group has no buffer (C = 0).
        """
        raise NotImplementedError

    # ---- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group)
        return loss

    def _step_group(self, index: int, group: dict) -> None:
        params, grads, states, positions, fresh = self._collect(group)
        if not params:
            return
        buffer = self._buffer(index, group, params, positions)
        # As torch does: multi-tensor kernels on accelerators; on the CPU the per-tensor loop is faster.
        foreach = group["foreach"] if group["foreach"] is not None else params[0].device.type != "cpu"
        ops = Ops(foreach)
        priority = decision = None
        if buffer is not None:
            priority = buffer.priority(grads, foreach)

        def plus_mean(at):
            return None if buffer is None else (lambda xs: buffer.add_mean(ops, xs, at))

        if not foreach:
            # Tensor by tensor: each tensor's temporaries are small and reused, and its data stays in cache.
            if buffer is not None:
                decision = buffer.admit(priority)
            for i in range(len(params)):
                one = slice(i, i + 1)
                candidates = self._update(group, ops, params[one], grads[one], states[one], first=fresh[i],
                                          plus_mean=plus_mean(positions[one]))
                if buffer is not None:
                    buffer.store(ops, decision, positions[one], candidates)
        else:
            ordered, candidates = [], []
            for first in (True, False):
                idx = [i for i, f in enumerate(fresh) if f is first]
                if idx:
                    at = [positions[i] for i in idx]
                    ordered += at
                    candidates += self._update(
                        group, ops, [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                        first=first, plus_mean=plus_mean(at),
                    )
            if buffer is not None:
                decision = buffer.admit(priority)  # after the updates are queued: a host read here stalls less
                buffer.store(ops, decision, ordered, candidates)
        if buffer is not None:
            buffer.commit(priority, decision, group["decay"])

    def _collect(self, group: dict):
        params, grads, states, positions, fresh = [], [], [], [], []
        for position, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check.dense(type(self).__name__, position, p.grad)
            state = self.state[p]
            is_new = len(state) == 0
            if is_new:
                state["step"] = self._counter(0, group["capturable"], p)
                self._init_tensor_state(group, p, state)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
            positions.append(position)
            fresh.append(is_new)
        return params, grads, states, positions, fresh

    def _buffer(self, index: int, group: dict, params: list, positions: list) -> CriticalBuffer | None:
        """The group's buffer, made on its first step; every tensor with a gradient gets its rows."""
        if group["capacity"] == 0:
            return None
        buffer = self.critical_buffers[index]
        if buffer is None:
            buffer = self.critical_buffers[index] = self._new_buffer(group)
        for position, p in zip(positions, params):
            buffer.track(position, p)
        return buffer

    @staticmethod
    def _new_buffer(group: dict) -> CriticalBuffer:
        kind = DeviceBuffer if group["capturable"] else HostBuffer
        return kind(group["capacity"], _priority_dtype(group["params"]), group["params"][0].device,
                    group["buffer_dtype"])

    @staticmethod
    def _counter(value, capturable: bool, param: torch.Tensor):
        """A tensor's step count as the path needs it: a device tensor when capturable, else a Python int."""
        if capturable:
            return torch.as_tensor(value, dtype=_step_dtype(param)).to(param.device).clone()
        return int(value.item()) if isinstance(value, torch.Tensor) else int(value)

    @staticmethod
    def _advance(states: list[dict], capturable: bool) -> list:
        """t <- t + 1 for each tensor; returns the new step counts."""
        if capturable:
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            return steps
        for s in states:
            s["step"] += 1
        return [s["step"] for s in states]

    # ---- persistence ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        saved["critical_buffers"] = [None if b is None else b.state_dict() for b in self.critical_buffers]
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        for i, (group, saved) in enumerate(zip(self.param_groups, state_dict["param_groups"])):
            if "capacity" not in saved:
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} of the state dict has no 'capacity', so it "
                    f"was not saved by a critical-buffer optimizer. Load it into the optimizer that saved it."
                )
            if saved["capacity"] != group["capacity"]:
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} was saved with capacity={saved['capacity']} "
                    f"but this optimizer has capacity={group['capacity']}. Build the optimizer with "
                    f"capacity={saved['capacity']} to resume this state."
                )
        state_dict = _from_version_0_1_0(state_dict, self.buffer_key)
        # How to compute (not what): these follow this optimizer, so a state saved on one setup resumes on another.
        own = [{k: g[k] for k in IMPLEMENTATION_CHOICES} for g in self.param_groups]
        super().load_state_dict({"state": state_dict["state"], "param_groups": state_dict["param_groups"]})
        self.critical_buffers = []
        for group, choices, saved in zip(self.param_groups, own, state_dict["critical_buffers"], strict=True):
            group.update(choices)
            for p in group["params"]:
                if p in self.state:
                    self.state[p]["step"] = self._counter(self.state[p]["step"], group["capturable"], p)
            buffer = None
            if saved is not None and group["capacity"] > 0:
                buffer = self._new_buffer(group)
                buffer.load_state_dict(saved, group["params"])
            self.critical_buffers.append(buffer)


def _from_version_0_1_0(state_dict: dict[str, Any], buffer_key: str) -> dict[str, Any]:
    """A state dict of cmopt 0.1.0 (priorities and counters in the param groups, entries and running
    sums in the per-tensor state) in today's layout; a current one is returned as it is."""
    if "critical_buffers" in state_dict:
        return state_dict
    state, groups, buffers = dict(state_dict["state"]), [], []
    for saved in state_dict["param_groups"]:
        group = dict(saved)
        fields = {k: group.pop(f"critical_{k}") for k in ("priorities", "steps", "admissions") if f"critical_{k}" in group}
        rows, sums = {}, {}
        for position, index in enumerate(group["params"]):
            if buffer_key in state.get(index, {}):
                tensor_state = dict(state[index])
                rows[position], sums[position] = tensor_state.pop(buffer_key), tensor_state.pop("critical_sum")
                state[index] = tensor_state
        buffers.append({**fields, "rows": rows, "sums": sums} if fields else None)
        groups.append(group)
    return {"state": state, "param_groups": groups, "critical_buffers": buffers}
