"""The NaN rule: a run stops at the first non-finite training loss or weight, on every process together
(each check sums over the processes first, so all of them raise the same message), and says what to
change and what was kept. Checked at every log line and before every checkpoint, so a non-finite state
is never saved."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from experiments.engine import distributed
from experiments.engine.distributed import Placement
from experiments.engine.length import RunLength
from experiments.engine.metrics import METRICS_NAME
from experiments.engine.state import Window


class NonFiniteLossError(RuntimeError):
    """The training loss (or a weight) became NaN or infinite; the run stops without saving the bad state."""


def lower_lr(lr: float) -> str:
    return f"Lower the learning rate (now {lr:g}), e.g. to a tenth: optimizer.lr={lr / 10:g},"


class FiniteRule:
    def __init__(self, lr: float, run_dir: Path, placement: Placement, length: RunLength):
        self.lr, self.run_dir, self.placement, self.length = lr, run_dir, placement, length

    def check_losses(self, losses: torch.Tensor, window: Window, saved_step: int | None) -> None:
        """Raise NonFiniteLossError naming the first step whose (all-process) loss is not finite."""
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad) == 0:
            return
        at = int(bad[0])
        step, stage, epoch = window.positions[at]
        raise NonFiniteLossError(
            f"The training loss is {float(losses[at])} at step {step} ({self.length.where(stage, epoch)}). "
            f"{self._advice(saved_step)}")

    def check_state(self, model: nn.Module, window: Window, step: int, saved_step: int | None) -> None:
        """Before a checkpoint: the unlogged losses and every weight finite, on all processes together."""
        losses = window.losses(self.placement.device)
        weights_ok = torch.stack([_local(p).detach().isfinite().all() for p in model.parameters()]).all()
        sums = distributed.sum_across_processes(
            {"losses": losses, "weights_bad": (~weights_ok).double()}, self.placement)
        self.check_losses(sums["losses"], window, saved_step)
        if float(sums["weights_bad"]) > 0:
            raise NonFiniteLossError(f"A weight became NaN or infinite by step {step}, with a finite loss. "
                                     f"{self._advice(saved_step)}")

    def _advice(self, saved_step: int | None) -> str:
        fix = f"{lower_lr(self.lr)} or clip gradients (trainer.grad_clip=1.0)."
        if saved_step is None:
            return f"{fix} No checkpoint was written yet; {METRICS_NAME} is kept."
        # The checkpoint holds this config: a rerun with a change would be refused in this folder.
        return (f"{fix} The last good checkpoint (step {saved_step}) and {METRICS_NAME} are kept in "
                f"{self.run_dir}. A changed config trains in a folder of its own: add run_name=<new name> to "
                f"the command, or delete {self.run_dir} to start over.")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t
