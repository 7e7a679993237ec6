"""Shared by the engine and image-runner tests: the real configs composed in-process, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.engine import checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
RUNNER = "experiments.image_classification"
TIMING_KEYS = {"step_time_s", "wall_time_s"}  # with throughputs (<items>_per_s), the only values allowed to differ


def compose_config(*overrides: str) -> DictConfig:
    """The image runner's primary config with experiment=smoke (synthetic data, small CNN, CPU) and `overrides`."""
    return compose_runner_config("image_classification", "experiment=smoke", *overrides)


def compose_runner_config(config_name: str, *overrides: str) -> DictConfig:
    """configs/<config_name>/<config_name>.yaml, the real file a runner reads (in its own config root), with
    `overrides`."""
    with initialize_config_dir(config_dir=str(REPO / "configs" / config_name), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def run_cli(*args: str, timeout: float = 120, extra_env: dict[str, str] | None = None,
            launcher: tuple[str, ...] = (sys.executable, "-m"), runner: str = RUNNER) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true", **(extra_env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*launcher, runner, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(*args: str, runner: str = RUNNER) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", runner, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_after_first_checkpoint(args: list[str], run_dir: Path, deadline_s: float = 120,
                                runner: str = RUNNER) -> dict[str, Any]:
    """Start the runner and SIGKILL it as soon as its first checkpoint exists (mid-run); that checkpoint."""
    process = start_cli(*args, runner=runner)
    started = time.monotonic()
    while not checkpoint.trainer_path(run_dir).exists():
        assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()}"
        assert time.monotonic() - started < deadline_s, "no checkpoint within the deadline"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = checkpoint.read(run_dir)
    assert not saved["progress"]["finished"], "killed too late: the run had finished (make it longer)"
    return saved


def check_killed_run_resumes_exactly(tmp_path: Path, args, folder: Path, runner: str = RUNNER):
    """SIGKILL `args("killed")` after its first checkpoint, run the same command again to the end, and run
    `args("uninterrupted")`: the final training state, summary and metrics (timings apart) must be equal.
    Returns the two run folders, the resumed run's process and the checkpoint the kill left."""
    a, b = tmp_path / "killed" / folder, tmp_path / "uninterrupted" / folder
    saved = kill_after_first_checkpoint(args("killed"), a, runner=runner)
    resumed = run_cli(*args("killed"), runner=runner)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = run_cli(*args("uninterrupted"), runner=runner)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert_same_training_state(a, b)
    assert without_timings(summary(a)) == without_timings(summary(b))
    assert [without_timings(x) for x in metrics_lines(a)] == [without_timings(x) for x in metrics_lines(b)]
    return a, b, resumed, saved


def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def without_timings(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS and not k.endswith("_per_s")}


def assert_same_training_state(a: Path, b: Path) -> None:
    """Bitwise equal model and optimizer state in the checkpoints of two run folders (every tensor,
    number and flag)."""
    first, second = checkpoint.read(a), checkpoint.read(b)
    for part in ("model", "optimizer", "scheduler", "progress"):
        _assert_equal(first[part], second[part], part)


def _assert_equal(x: Any, y: Any, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and torch.equal(x, y), f"tensors differ at {where}"
    elif isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), f"keys differ at {where}"
        for k in x:
            _assert_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), f"lengths differ at {where}"
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_equal(u, v, f"{where}[{i}]")
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"
