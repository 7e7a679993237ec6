"""The Makefile's targets, as make itself expands them: sweeps never delete a user's runs, and targets
that run several processes give each one thread."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def recipe(target: str) -> list[str]:
    """The commands `make` would run for target (dry run; the venv's stamp counted as up to date)."""
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", target], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.replace("\\\n", " ").splitlines() if line.strip()]


pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.mark.parametrize("target, runs", [("synthetic-sweep", "synthetic"), ("lm-sweep", "synthetic_lm"),
                                          ("online-sweep", "synthetic_tasks")])
def test_a_sweep_target_deletes_and_writes_only_its_own_runs(target, runs):
    commands = recipe(target)
    deleted = [c.split()[-1] for c in commands if c.startswith("rm ")]
    assert deleted == [f"runs/make_sweeps/{runs}"]  # never runs/<experiment>, where the README's commands write
    [train] = [c for c in commands if " -m experiments." in c]
    assert "runs_dir=runs/make_sweeps" in train


def test_reproduce_runs_its_worker_processes_with_one_thread_each():
    [command] = [c for c in recipe("reproduce") if "experiments.toy" in c]
    assert re.match(r"OMP_NUM_THREADS=1 \S+ -m experiments\.toy", command)
