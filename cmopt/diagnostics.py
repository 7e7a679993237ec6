"""What a runner logs about an optimizer: state size and how the critical buffer is being used."""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def _optimizers(optimizer: Optimizer) -> list[Optimizer]:
    base = getattr(optimizer, "base_optimizer", None)
    return [optimizer, *_optimizers(base)] if base is not None else [optimizer]


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes of all per-parameter state tensors (moments, critical buffers; SAM's saved weights too).

    Per-group priorities (C scalars a group) and Python counters are not counted.
    """
    total = 0
    for opt in _optimizers(optimizer):
        for state in opt.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        total += sum(b.nbytes() for b in getattr(opt, "critical_buffers", ()) if b is not None)
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
