"""What a runner logs about an optimizer: state size and how the critical buffer is being used."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from cmopt._sharding import local


def _optimizers(optimizer: Optimizer) -> list[Optimizer]:
    base = getattr(optimizer, "base_optimizer", None)
    return [optimizer, *_optimizers(base)] if base is not None else [optimizer]


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes of the per-parameter state tensors this process holds (moments, critical buffers and the
    capturable path's scratch entries; SAM's saved weights too): local shards of sharded state, each
    storage counted once (a tensor's rows may be a view of its slots).

    Per-group priorities (C scalars a group) and Python counters are not counted.
    """
    seen, total = set(), 0
    for opt in _optimizers(optimizer):
        for state in opt.state.values():
            for value in state.values():
                if not isinstance(value, torch.Tensor):
                    continue
                storage = local(value).untyped_storage()
                if storage.data_ptr() not in seen or storage.nbytes() == 0:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


def critical_buffer_stats(optimizer: Optimizer) -> dict[str, float]:
    """Admission counts and rate, and the mean held priority, over all groups with a critical buffer.

    Reads device values, so call it at logging intervals, not every step. Empty for other optimizers.
    """
    attempts = admissions = held = 0
    priority_sum = 0.0
    for buffer in getattr(_optimizers(optimizer)[-1], "critical_buffers", ()):  # SAM: the base's buffers
        if buffer is None:
            continue
        held_priorities = buffer.held_priorities()
        attempts += int(buffer.steps)
        admissions += int(buffer.admissions)
        held += len(held_priorities)
        priority_sum += float(held_priorities.sum())
    if attempts == 0:
        return {}
    return {
        "buffer_attempts": attempts,
        "buffer_admissions": admissions,
        "buffer_admission_rate": admissions / attempts,
        "buffer_mean_priority": priority_sum / held if held else 0.0,
    }


def weights_copy(params) -> list[torch.Tensor]:
    """A detached copy of this process's part of each tensor (the local shard of a sharded one), where it is:
    the reference `squared_distance` measures from (the weights before a step, or at initialisation)."""
    return [local(p).detach().clone() for p in params]


def squared_distance(params, reference: list[torch.Tensor]) -> torch.Tensor:
    """Σ ||p − r||² over this process's part of the tensors, in float64, left on the device (no host read).
    For the update of one step take `reference = weights_copy(...)` just before it; the norm is the square
    root (under sharding, of the sum over the processes holding the shards)."""
    params = list(params)
    if len(params) != len(reference):
        raise ValueError(f"squared_distance: {len(params)} tensors but {len(reference)} in the reference; pass "
                         f"weights_copy of the same tensors.")
    total = torch.zeros((), dtype=torch.float64, device=reference[0].device if reference else None)
    for p, r in zip(params, reference):
        total += (local(p).detach().double() - r.double()).pow(2).sum().to(total.device)
    return total
