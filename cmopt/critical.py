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

IMPLEMENTATION_CHOICES = ("foreach", "capturable", "buffer_dtype")


def _step_dtype(param: torch.Tensor) -> torch.dtype:
    return torch.promote_types(param.dtype, torch.float32)


def _priority_dtype(params: Iterable[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


class CriticalOptimizer(Optimizer):
    """Base class: validation, lazy state, the critical buffer, and a state_dict that keeps all of it."""

    buffer_key = "critical_momenta"

    def __init__(self, params, defaults: dict[str, Any]):
        check.hyperparameters(type(self).__name__, defaults)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("buffer_dtype", None)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check.hyperparameters(type(self).__name__, param_group)
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
        capacity = group["capacity"]
        # As torch does: multi-tensor kernels on accelerators; on the CPU the per-tensor loop is faster.
        foreach = group["foreach"] if group["foreach"] is not None else params[0].device.type != "cpu"
        priority = slot = held = None
        if capacity > 0:
            self._init_group_buffer(group)
            priority = self._priority(grads, group["critical_priorities"], foreach)
            held = self._held(group)
        if not foreach:
            # Tensor by tensor: each tensor's temporaries are small and reused, and its data stays in cache.
            ops = Ops(foreach=False)
            if capacity > 0:
                slot = self._decide(group, priority)
            for i in range(len(params)):
                one = slice(i, i + 1)
                candidates = self._update(group, ops, params[one], grads[one], states[one], first=fresh[i], held=held)
                if capacity > 0:
                    self._store(group, ops, slot, states[one], candidates)
        else:
            ops = Ops(foreach=True)
            ordered, candidates = [], []
            for first in (True, False):
                idx = [i for i, f in enumerate(fresh) if f is first]
                if idx:
                    ordered += [states[i] for i in idx]
                    candidates += self._update(
                        group, ops, [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                        first=first, held=held,
                    )
            if capacity > 0:
                slot = self._decide(group, priority)  # after the updates are queued: a sync here stalls less
                self._store(group, ops, slot, ordered, candidates)
        if capacity > 0:
            self._commit(group, priority, slot)

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

    def _init_group_buffer(self, group: dict) -> None:
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
    def _priority(grads: list[torch.Tensor], priorities: torch.Tensor, foreach: bool) -> torch.Tensor:
        """s = sum over tensors of ||g_i||_2 (the released code's "synced" priority)."""
        norms = Ops(foreach).norms(grads)
        norms = [n.to(device=priorities.device, dtype=priorities.dtype) for n in norms]
        return norms[0] if len(norms) == 1 else torch.stack(norms).sum()

    @staticmethod
    def _held(group: dict):
        """Entries held before this step's insertion, min(attempts so far, C), at least 1 as a divisor."""
        if group["capturable"]:
            return group["critical_steps"].clamp(min=1, max=group["capacity"])
        return max(1, min(group["critical_steps"], group["capacity"]))

    @staticmethod
    def _aggregate(ops: Ops, xs: list[torch.Tensor], sums: list[torch.Tensor], held) -> list[torch.Tensor]:
        """x + mean(B) for each tensor, with mean(B) = running sum / entries held (read before insertion)."""
        if isinstance(held, torch.Tensor):  # capturable: the divisor lives on the device
            return ops.add(xs, [total.to(x.dtype) / held for total, x in zip(sums, xs)])
        return ops.add(xs, sums, alpha=1.0 / held)

    @staticmethod
    def _decide(group: dict, priority: torch.Tensor):
        """Where this step's candidate goes.

        Default path: the entry index, or None if rejected; while the buffer has room the answer is
        known on the host, else one host read. Capturable: (index, admitted) as device tensors.
        """
        capacity, steps, priorities = group["capacity"], group["critical_steps"], group["critical_priorities"]
        if group["capturable"]:
            full = steps >= capacity
            admitted = torch.logical_or(~full, priority > priorities.min())
            return torch.where(full, torch.argmin(priorities), steps.clamp(max=capacity - 1)), admitted
        if steps < capacity:
            return steps
        slot = int(torch.where(priority > priorities.min(), torch.argmin(priorities), -1))  # the one host read
        return slot if slot >= 0 else None

    def _store(self, group: dict, ops: Ops, slot, states: list[dict], candidates: list[torch.Tensor]) -> None:
        """Write the candidates into the chosen entry and keep each running sum equal to its entries' sum.

        A sum kept in a narrower dtype than the candidates (e.g. bfloat16) is recomputed from the
        entries on each write: updated in place it would drift by a rounding error every step.
        """
        rows = [s[self.buffer_key] for s in states]
        sums = [s["critical_sum"] for s in states]
        if group["capturable"]:
            index, admitted = slot
            for row, total, candidate in zip(rows, sums, candidates):
                at, keep = index.to(row.device).view(1), admitted.to(row.device)
                old = row.index_select(0, at)[0]  # zeros while the buffer is filling
                row.index_copy_(0, at, torch.where(keep, candidate.to(row.dtype), old).unsqueeze(0))
                if _narrower(row, candidate):
                    total.copy_(torch.where(keep, _sum_of_entries(row, candidate.dtype), total))
                else:
                    total.copy_(torch.where(keep, (total - old) + candidate, total))
            return
        if slot is None:
            return
        entries = [r[slot] for r in rows]
        narrow = [_narrower(r, c) for r, c in zip(rows, candidates)]
        wide = [i for i, n in enumerate(narrow) if not n]
        if wide:
            wide_sums, wide_entries, wide_candidates = ([xs[i] for i in wide] for xs in (sums, entries, candidates))
            if group["critical_steps"] >= group["capacity"]:  # replacing: take the evicted entry out of the sum
                ops.sub_(wide_sums, wide_entries)
            ops.add_(wide_sums, wide_candidates)
        ops.copy_(entries, candidates)
        for row, total, candidate, n in zip(rows, sums, candidates, narrow):
            if n:
                total.copy_(_sum_of_entries(row, candidate.dtype))

    @staticmethod
    def _commit(group: dict, priority: torch.Tensor, slot) -> None:
        """Record the candidate's priority and the counters, then decay every priority by λ."""
        priorities = group["critical_priorities"]
        if group["capturable"]:
            index, admitted = slot
            chosen = torch.logical_and(torch.arange(len(priorities), device=priorities.device) == index, admitted)
            priorities.copy_(torch.where(chosen, priority, priorities))
            group["critical_admissions"].add_(admitted.to(torch.int64))
            group["critical_steps"].add_(1)
        else:
            if slot is not None:
                priorities[slot] = priority
                group["critical_admissions"] += 1
            group["critical_steps"] += 1
        priorities.mul_(group["decay"])

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
        # How to compute (not what): these follow this optimizer, so a state saved on one setup resumes on another.
        own = [{k: g[k] for k in IMPLEMENTATION_CHOICES} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, choices in zip(self.param_groups, own):
            group.update(choices)
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


def _narrower(row: torch.Tensor, candidate: torch.Tensor) -> bool:
    return torch.finfo(row.dtype).eps > torch.finfo(candidate.dtype).eps


def _sum_of_entries(row: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ over entries, accumulated in `dtype` (row by row: much faster on the CPU than a reduction)."""
    total = row[0].to(dtype, copy=True)
    for entry in row[1:]:
        total.add_(entry)
    return total


def _counter(value, capturable: bool, dtype: torch.dtype, device: torch.device):
    """A step counter as the path needs it: a device tensor when capturable, else a Python int."""
    if capturable:
        return torch.as_tensor(value, dtype=dtype, device=device).clone()
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)
