"""A run killed with SIGKILL and started again with the same command ends exactly where an uninterrupted run does.

CPU, exact: every tensor of the final checkpoint's model and optimizer state is bitwise equal, and
so are metrics.jsonl and summary.json apart from timings.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from tests.experiments.image_runner_helpers import (
    assert_same_training_state, metrics_lines, run_cli, start_cli, summary, without_timings)


def kill_after_first_checkpoint(args: list[str], run_dir: Path, deadline_s: float = 120) -> None:
    process = start_cli(*args)
    started = time.monotonic()
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()}"
        assert time.monotonic() - started < deadline_s, "no checkpoint within the deadline"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert not saved["progress"]["finished"], "killed too late: the run had finished (make it longer)"


def check_resume_matches_uninterrupted(tmp_path: Path, optimizer: str, *overrides: str) -> None:
    def args(runs: str) -> list[str]:
        return ["experiment=smoke", f"runs_dir={tmp_path / runs}", f"optimizer={optimizer}", *overrides]

    folder = Path("smoke") / f"synthetic_small_cnn_{optimizer}_seed0"
    kill_after_first_checkpoint(args("killed"), tmp_path / "killed" / folder)
    resumed = run_cli(*args("killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 3" in resumed.stdout  # Hydra logs to stdout
    uninterrupted = run_cli(*args("uninterrupted"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    a, b = tmp_path / "killed" / folder, tmp_path / "uninterrupted" / folder
    assert_same_training_state(a / "checkpoint.pt", b / "checkpoint.pt")
    assert without_timings(summary(a)) == without_timings(summary(b))
    assert [without_timings(x) for x in metrics_lines(a)] == [without_timings(x) for x in metrics_lines(b)]


# 512 items in batches of 32 over 4 epochs: 64 steps, checkpoints every 3 (the kill lands mid-epoch).
LONGER = ("trainer.max_steps=null", "trainer.epochs=4", "trainer.checkpoint_interval=3", "trainer.log_interval=4",
          "trainer.eval_interval=20", "trainer.flatness_interval=25", "model.width=16")


def test_a_killed_run_resumes_bit_for_bit(tmp_path):
    check_resume_matches_uninterrupted(tmp_path, "adam_cm", *LONGER)


@pytest.mark.slow
def test_a_killed_sam_run_with_loader_workers_resumes_bit_for_bit(tmp_path):
    check_resume_matches_uninterrupted(tmp_path, "sam_adam_cm", *LONGER, "trainer.num_workers=2",
                                       "trainer.grad_clip=0.5", "scheduler.warmup_steps=10", "trainer.epochs=2")
