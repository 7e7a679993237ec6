"""The critical buffer of one parameter group, shared by Adam+CM, Adam+CG and SGD+CM.

The buffer holds up to C entries. An entry has one priority (shared by the group) and one stored
tensor per parameter tensor. Each step the candidate's priority is, by the group's `priority` rule
(PRIORITY_RULES), the sum of the per-tensor gradient norms (the paper's), of the candidates' norms,
a draw from the step count, or its arrival; it is appended while the buffer has room, else it
replaces the lowest-priority entry if strictly higher (the first one on ties; "fifo": the oldest,
always). Then every priority decays by λ. The optimizer reads the mean of the entries before the
insertion; the candidates offered are stored when the step closes.

Where it lives: in the optimizer's own state, so that everything that carries optimizer state
(`state_dict`, torch.distributed.checkpoint, ZeroRedundancyOptimizer) carries the buffer too.
- Per tensor, `state[p][key]` is one (C, *shape) tensor (entry j is row j; key is
  `critical_momenta` or `critical_gradients`) and `state[p]["critical_sum"]` the running sum of its
  entries. A sharded parameter (DTensor) has sharded rows: every process holds its shard's rows.
- Per group, `group["critical_priorities"]` (C,) float64, `group["critical_steps"]` (insertion
  attempts, so min(steps, C) entries are held) and `group["critical_admissions"]` (candidates kept).
Tensors join when they first have a gradient; their rows start as zeros, which is what they hold
for entries made before that. Tensors without a gradient on a step keep their rows.

`CriticalBuffer` is one step's view of a group's buffer: what the update needs (the mean for its
tensors, an insertion of their candidates), with the admission protocol inside. Two kinds differ
only in where the admission decision is taken: `HostBuffer` reads it on the host (at most one
synchronisation per step, none while filling); `DeviceBuffer` keeps it on the device (no
synchronisation: capturable and compilable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cmopt._ops import Ops

PRIORITIES, STEPS, ADMISSIONS = "critical_priorities", "critical_steps", "critical_admissions"
# What ranks a candidate (the `priority` option): the paper's summed gradient norm, the summed norm of
# the candidates themselves, a pseudo-random number drawn from the step count, or its arrival (FIFO).
PRIORITY_RULES = ("grad_norm", "candidate_norm", "random", "fifo")
MEASURED_RULES = ("grad_norm", "candidate_norm")  # the optimizer measures these; the others need no tensor
SUM, SLOTS = "critical_sum", "critical_slots"
GROUP_KEYS = (PRIORITIES, STEPS, ADMISSIONS)


class CriticalBuffer:
    """One step of one group's buffer over the tensors that have a gradient (see the module doc).

    `rows[i]`, `sums[i]`: the (local) entries and running sum of tensor i of this step. `priority` is
    the candidate's s (a float64 device scalar). The optimizer calls `add_mean` and `insert` for every
    tensor (in any grouping, through `part`), then `close` once.
    """

    def __init__(self, group: dict, rows: Sequence[torch.Tensor], sums: Sequence[torch.Tensor],
                 priority: torch.Tensor | Callable, foreach: bool, slots: Sequence[torch.Tensor] | None = None):
        self.group, self.capacity = group, group["capacity"]
        self.rows, self.sums, self.slots = list(rows), list(sums), None if slots is None else list(slots)
        self.positions = list(range(len(self.rows)))
        self.priority, self.ops = priority, Ops(foreach)
        self._shared = {"pending": []}  # the candidates offered this step, shared with every `part`

    # ---- what the two kinds decide differently --------------------------------------------------

    @property
    def held(self):
        """Entries held before this step's insertion, min(steps, C), at least 1 (it divides the sum)."""
        raise NotImplementedError

    def _decide(self, priority):
        raise NotImplementedError

    def _store(self, decision, rows, sums, candidates, slots) -> None:
        raise NotImplementedError

    def _record(self, decision, priority) -> None:
        raise NotImplementedError

    # ---- what the update uses ------------------------------------------------------------------

    def part(self, indices: Sequence[int]) -> CriticalBuffer:
        """The same step's buffer over a subset of its tensors (one admission decision for all)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.rows, other.sums = [self.rows[i] for i in indices], [self.sums[i] for i in indices]
        other.positions = [self.positions[i] for i in indices]
        other.slots = None if self.slots is None else [self.slots[i] for i in indices]
        return other

    def add_mean(self, xs: Sequence[torch.Tensor], at: int | None = None) -> list[torch.Tensor]:
        """x + mean(B) for each tensor (or for tensor `at` alone), mean(B) = sum / entries held."""
        sums = self.sums if at is None else [self.sums[at]]
        held = self.held
        if isinstance(held, torch.Tensor):  # the divisor lives on the device
            return self.ops.add(xs, [total.to(x.dtype) / held for total, x in zip(sums, xs)])
        return self.ops.add(xs, sums, alpha=1.0 / held)

    def insert(self, candidates: Sequence[torch.Tensor], at: int | None = None) -> None:
        """Offer each tensor's candidate (or tensor `at`'s); stored at `close`, once the step's priority
        is known (the candidate-norm rule needs every candidate). A candidate must not change before then."""
        indices = range(len(self.rows)) if at is None else [at]
        for i, candidate in zip(indices, candidates):
            slot = None if self.slots is None else self.slots[i]
            self._shared["pending"].append((self.positions[i], self.rows[i], self.sums[i], candidate, slot))

    def close(self) -> None:
        """The end of the step: the priority, the admission and the stores, the counters, and every
        priority decayed by λ. No priority (no process had a gradient, ZeRO): nothing happens."""
        pending = self._shared["pending"]
        positions, rows, sums, candidates, slots = (list(xs) for xs in zip(*pending)) if pending else ([],) * 5
        priority = self.priority(positions, candidates) if callable(self.priority) else self.priority
        if priority is None:
            return
        if not isinstance(self.group.get(PRIORITIES), torch.Tensor):  # a ZeRO process holding none of its tensors
            init_group_state(self.group, priority.device)
        priority = rule_priority(self.group, priority)
        decision = self._decide(priority)
        if pending:
            self._store(decision, rows, sums, candidates, None if self.slots is None else slots)
        self._record(decision, priority)
        self.group[PRIORITIES].mul_(self.group["decay"])


class HostBuffer(CriticalBuffer):
    """Counters are Python ints; the decision is an entry index (int) or None, read on the host."""

    @staticmethod
    def new_counter(value, device) -> int:
        return int(value.item()) if isinstance(value, torch.Tensor) else int(value)

    @property
    def held(self) -> int:
        return max(1, min(self.group[STEPS], self.capacity))

    def _decide(self, priority) -> int | None:
        steps, priorities = self.group[STEPS], self.group[PRIORITIES]
        if steps < self.capacity or _rule(self.group) == "fifo":  # known without looking at any tensor
            return steps % self.capacity
        slot = int(torch.where(priority > priorities.min(), torch.argmin(priorities), -1))  # the host read
        return slot if slot >= 0 else None

    def _store(self, decision, rows, sums, candidates, slots) -> None:
        if decision is None:
            return
        entries = [r[decision] for r in rows]
        narrow = [_narrower(r, c) for r, c in zip(rows, candidates)]
        wide = [i for i, n in enumerate(narrow) if not n]
        if wide:
            wide_sums, wide_entries, wide_candidates = ([xs[i] for i in wide] for xs in (sums, entries, candidates))
            if self.group[STEPS] >= self.capacity:  # replacing: take the evicted entry out of the sum
                self.ops.sub_(wide_sums, wide_entries)
            self.ops.add_(wide_sums, wide_candidates)
        self.ops.copy_(entries, candidates)
        for row, total, candidate, n in zip(rows, sums, candidates, narrow):
            if n:
                total.copy_(_sum_of_entries(row, candidate.dtype))

    def _record(self, decision, priority) -> None:
        if decision is not None:
            self.group[PRIORITIES][decision] = priority
            self.group[ADMISSIONS] += 1
        self.group[STEPS] += 1


class DeviceBuffer(CriticalBuffer):
    """Counters are 0-d int64 device tensors; the decision is (entry index, admitted) on the device.

    Each tensor's rows are the first C entries of a (C + 1, *shape) tensor (`state[p]["critical_slots"]`,
    never saved); the last entry is scratch. The store writes every candidate unconditionally, to its
    entry if admitted, else to the scratch entry, so it never reads the rows it writes: a select between
    the candidate and the old entry made the compiled step materialise (allocate and free) a temporary
    per tensor every step. The scratch entry costs one more parameter's bytes per tensor.
    """

    @staticmethod
    def new_counter(value, device) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.int64).to(device).clone()

    @property
    def held(self) -> torch.Tensor:
        return self.group[STEPS].clamp(min=1, max=self.capacity)

    def _decide(self, priority):
        steps, priorities = self.group[STEPS], self.group[PRIORITIES]
        if _rule(self.group) == "fifo":
            return steps % self.capacity, torch.ones((), dtype=torch.bool, device=steps.device)
        full = steps >= self.capacity
        admitted = torch.logical_or(~full, priority > priorities.min())
        return torch.where(full, torch.argmin(priorities), steps.clamp(max=self.capacity - 1)), admitted

    def _store(self, decision, rows, sums, candidates, slots) -> None:
        index, admitted = decision
        for slot, total, candidate in zip(slots, sums, candidates):
            at, keep = index.to(slot.device).view(1), admitted.to(slot.device)
            narrow = _narrower(slot, candidate)
            if not narrow:  # before the write: no read of the slots follows it, so it is done in place
                old = slot.index_select(0, at)[0]  # zeros while the buffer is filling
                total.copy_(torch.where(keep, (total - old) + candidate, total))
            to = torch.where(keep, at, self.capacity)  # rejected: the scratch entry takes the write
            slot.index_copy_(0, to, candidate.to(slot.dtype).unsqueeze(0))
            if narrow:
                total.copy_(torch.where(keep, _sum_of_entries(slot[: self.capacity], candidate.dtype), total))

    def _record(self, decision, priority) -> None:
        index, admitted = decision
        priorities = self.group[PRIORITIES]
        positions = torch.arange(self.capacity, device=priorities.device)
        priorities.copy_(torch.where(torch.logical_and(positions == index, admitted), priority, priorities))
        self.group[ADMISSIONS].add_(admitted.to(torch.int64))
        self.group[STEPS].add_(1)


def _rule(group: dict) -> str:
    return group.get("priority", "grad_norm")


def rule_priority(group: dict, measured: torch.Tensor) -> torch.Tensor:
    """The candidate's priority (float64, on `measured`'s device) under the group's rule: the measured
    norm sum for the norm rules; for "random" a number in [0, 1) drawn from the group's count of
    insertion attempts, for "fifo" that count + 1 (every candidate then replaces the oldest entry)."""
    rule = _rule(group)
    if rule in MEASURED_RULES:
        return measured
    steps = group[STEPS]
    value, scale = (counter_hash(steps), 2.0**-32) if rule == "random" else (steps + 1, 1.0)
    return torch.as_tensor(value).to(device=measured.device, dtype=torch.float64) * scale


def counter_hash(n):
    """A 32-bit integer hash of a count n >= 0 (a Python int or an int64 tensor, the same value either
    way): a draw that depends on the step count alone, so every process draws the same, a resumed run
    draws what the uninterrupted one would, and no random generator is touched. Every product stays
    below 2^59, inside int64."""
    x = (n + 0x9E3779B9) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def kind(capturable: bool) -> type[CriticalBuffer]:
    return DeviceBuffer if capturable else HostBuffer


def init_group_state(group: dict, device: torch.device) -> None:
    """A group's priorities and counters, on its first step with a gradient (or as loaded)."""
    counter = kind(group["capturable"]).new_counter
    priorities = group.get(PRIORITIES)
    priorities = torch.zeros(group["capacity"]) if priorities is None else torch.as_tensor(priorities)
    group[PRIORITIES] = priorities.to(device=device, dtype=torch.float64).clone()
    group[STEPS] = counter(group.get(STEPS, 0), device)
    group[ADMISSIONS] = counter(group.get(ADMISSIONS, 0), device)


def init_tensor_state(state: dict, key: str, param: torch.Tensor, group: dict, rows_like) -> None:
    """A tensor's rows (zeros) and running sum on its first gradient; with `capturable`, its slots.

    `rows_like(param, n, dtype)` makes an (n, *shape) zero tensor placed like `param` (sharded rows
    for a sharded parameter)."""
    dtype = group["buffer_dtype"] or param.dtype
    if key not in state:
        state[key] = rows_like(param, group["capacity"], dtype)
        state[SUM] = torch.zeros_like(param, dtype=dtype)
    if group["capturable"] and SLOTS not in state:
        slots = rows_like(param, group["capacity"] + 1, dtype)
        slots[: group["capacity"]].copy_(state[key])
        state[SLOTS], state[key] = slots, slots[: group["capacity"]]


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
