"""The critical buffer of one parameter group, shared by Adam+CM, Adam+CG and SGD+CM.

The buffer holds up to C entries. An entry has one priority (shared by the group) and one stored
tensor per parameter tensor. Each step the candidate's priority is the sum of the per-tensor
gradient norms; it is appended while the buffer has room, else it replaces the lowest-priority
entry if strictly higher (the first one on ties). Then every priority decays by λ. The optimizer
reads the mean of the entries before the insertion.

Layout: for the tensor at position i of the group, `rows[i]` is one (C, *shape) tensor (entry j is
`rows[i][j]`) and `sums[i]` the running sum of its entries; `priorities` is (C,); `steps` counts
insertion attempts, so min(steps, C) entries are held, and `admissions` the candidates kept.
Tensors join when they first have a gradient; their rows start as zeros, which is what they hold
for entries made before that. Tensors without a gradient on a step keep their rows.

Two implementations differ only in where the admission decision is taken:
`HostBuffer` reads it on the host (at most one synchronisation per step, none while filling);
`DeviceBuffer` keeps it on the device (no synchronisation: capturable and compilable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cmopt._ops import Ops


class CriticalBuffer:
    """Entries, running sums, priorities and counters of one parameter group; see the module doc."""

    def __init__(self, capacity: int, priority_dtype: torch.dtype, device: torch.device,
                 buffer_dtype: torch.dtype | None = None):
        if capacity < 1:
            raise ValueError(f"CriticalBuffer: capacity must be >= 1 (capacity 0 means no buffer), got {capacity}.")
        self.capacity, self.buffer_dtype = capacity, buffer_dtype
        self.priorities = torch.zeros(capacity, dtype=priority_dtype, device=device)
        self.rows: dict[int, torch.Tensor] = {}
        self.sums: dict[int, torch.Tensor] = {}
        self.steps, self.admissions = self._counter(0), self._counter(0)

    # ---- what the two implementations decide differently -------------------------------------------

    def _counter(self, value):
        raise NotImplementedError

    @property
    def held(self):
        """Entries held before this step's insertion, min(steps, C), at least 1 (it divides the sum)."""
        raise NotImplementedError

    def admit(self, priority: torch.Tensor):
        """Where this step's candidate goes (or that it is rejected); changes nothing."""
        raise NotImplementedError

    def store(self, ops: Ops, decision, positions: Sequence[int], candidates: Sequence[torch.Tensor]) -> None:
        """Write the candidates into the entry chosen by `decision` and keep each running sum exact."""
        raise NotImplementedError

    def commit(self, priority: torch.Tensor, decision, decay: float) -> None:
        """Record the candidate's priority and the counters, then decay every priority by λ = `decay`."""
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------------------

    def track(self, position: int, param: torch.Tensor) -> None:
        """Give a tensor that has its first gradient its rows (zeros) and running sum."""
        if position not in self.rows:
            dtype = self.buffer_dtype or param.dtype
            self.rows[position] = torch.zeros((self.capacity, *param.shape), dtype=dtype, device=param.device)
            self.sums[position] = torch.zeros(param.shape, dtype=dtype, device=param.device)

    def priority(self, grads: Sequence[torch.Tensor], foreach: bool) -> torch.Tensor:
        """s = sum over tensors of ||g_i||_2 (the released code's "synced" priority)."""
        norms = [n.to(device=self.priorities.device, dtype=self.priorities.dtype) for n in Ops(foreach).norms(grads)]
        return norms[0] if len(norms) == 1 else torch.stack(norms).sum()

    def add_mean(self, ops: Ops, xs: Sequence[torch.Tensor], positions: Sequence[int]) -> list[torch.Tensor]:
        """x + mean(B) for each tensor, mean(B) = running sum / entries held (read before insertion)."""
        sums = [self.sums[i] for i in positions]
        held = self.held
        if isinstance(held, torch.Tensor):  # the divisor lives on the device
            return ops.add(xs, [total.to(x.dtype) / held for total, x in zip(sums, xs)])
        return ops.add(xs, sums, alpha=1.0 / held)

    def held_priorities(self) -> torch.Tensor:
        """The priorities of the entries held, in entry order (reads the counter on the host)."""
        return self.priorities[: min(int(self.steps), self.capacity)]

    def nbytes(self) -> int:
        """Bytes of the C stored entries and running sums (the C priorities are not counted; nor is the
        scratch entry a `DeviceBuffer` keeps per tensor, see there)."""
        return sum(t.numel() * t.element_size() for t in (*self.rows.values(), *self.sums.values()))

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers, keyed by the tensor's position in its group."""
        return {"priorities": self.priorities, "steps": self.steps, "admissions": self.admissions,
                "rows": dict(self.rows), "sums": dict(self.sums)}

    def load_state_dict(self, state: dict[str, Any], params: Sequence[torch.Tensor]) -> None:
        """Take a saved state onto this buffer's device, dtypes and counter type."""
        saved = torch.as_tensor(state["priorities"])
        if len(saved) != self.capacity:
            raise ValueError(
                f"CriticalBuffer.load_state_dict: the state holds {len(saved)} entries but this buffer has "
                f"capacity={self.capacity}. Build the optimizer with capacity={len(saved)} to resume it."
            )
        self.priorities = saved.to(device=self.priorities.device, dtype=self.priorities.dtype).clone()
        self.steps, self.admissions = self._counter(state["steps"]), self._counter(state["admissions"])
        self.rows, self.sums = {}, {}
        for key in ("rows", "sums"):
            for position, value in state[key].items():
                p = params[int(position)]
                getattr(self, key)[int(position)] = value.to(device=p.device, dtype=self.buffer_dtype or p.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, tensors={len(self.rows)})"


class HostBuffer(CriticalBuffer):
    """Counters are Python ints; the decision is an entry index (int) or None, read on the host."""

    def _counter(self, value) -> int:
        return int(value.item()) if isinstance(value, torch.Tensor) else int(value)

    @property
    def held(self) -> int:
        return max(1, min(self.steps, self.capacity))

    def admit(self, priority: torch.Tensor) -> int | None:
        if self.steps < self.capacity:  # filling: known without looking at any tensor
            return self.steps
        slot = int(torch.where(priority > self.priorities.min(), torch.argmin(self.priorities), -1))  # the host read
        return slot if slot >= 0 else None

    def store(self, ops: Ops, decision: int | None, positions, candidates) -> None:
        if decision is None:
            return
        rows, sums = [self.rows[i] for i in positions], [self.sums[i] for i in positions]
        entries = [r[decision] for r in rows]
        narrow = [_narrower(r, c) for r, c in zip(rows, candidates)]
        wide = [i for i, n in enumerate(narrow) if not n]
        if wide:
            wide_sums, wide_entries, wide_candidates = ([xs[i] for i in wide] for xs in (sums, entries, candidates))
            if self.steps >= self.capacity:  # replacing: take the evicted entry out of the sum
                ops.sub_(wide_sums, wide_entries)
            ops.add_(wide_sums, wide_candidates)
        ops.copy_(entries, candidates)
        for row, total, candidate, n in zip(rows, sums, candidates, narrow):
            if n:
                total.copy_(_sum_of_entries(row, candidate.dtype))

    def commit(self, priority: torch.Tensor, decision: int | None, decay: float) -> None:
        if decision is not None:
            self.priorities[decision] = priority
            self.admissions += 1
        self.steps += 1
        self.priorities.mul_(decay)


class DeviceBuffer(CriticalBuffer):
    """Counters are 0-d int64 device tensors; the decision is (entry index, admitted) on the device.

    Each tensor's rows are the first C entries of a (C + 1, *shape) tensor (`_slots`); the last entry is
    scratch. `store` writes every candidate unconditionally, to its entry if admitted, else to the
    scratch entry, so it never reads the rows it writes: a select between the candidate and the old
    entry made the compiled step materialise (allocate and free) a temporary per tensor every step.
    `rows` and the state dict's shapes hold the C entries only; the scratch entry costs one more
    parameter's bytes per tensor in memory, which `nbytes` counts (and `torch.save` of the state dict
    writes it too, since the rows it holds are views).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots: dict[int, torch.Tensor] = {}

    def track(self, position: int, param: torch.Tensor) -> None:
        if position not in self.rows:
            dtype = self.buffer_dtype or param.dtype
            self._attach(position, torch.zeros((self.capacity + 1, *param.shape), dtype=dtype, device=param.device))
            self.sums[position] = torch.zeros(param.shape, dtype=dtype, device=param.device)

    def nbytes(self) -> int:
        """Bytes held: the C entries, the scratch entry and the running sum of every tensor."""
        return sum(t.numel() * t.element_size() for t in (*self._slots.values(), *self.sums.values()))

    def _attach(self, position: int, slots: torch.Tensor) -> None:
        self._slots[position], self.rows[position] = slots, slots[: self.capacity]

    def load_state_dict(self, state: dict[str, Any], params: Sequence[torch.Tensor]) -> None:
        super().load_state_dict(state, params)
        self._slots = {}
        for position, rows in list(self.rows.items()):
            slots = torch.empty((self.capacity + 1, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
            slots[: self.capacity].copy_(rows)
            slots[self.capacity].zero_()
            self._attach(position, slots)

    def _counter(self, value) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.int64).to(self.priorities.device).clone()

    @property
    def held(self) -> torch.Tensor:
        return self.steps.clamp(min=1, max=self.capacity)

    def admit(self, priority: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.steps >= self.capacity
        admitted = torch.logical_or(~full, priority > self.priorities.min())
        return torch.where(full, torch.argmin(self.priorities), self.steps.clamp(max=self.capacity - 1)), admitted

    def store(self, ops: Ops, decision, positions, candidates) -> None:
        index, admitted = decision
        for i, candidate in zip(positions, candidates):
            slots, total = self._slots[i], self.sums[i]
            at, keep = index.to(slots.device).view(1), admitted.to(slots.device)
            narrow = _narrower(slots, candidate)
            if not narrow:  # before the write: no read of the slots follows it, so it is done in place
                old = slots.index_select(0, at)[0]  # zeros while the buffer is filling
                total.copy_(torch.where(keep, (total - old) + candidate, total))
            to = torch.where(keep, at, self.capacity)  # rejected: the scratch entry takes the write
            slots.index_copy_(0, to, candidate.to(slots.dtype).unsqueeze(0))
            if narrow:
                total.copy_(torch.where(keep, _sum_of_entries(slots[: self.capacity], candidate.dtype), total))

    def commit(self, priority: torch.Tensor, decision, decay: float) -> None:
        index, admitted = decision
        positions = torch.arange(self.capacity, device=self.priorities.device)
        self.priorities.copy_(torch.where(torch.logical_and(positions == index, admitted), priority, self.priorities))
        self.admissions.add_(admitted.to(torch.int64))
        self.steps.add_(1)
        self.priorities.mul_(decay)


def _narrower(row: torch.Tensor, candidate: torch.Tensor) -> bool:
    return torch.finfo(row.dtype).eps > torch.finfo(candidate.dtype).eps


def _sum_of_entries(row: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ over entries, accumulated in `dtype` (row by row: much faster on the CPU than a reduction).

    A sum kept in a narrower dtype than the candidates (e.g. bfloat16) is recomputed from the entries
    on each write: updated in place it would drift by a rounding error every step.
    """
    total = row[0].to(dtype, copy=True)
    for entry in row[1:]:
        total.add_(entry)
    return total
