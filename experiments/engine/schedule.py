"""Per-step learning-rate schedules: linear warm-up, then cosine, step or constant."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from experiments.options import check_options

SCHEDULE_NAMES = ("cosine", "step", "constant")


def lr_factor(step: int, *, name: str, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
              milestones: Sequence[float] = (), gamma: float = 0.1) -> float:
    """The multiplier of the base lr for optimizer step `step` (0-based) of `total_steps`.

    Warm-up rises linearly to 1 over the first `warmup_steps` steps. After it, cosine decays towards
    `min_lr_ratio`, reached just after the last step (as in timm and transformers); step multiplies
    by `gamma` at each milestone, a fraction of `total_steps` (0.5 = half way); constant stays at 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    if name == "step":
        return gamma ** sum(step >= m * total_steps for m in milestones)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, total_steps: int, name: str, **options) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step; `options` are lr_factor's keywords."""
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"Unknown scheduler {name!r}. Valid names: {', '.join(SCHEDULE_NAMES)} "
                         f"(configs/scheduler/<name>.yaml; choose with scheduler=<name>).")
    check_options("Scheduler", name, lr_factor, options, given_apart=("step", "name", "total_steps"))
    if options.get("warmup_steps", 0) < 0:
        raise ValueError(f"scheduler.warmup_steps={options['warmup_steps']} must be >= 0 (0 = no warm-up).")
    return LambdaLR(optimizer, lambda step: lr_factor(step, name=name, total_steps=total_steps, **options))
