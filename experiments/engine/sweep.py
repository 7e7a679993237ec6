"""What a run hands back to a Hydra sweeper: the runner's `select.metric` from its summary, never a test one."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


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
        raise ValueError(f"optimized_metric={metric} is not in this run's summary.json, which reports "
                         f"{', '.join(reported)}. Set optimized_metric to one of its validation metrics, e.g. "
                         f"optimized_metric={cfg.select.metric} with a validation split.")
    return value
