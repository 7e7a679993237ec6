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
    return total


def critical_buffer_stats(optimizer: Optimizer) -> dict[str, float]:
    """Admission counts and rate, and the mean held priority, over all groups with a critical buffer.

    Reads device values, so call it at logging intervals, not every step. Empty for other optimizers.
    """
    attempts = admissions = held = 0
    priority_sum = 0.0
    for group in _optimizers(optimizer)[-1].param_groups:  # SAM shares its groups with the base
        if "critical_priorities" not in group:
            continue
        steps = int(group["critical_steps"])
        n_held = min(steps, group["capacity"])
        attempts += steps
        admissions += int(group["critical_admissions"])
        held += n_held
        priority_sum += float(group["critical_priorities"][:n_held].sum())
    if attempts == 0:
        return {}
    return {
        "buffer_attempts": attempts,
        "buffer_admissions": admissions,
        "buffer_admission_rate": admissions / attempts,
        "buffer_mean_priority": priority_sum / held if held else 0.0,
    }
