"""Learning-rate schedules: linear warm-up, then cosine, step or constant per step, or LR on plateau."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from experiments.options import UserError, Valid, check_options, check_values, integer, number


def _increasing_fractions(value) -> bool:
    fractions = isinstance(value, (list, tuple)) and all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m <= 1 for m in value)
    return fractions and all(a < b for a, b in zip(value, value[1:]))


WARMUP_STEPS = integer(0)
MIN_LR_RATIO = number(0, 1, example=0.0)
# Each schedule's options and their valid values (plateau's are explained in `Schedule`).
SCHEDULE_OPTIONS = {
    "cosine": {"warmup_steps": WARMUP_STEPS, "min_lr_ratio": MIN_LR_RATIO},
    "step": {"warmup_steps": WARMUP_STEPS,
             "milestones": Valid(_increasing_fractions,
                                 "a list of increasing fractions of the run's steps in (0, 1], not epochs: "
                                 "epochs 60, 120, 160 of 200 are [0.3,0.6,0.8]", "[0.5,0.75]"),
             "gamma": number(0, 1, low_open=True, example=0.1)},
    "constant": {"warmup_steps": WARMUP_STEPS},
    "plateau": {"warmup_steps": WARMUP_STEPS, "factor": number(0, 1, low_open=True, high_open=True, example=0.25),
                "patience": integer(0), "min_lr_ratio": MIN_LR_RATIO},
}
SCHEDULE_NAMES = tuple(SCHEDULE_OPTIONS)


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


class Schedule(LambdaLR):
    """A LambdaLR stepped once per optimizer step; `observe(metric)` after each evaluation (plateau only).

    LR on plateau: after `patience` + 1 evaluations in a row without a better validation metric, the lr
    is multiplied by `factor` (the classic word-level LSTM recipe divides by 4: factor 0.25), never
    below `min_lr_ratio` x the base lr. The metric is the runner's selection metric (e.g. val_ppl).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, name: str, select, **options):
        self.name, self.select = name, select
        self.scale, self.best, self.bad_evaluations = 1.0, None, 0
        if name == "plateau":
            self.plateau = {"factor": 0.25, "patience": 0, "min_lr_ratio": 0.0, **options}
            warmup = self.plateau.pop("warmup_steps", 0)
            super().__init__(optimizer, lambda step: (step + 1) / warmup if step < warmup else self.scale)
        else:
            super().__init__(optimizer, lambda step: lr_factor(step, name=name, total_steps=total_steps, **options))

    def observe(self, value: float) -> None:
        if self.name != "plateau":
            return
        better = self.best is None or (value < self.best if self.select[1] == "min" else value > self.best)
        if better:
            self.best, self.bad_evaluations = value, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.plateau["patience"]:
            self.scale = max(self.plateau["min_lr_ratio"], self.scale * self.plateau["factor"])
            self.bad_evaluations = 0
            self._apply()

    def _apply(self) -> None:
        """The new scale takes effect now, not only at the next step."""
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base_lr * fn(max(self.last_epoch, 0))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(scale=self.scale, best=self.best, bad_evaluations=self.bad_evaluations)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.scale = state.pop("scale", 1.0)
        self.best = state.pop("best", None)
        self.bad_evaluations = state.pop("bad_evaluations", 0)
        super().load_state_dict(state)


def build_scheduler(optimizer: Optimizer, total_steps: int, name: str, select: tuple[str, str] | None = None,
                    **options) -> Schedule:
    """The schedule called `name`, with its options (SCHEDULE_OPTIONS) checked one by one."""
    if name not in SCHEDULE_NAMES:
        raise UserError(f"Unknown scheduler {name!r}. Valid names: {', '.join(SCHEDULE_NAMES)} "
                         f"(configs/common/scheduler/<name>.yaml; choose with scheduler=<name>).")
    check_options("Scheduler", name, SCHEDULE_OPTIONS[name], options)
    check_values("scheduler", SCHEDULE_OPTIONS[name], options)
    if name == "plateau" and select is None:
        raise UserError("scheduler=plateau follows a validation metric, and this runner selects none; "
                         "use scheduler=cosine, step or constant.")
    return Schedule(optimizer, total_steps, name, select, **options)
