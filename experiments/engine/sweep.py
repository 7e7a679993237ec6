"""A runner's Hydra entry point, and what a run hands back to a sweeper: its `select.metric`, never a test one.

    @hydra.main(config_path="../configs/<runner>", config_name="<runner>", version_base="1.3")
    def main(cfg: DictConfig) -> float | None:
        return run_in_hydra(cfg, run)          # run(cfg, run_dir) -> TrainResult
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.engine.loop import TrainResult, exit_on_user_error
from experiments.options import UserError


def run_in_hydra(cfg: DictConfig, run: Callable[[DictConfig, Path], TrainResult]) -> float | None:
    """`run` in Hydra's output folder (the run folder), a user error as one message and exit code 1, and the
    run's select.metric returned for a sweeper."""
    with exit_on_user_error():
        return selected_value(cfg, run(cfg, Path(HydraConfig.get().runtime.output_dir)).summary)


def selected_value(cfg: DictConfig, summary: dict[str, Any] | None) -> float | None:
    """summary[cfg.select.metric] (None on processes other than the main one, which have no summary).

    Under an hparams_search, `optimized_metric` names the metric the sweeper optimises: a run that did not
    report it is an error, so a search never receives None for a trial.
    """
    if summary is None:
        return None
    metric = cfg.get("optimized_metric") or cfg.select.metric
    value = summary.get(metric)
    if value is None and cfg.get("optimized_metric"):
        reported = sorted(k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise UserError(f"optimized_metric={metric} is not in this run's summary.json, which reports "
                         f"{', '.join(reported)}. Set optimized_metric to one of its validation metrics, e.g. "
                         f"optimized_metric={cfg.select.metric} with a validation split.")
    return value
