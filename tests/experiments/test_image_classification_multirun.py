"""Hydra multiruns: one folder per run, named by its overrides, that scripts/collect_results.py turns into one table."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.experiments.image_runner_helpers import REPO, run_cli, summary

TINY = ("experiment=smoke", "trainer.max_steps=3", "trainer.flatness_max_iter=3", "trainer.eval_interval=3")


def collect(runs, out) -> list[dict]:
    done = subprocess.run([sys.executable, "scripts/collect_results.py", str(runs), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(out / "runs.csv") as f:
        return list(csv.DictReader(f))


def test_a_sweep_gives_one_folder_per_run_and_one_table(tmp_path):
    done = run_cli("-m", "optimizer=adam,adam_cm", "seed=0,1", *TINY, f"runs_dir={tmp_path / 'runs'}",
                   "trainer.num_workers=0", "logger=none", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "runs" / "smoke" / "multirun"
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # The overrides, sorted, less those that change no result (experiment, runs_dir, num_workers, logger).
    suffix = ",trainer.eval_interval=3,trainer.flatness_max_iter=3,trainer.max_steps=3"
    assert folders == [f"optimizer={o},seed={s}{suffix}" for o in ("adam", "adam_cm") for s in (0, 1)]
    assert all(summary(sweep / f)["status"] == "finished" for f in folders)

    rows = collect(tmp_path / "runs", tmp_path / "results")
    assert sorted((r["optimizer"], r["seed"]) for r in rows) == [
        ("adam", "0"), ("adam", "1"), ("adam_cm", "0"), ("adam_cm", "1")]
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| synthetic | small_cnn | adam |" in table and "| synthetic | small_cnn | adam_cm |" in table
    assert table.count("| 2 |") == 2  # two seeds in each row


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_a_sweep(tmp_path):
    done = run_cli("-m", "hydra/launcher=local", "seed=0,1", *TINY, f"runs_dir={tmp_path}", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "smoke" / "multirun"
    suffix = ",trainer.eval_interval=3,trainer.flatness_max_iter=3,trainer.max_steps=3"
    assert all(summary(sweep / f"seed={s}{suffix}")["status"] == "finished" for s in (0, 1))


def test_a_run_that_fails_in_a_sweep_does_not_cancel_the_others(tmp_path):
    # lr 1e9 turns the loss into NaN: that run stops with its message; the next one still trains.
    done = run_cli("-m", "optimizer=sgd", "optimizer.lr=1e9,0.01", *TINY, f"runs_dir={tmp_path}", timeout=300)
    assert done.returncode == 1
    assert "Error: The training loss is nan" in done.stderr
    sweep = tmp_path / "smoke" / "multirun"
    finished = [p.parent.name for p in sweep.glob("*/summary.json")]
    assert len(finished) == 1 and "optimizer.lr=0.01" in finished[0]
    assert summary(sweep / finished[0])["status"] == "finished"


def test_the_slurm_launcher_without_slurm_is_one_message(tmp_path):
    done = run_cli("-m", "hydra/launcher=slurm", "experiment=smoke", f"runs_dir={tmp_path}",
                   extra_env={"PATH": str(tmp_path)})  # no srun or sbatch on it
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: hydra/launcher=slurm submits each run as a SLURM job, but SLURM was not "
                                  "found on this machine")
    assert "--launcher print" in done.stderr and list(tmp_path.iterdir()) == []
