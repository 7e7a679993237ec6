"""The critical buffer shared by Adam+CM, Adam+CG and SGD+CM, and the optimizer base class that owns it.

Per parameter group the buffer holds up to C entries. An entry has one priority (shared by the
group) and one stored tensor per parameter tensor. Each step the candidate's priority is the sum of
the per-tensor gradient norms; it is appended while the buffer has room, else it replaces the
lowest-priority entry if strictly higher. Then every priority decays by λ. Subclasses read the
buffer's mean before insertion and hand back the tensors to store (momenta or gradients).

Layout: per tensor, `state[buffer_key]` is one (C, *shape) tensor and `state["critical_sum"]` the
running sum of its rows; per group, `critical_priorities` (C,), and the counters `critical_steps`
(insertion attempts, so the number of held entries is min(steps, C)) and `critical_admissions`.
Tensors without a gradient on a step keep their state, so their rows keep what they held (zeros
for entries made before the tensor first had a gradient).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from cmopt import _validation as check
from cmopt._ops import Ops

GROUP_BUFFER_KEYS = ("critical_priorities", "critical_steps", "critical_admissions")


def _step_dtype(param: torch.Tensor) -> torch.dtype:
    return torch.promote_types(param.dtype, torch.float32)


def _priority_dtype(params: Iterable[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


class CriticalOptimizer(Optimizer):
    """Base class: validation, lazy state, the critical buffer, and a state_dict that keeps all of it."""

    buffer_key = "critical_momenta"

    def __init__(self, params, defaults: dict[str, Any]):
        name = type(self).__name__
        check.non_negative(name, "lr", defaults["lr"])
        check.non_negative(name, "weight_decay", defaults["weight_decay"])
        check.capacity(name, defaults["capacity"])
        check.in_unit_interval(name, "decay", defaults["decay"], closed_right=True)
        check.buffer_dtype(name, defaults["buffer_dtype"])
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("buffer_dtype", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        name = type(self).__name__
        for key, validate in (("capacity", check.capacity), ("buffer_dtype", check.buffer_dtype)):
            if key in param_group:
                validate(name, param_group[key])
        if "decay" in param_group:
            check.in_unit_interval(name, "decay", param_group["decay"], closed_right=True)
        super().add_param_group(param_group)

    # ---- what a subclass provides -------------------------------------------------------------

    def _init_tensor_state(self, group: dict, param: torch.Tensor, state: dict) -> None:
        """Create the subclass's own per-tensor state (moments, momentum buffer)."""
        raise NotImplementedError

    def _update(self, group, ops: Ops, params, grads, states, *, first: bool, held) -> list[torch.Tensor]:
        """Update `params` in place and return the candidates to store in the buffer, one per tensor.

        `first`: these tensors have no state before this step. `held`: the number of entries held
        before this step's insertion (an int, or a device tensor when capturable).
        """
        raise NotImplementedError

    # ---- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        params, grads, states, fresh = self._collect(group)
        if not params:
            return
        ops = Ops(foreach=group["foreach"] is not False)
        capacity = group["capacity"]
        held = 0
        if capacity > 0:
            self._init_group_buffer(group, params)
            priority = self._priority(ops, grads, group["critical_priorities"])
            held = self._held(group)
        order, candidates = [], []
        for first in (True, False):
            idx = [i for i, f in enumerate(fresh) if f is first]
            if not idx:
                continue
            order += idx
            candidates += self._update(
                group, ops, [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                first=first, held=held,
            )
        if capacity > 0:
            rows = [states[i][self.buffer_key] for i in order]
            sums = [states[i]["critical_sum"] for i in order]
            if group["capturable"]:
                self._insert_masked(group, priority, rows, sums, candidates)
            else:
                self._insert(group, ops, priority, rows, sums, candidates)

    def _collect(self, group: dict):
        params, grads, states, fresh = [], [], [], []
        for index, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check.dense(type(self).__name__, index, p.grad)
            state = self.state[p]
            is_new = len(state) == 0
            if is_new:
                self._init_common_state(group, p, state)
                self._init_tensor_state(group, p, state)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
            fresh.append(is_new)
        return params, grads, states, fresh

    def _init_common_state(self, group: dict, p: torch.Tensor, state: dict) -> None:
        if group["capturable"]:
            state["step"] = torch.zeros((), dtype=_step_dtype(p), device=p.device)
        else:
            state["step"] = 0
        capacity = group["capacity"]
        if capacity > 0:
            dtype = group["buffer_dtype"] or p.dtype
            state[self.buffer_key] = torch.zeros((capacity, *p.shape), dtype=dtype, device=p.device)
            state["critical_sum"] = torch.zeros(p.shape, dtype=dtype, device=p.device)

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

    # ---- the buffer -------------------------------------------------------------------------------

    def _init_group_buffer(self, group: dict, params: list[torch.Tensor]) -> None:
        if "critical_priorities" in group:
            return
        device = group["params"][0].device
        group["critical_priorities"] = torch.zeros(
            group["capacity"], dtype=_priority_dtype(group["params"]), device=device
        )
        if group["capturable"]:
            group["critical_steps"] = torch.zeros((), dtype=torch.int64, device=device)
            group["critical_admissions"] = torch.zeros((), dtype=torch.int64, device=device)
        else:
            group["critical_steps"] = 0
            group["critical_admissions"] = 0

    @staticmethod
    def _priority(ops: Ops, grads: list[torch.Tensor], priorities: torch.Tensor) -> torch.Tensor:
        """s = sum over tensors of ||g_i||_2 (the released code's "synced" priority)."""
        norms = ops.norms(grads)
        if len(norms) == 1:
            return norms[0].to(device=priorities.device, dtype=priorities.dtype)
        norms = [n.to(device=priorities.device, dtype=priorities.dtype) for n in norms]
        return torch.stack(norms).sum()

    @staticmethod
    def _held(group: dict):
        """Entries held before this step's insertion: min(attempts so far, C), at least 1 as a divisor."""
        if group["capturable"]:
            return group["critical_steps"].clamp(min=1, max=group["capacity"])
        return max(1, min(group["critical_steps"], group["capacity"]))

    @staticmethod
    def _aggregate(ops: Ops, xs: list[torch.Tensor], sums: list[torch.Tensor], held) -> list[torch.Tensor]:
        """x + mean(B) for each tensor, with mean(B) = running sum / entries held."""
        means = ops.div(sums, held)
        if all(m.dtype == x.dtype for m, x in zip(means, xs)):
            ops.add_(means, xs)
            return means
        return ops.add(xs, means)

    def _insert(self, group, ops: Ops, priority, rows, sums, candidates) -> None:
        """Default path: decide admission with at most one host sync, then copy only if admitted."""
        capacity, steps = group["capacity"], group["critical_steps"]
        priorities = group["critical_priorities"]
        full = steps >= capacity
        if full:
            lowest = torch.argmin(priorities)
            slot = int(torch.where(priority > priorities.min(), lowest, -1))  # the one host sync
        else:
            slot = steps
        if slot >= 0:
            entries = [r[slot] for r in rows]
            if full:
                ops.sub_(sums, entries)
            ops.add_(sums, candidates)
            ops.copy_(entries, candidates)
            priorities[slot] = priority
            group["critical_admissions"] += 1
        group["critical_steps"] = steps + 1
        priorities.mul_(group["decay"])

    def _insert_masked(self, group, priority, rows, sums, candidates) -> None:
        """Capturable path: the same decision as `_insert`, kept on the device (no sync, no branch)."""
        capacity, steps = group["capacity"], group["critical_steps"]
        priorities = group["critical_priorities"]
        full = steps >= capacity
        admit = torch.logical_or(~full, priority > priorities.min())
        slot = torch.where(full, torch.argmin(priorities), steps.clamp(max=capacity - 1))
        chosen = torch.logical_and(torch.arange(capacity, device=priorities.device) == slot, admit)
        priorities.copy_(torch.where(chosen, priority, priorities))
        priorities.mul_(group["decay"])
        group["critical_admissions"].add_(admit.to(torch.int64))
        steps.add_(1)
        for row, total, candidate in zip(rows, sums, candidates):
            index = slot.to(row.device).view(1)
            keep = admit.to(row.device)
            old = row.index_select(0, index)[0]
            total.copy_(torch.where(keep, (total - old) + candidate, total))
            row.index_copy_(0, index, torch.where(keep, candidate.to(row.dtype), old).unsqueeze(0))

    # ---- persistence ------------------------------------------------------------------------------

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
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            self._place_loaded_state(group)

    def _place_loaded_state(self, group: dict) -> None:
        """Put loaded state where this optimizer keeps it: device, buffer dtype, and counter types."""
        capturable = group["capturable"]
        for p in group["params"]:
            state = self.state.get(p)
            if not state:
                continue
            if group["capacity"] > 0:
                dtype = group["buffer_dtype"] or p.dtype
                for key in (self.buffer_key, "critical_sum"):
                    state[key] = state[key].to(device=p.device, dtype=dtype)
            state["step"] = _counter(state["step"], capturable, _step_dtype(p), p.device)
        if "critical_priorities" in group:
            device = group["params"][0].device
            group["critical_priorities"] = group["critical_priorities"].to(
                device=device, dtype=_priority_dtype(group["params"])
            )
            for key in ("critical_steps", "critical_admissions"):
                group[key] = _counter(group[key], capturable, torch.int64, device)


def _counter(value, capturable: bool, dtype: torch.dtype, device: torch.device):
    """A step counter as the path needs it: a device tensor when capturable, else a Python int."""
    if capturable:
        return torch.as_tensor(value, dtype=dtype, device=device).clone()
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)
