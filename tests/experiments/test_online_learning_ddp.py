"""torchrun --nproc_per_node=2 (gloo, CPU) runs the online-learning benchmark: both processes end with
identical weights and optimizer state, and the main process writes the whole accuracy matrix, with every
task's split evaluated in full across the two processes."""

from __future__ import annotations

import json

from experiments.data.continual import build_benchmark
from tests.experiments.image_runner_helpers import compose_runner_config, metrics_lines
from tests.experiments.test_image_classification_ddp import assert_ranks_identical, run_two_processes

OVERRIDES = ("benchmark.train_size=100", "benchmark.test_size=51", "optimizer=adam_cm",
             "trainer.log_interval=4", "trainer.checkpoint_interval=8", "trainer.flatness_at_end=false")


def test_two_processes_run_the_benchmark_and_agree(tmp_path):
    states = run_two_processes(tmp_path, *OVERRIDES, runner="experiments.online_learning",
                               config=("online_learning", "experiment=synthetic_tasks"))
    assert_ranks_identical(states)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["tasks_trained"] == 5
    assert len(summary["accuracy_matrix"]) == 5 and all(len(row) == 5 for row in summary["accuracy_matrix"])
    assert (tmp_path / "run" / "accuracy_matrix.png").is_file()
    # 51 test items per task (odd, so the processes' shares differ): every accuracy is a multiple of 1/51.
    benchmark = build_benchmark(**compose_runner_config("online_learning", "experiment=synthetic_tasks",
                                                        *OVERRIDES).benchmark)
    assert [len(task.test) for task in benchmark.tasks] == [51] * 5
    for row in summary["accuracy_matrix"] + [summary["baseline_accuracy"]]:
        assert all(abs(51 * acc - round(51 * acc)) < 1e-9 for acc in row)
    # 90 training images per task: 9 global batches of 10 (5 per process) per task.
    assert summary["steps"] == 45 and metrics_lines(tmp_path / "run")[-1]["step"] == 45
