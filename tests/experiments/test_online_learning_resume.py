"""A run of the online-learning runner killed with SIGKILL in the middle of a task (not at a boundary)
resumes bit for bit on the CPU: model, optimizer, scheduler, position, metrics, accuracy matrix and
online accuracy equal those of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import torch

from experiments.engine import checkpoint

from experiments.online_learning import run
from tests.experiments.image_runner_helpers import (
    assert_same_training_state, compose_runner_config, kill_after_first_checkpoint, metrics_lines, summary,
    without_timings)

RUNNER = "experiments.online_learning"
# 5 tasks of 360 training images: 36 steps per task; checkpoints every 10 steps never fall on a task's end.
ARGS = ("experiment=synthetic_tasks", "benchmark.train_size=400", "benchmark.test_size=50",
        "optimizer=adam_cm", "trainer.checkpoint_interval=10", "trainer.log_interval=7")
FOLDER = Path("synthetic_tasks") / "synthetic_tasks_mlp_adam_cm_seed0"


def test_a_run_killed_mid_task_resumes_bit_for_bit(tmp_path, monkeypatch):
    # One thread everywhere (small matrices on shared cores), so the killed process and this one agree.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        killed, uninterrupted = tmp_path / "killed" / FOLDER, tmp_path / "uninterrupted" / FOLDER
        kill_after_first_checkpoint([*ARGS, f"runs_dir={tmp_path / 'killed'}"], killed, runner=RUNNER)
        progress = checkpoint.read(killed)["progress"]
        assert progress["batch"] != 0, f"the kill should land inside a task, not at its end: {progress}"
        assert not (killed / "summary.json").exists()
        # Resumed and uninterrupted in this process: the same config as the command line's.
        for folder, runs in ((killed, "killed"), (uninterrupted, "uninterrupted")):
            run(compose_runner_config("online_learning", *ARGS, f"runs_dir={tmp_path / runs}"), folder)
    finally:
        torch.set_num_threads(threads)

    assert_same_training_state(killed, uninterrupted)
    a, b = summary(killed), summary(uninterrupted)
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["online_accuracy"] == b["online_accuracy"]
    assert without_timings(a) == without_timings(b)
    assert [without_timings(x) for x in metrics_lines(killed)] == [without_timings(x) for x in
                                                                   metrics_lines(uninterrupted)]
    assert (killed / "accuracy_matrix.png").is_file()
