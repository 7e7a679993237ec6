"""How long a run trains: epochs per stage and total optimizer steps; the length and a position in words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.options import UserError


@dataclass(frozen=True)
class RunLength:
    """trainer.max_steps, when given, decides a single-stage run's length (epochs extend to reach it, as in
    most trainers); over several stages it only caps the steps."""

    epochs: int  # per stage
    total_steps: int
    batches_per_epoch: tuple[int, ...]  # of each stage
    asked_epochs: int  # trainer.epochs
    max_steps: int | None  # trainer.max_steps

    @classmethod
    def of(cls, epochs: int, max_steps: int | None, batches_per_epoch: Sequence[int], *, batch_size: int,
           world_size: int, stage_sizes: Sequence[int]) -> RunLength:
        natural = epochs * sum(batches_per_epoch)
        if natural == 0:
            sizes = ", ".join(map(str, stage_sizes))
            raise UserError(f"No full batch to train on: trainer.batch_size={batch_size} over "
                            f"{world_size} process(es) and training set(s) of {sizes} items, "
                            f"trainer.epochs={epochs}. Lower the batch size or use more data.")
        if max_steps is None or max_steps <= natural:
            run_epochs, total = epochs, min(natural, max_steps or natural)
        elif len(batches_per_epoch) == 1:
            run_epochs, total = -(-max_steps // batches_per_epoch[0]), max_steps
        else:
            run_epochs, total = epochs, natural
        return cls(run_epochs, total, tuple(batches_per_epoch), epochs, max_steps)

    def in_words(self) -> str:
        stages = len(self.batches_per_epoch)
        epochs = f"{self.epochs} epoch(s) of {'+'.join(map(str, self.batches_per_epoch))} steps"
        if stages > 1:
            epochs += f" per stage, {stages} stages"
        max_steps = self.max_steps
        if max_steps is not None and self.epochs > self.asked_epochs:
            return (f"trainer.max_steps={max_steps} decides: {epochs}, "
                    f"trainer.epochs={self.asked_epochs} extended")
        if max_steps is not None and max_steps < self.epochs * sum(self.batches_per_epoch):
            return f"{epochs}, cut at trainer.max_steps={max_steps}"
        if max_steps is not None and stages > 1 and max_steps > self.total_steps:
            return f"{epochs}; trainer.max_steps={max_steps} only caps a run of several stages"
        return epochs

    def where(self, stage: int, epoch: int) -> str:
        """'epoch 2/4' or 'stage 3/5, epoch 1/1' from 0-based positions."""
        where = f"epoch {epoch + 1}/{self.epochs}"
        stages = len(self.batches_per_epoch)
        return where if stages == 1 else f"stage {stage + 1}/{stages}, {where}"
