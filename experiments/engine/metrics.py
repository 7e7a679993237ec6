"""Metrics to the run folder's metrics.jsonl and, with logger=wandb, to Weights & Biases (imported lazily)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from experiments.options import UserError

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
WANDB_ID_NAME = "wandb_id.txt"
LOGGER_NAMES = ("wandb", "none")


class WandbMissingError(UserError, ImportError):
    """logger=wandb where the wandb package cannot be imported."""


class MetricsLog:
    """Appends one JSON line per logged step; on resume first cuts the file back to the checkpoint's length,
    so the lines match an uninterrupted run's. Does nothing on processes other than the main one."""

    def __init__(self, run_dir: Path, logger_cfg: DictConfig, full_cfg: DictConfig, *, enabled: bool,
                 resume_bytes: int | None):
        self.enabled = enabled
        self.path = run_dir / METRICS_NAME
        self._wandb_run = None
        if not enabled:
            return
        name = logger_cfg.get("name")
        if name not in LOGGER_NAMES:
            raise UserError(f"Unknown logger {name!r}. Valid names: {', '.join(LOGGER_NAMES)} "
                             "(logger=<name>).")
        with open(self.path, "a+b") as f:  # creates the file if missing
            f.truncate(resume_bytes or 0)
        if name == "wandb":
            self._wandb_run = _start_wandb(run_dir, logger_cfg, full_cfg)

    def write(self, line: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in line.items() if k != "step"}, step=line["step"])

    def size(self) -> int:
        return self.path.stat().st_size if self.enabled else 0

    def close(self, summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        if self._wandb_run is None:
            return
        if summary:
            self._wandb_run.summary.update({k: v for k, v in summary.items() if v is not None})
        self._wandb_run.finish(exit_code=exit_code)
        self._wandb_run = None


def _start_wandb(run_dir: Path, logger_cfg: DictConfig, full_cfg: DictConfig):
    try:
        import wandb
    except ImportError as error:
        raise WandbMissingError(f"logger=wandb needs the wandb package ({error}); install it or pass "
                          "logger=none.") from error
    id_file = run_dir / WANDB_ID_NAME
    if not id_file.exists():  # one id for the run folder: a restarted run continues the same W&B run
        id_file.write_text(uuid.uuid4().hex[:16])
    options = OmegaConf.to_container(logger_cfg, resolve=True)
    return wandb.init(project=options["project"], entity=options["entity"], mode=options["mode"],
                      group=options["group"], tags=options["tags"], name=options["run_name"],
                      dir=str(run_dir), id=id_file.read_text().strip(), resume="allow",
                      config=OmegaConf.to_container(full_cfg, resolve=True))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    tmp = run_dir / (SUMMARY_NAME + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(run_dir / SUMMARY_NAME)


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / SUMMARY_NAME).read_text())
