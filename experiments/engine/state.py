"""The training state: exactly what a checkpoint holds besides the model, optimizer and scheduler.

`TrainingState` is where the run stands (`Progress`), what it has measured (the last value of every
metric, the best evaluation, every evaluation line and the exact sums of the training statistics
that the summary needs), and its bookkeeping (wall time, the stage's first loss, the metrics file's
length at the checkpoint). `PerProcess` is what each process keeps for itself: its RNG streams, its
unlogged training window and the state it carries from batch to batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from experiments.engine.task import move_to


@dataclass
class Progress:
    """Where training stands: steps taken, and the next batch to train (stage, epoch, batch index)."""

    step: int = 0
    stage: int = 0
    epoch: int = 0
    batch: int = 0
    finished: bool = False

    def advance(self, stage: int, epoch: int, index: int, batches_per_epoch: list[int], epochs: int) -> None:
        """After training batch `index` of (stage, epoch): one step more, and the next batch's position."""
        self.step += 1
        self.stage, self.epoch, self.batch = stage, epoch, index + 1
        if self.batch == batches_per_epoch[stage]:
            self.epoch, self.batch = epoch + 1, 0
            if self.epoch == epochs:
                self.stage, self.epoch = stage + 1, 0


@dataclass
class TrainingState:
    progress: Progress = field(default_factory=Progress)
    latest: dict[str, Any] = field(default_factory=dict)  # the last logged value of every metric
    best: dict[str, Any] = field(default_factory=dict)  # with Task.select: step and metrics of the best evaluation
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # every evaluation line, for Task.summarize
    train_totals: dict[str, float] = field(default_factory=dict)  # all processes' training sums (count too)
    first_loss: float | None = None  # the last stage's first training loss, averaged over the processes
    wall_time_s: float = 0.0  # spent before the last resumption
    saved_step: int | None = None  # the step of the last checkpoint written
    metrics_bytes: int = 0  # metrics.jsonl's length at that checkpoint

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, saved: dict[str, Any]) -> TrainingState:
        return cls(**{**saved, "progress": Progress(**saved["progress"])})

    def add_train_totals(self, sums: dict[str, float]) -> None:
        for name, value in sums.items():
            self.train_totals[name] = self.train_totals.get(name, 0.0) + value


class Window:
    """One process's training losses (one per step, times its count), counts and statistics since the last
    log line. They stay where the step computed them (no host read per step); `positions` are (step,
    stage, epoch)."""

    def __init__(self, step_losses=None, count=0, steps=0, time_s=0.0, stats=None, positions=None):
        self.step_losses: list[torch.Tensor] = list(step_losses or [])
        self.count, self.steps, self.time_s = count, steps, time_s
        self.stats: dict[str, torch.Tensor] = dict(stats or {})
        self.positions: list[tuple[int, int, int]] = [tuple(p) for p in positions or []]

    def add(self, loss: torch.Tensor, count, stats: dict[str, torch.Tensor], time_s: float, position) -> None:
        self.step_losses.append(loss.double() * count)
        self.count = self.count + count
        self.steps += 1
        self.time_s += time_s
        self.positions.append(tuple(position))
        for name, value in stats.items():
            self.stats[name] = self.stats.get(name, 0) + value.double()

    def losses(self, device: torch.device) -> torch.Tensor:
        if not self.step_losses:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.stack([x.to(device) for x in self.step_losses])

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint, on the CPU."""
        return {"step_losses": [x.cpu() for x in self.step_losses], "count": move_to(self.count, "cpu"),
                "steps": self.steps, "time_s": self.time_s, "positions": self.positions,
                "stats": {k: move_to(v, "cpu") for k, v in self.stats.items()}}

    @classmethod
    def merged(cls, saved: list[dict[str, Any]]) -> Window:
        """The windows of several processes as one (a run resumed on fewer processes): the same sums."""
        windows = [cls(**w) for w in saved]
        first = windows[0]
        for other in windows[1:]:
            first.step_losses = [a + b for a, b in zip(first.step_losses, other.step_losses)]
            first.count = first.count + other.count
            for name, value in other.stats.items():
                first.stats[name] = first.stats.get(name, 0) + value
        return first
