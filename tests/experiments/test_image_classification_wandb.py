"""Weights & Biases: offline by default, the logged metrics in the run folder, one id across restarts;
logger=none works where wandb cannot even be imported."""

from __future__ import annotations

import json
import subprocess
import sys

from experiments.engine.metrics import MetricsLog
from experiments.image_classification import run
from tests.experiments.image_runner_helpers import REPO, compose_config, metrics_lines


def wandb_history(run_file) -> list[dict]:
    """The history records of an offline run's .wandb transaction log, read with wandb's own CLI."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def test_an_offline_wandb_run_holds_the_logged_metrics_and_keeps_its_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config("logger=wandb", "trainer.max_steps=8", "trainer.log_interval=4", "trainer.eval_interval=8")
    run(cfg, tmp_path)
    run_id = (tmp_path / "wandb_id.txt").read_text().strip()
    [offline] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    history = wandb_history(offline / f"run-{run_id}.wandb")
    logged = {(h["_step"], k): v for h in history for k, v in h.items() if not k.startswith("_")}
    for line in metrics_lines(tmp_path):
        for key, value in line.items():
            if key != "step":
                assert logged[(line["step"], key)] == value, key

    # A restart in the same folder opens the same W&B run (a second offline folder with the same id).
    MetricsLog(tmp_path, cfg.logger, cfg, enabled=True, resume_bytes=None).close()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 2


def test_logger_none_runs_where_wandb_cannot_be_imported(tmp_path):
    script = f"""
import sys
sys.modules["wandb"] = None  # any `import wandb` now raises ImportError
from experiments.image_classification import run
from tests.experiments.image_runner_helpers import compose_config
summary = run(compose_config("logger=none", "trainer.max_steps=2"), {str(tmp_path / 'none')!r}).summary
print("finished:", summary["status"])
try:
    run(compose_config("logger=wandb", "trainer.max_steps=2"), {str(tmp_path / 'wandb')!r})
except ImportError as error:
    print("wandb refused:", error)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "finished: finished" in done.stdout
    assert "wandb refused: logger=wandb needs the wandb package" in done.stdout and "logger=none" in done.stdout
