"""python -m experiments.toy [problem=...] [overrides]: run the toy experiments, write JSON, figures and README.md."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.toy.escape import run_escape
from experiments.toy.figures import draw_figures
from experiments.toy.parallel import Jobs, job_pool
from experiments.toy.quadratic import run_quadratic
from experiments.toy.report import write_report
from experiments.toy.search import run_search

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS: dict[str, Callable[[dict[str, Any], Jobs], dict[str, Any]]] = {
    "goldstein_price": functools.partial(run_search, "goldstein_price"),
    "ackley": functools.partial(run_search, "ackley"),
    "flat_sharp": run_escape,
    "quadratic": run_quadratic,
}
SHARED = ("optimizers", "capacity", "decay", "rho")  # top-level values every optimizer comparison uses
SHORTCUTS = ("steps", "noise", "seeds")  # top-level values that, when set, replace the problem's own

log = logging.getLogger(__name__)


def problem_settings(cfg: DictConfig, problem: str) -> dict[str, Any]:
    """The problem's own settings, with the shared ones and any command-line shortcut applied."""
    values = OmegaConf.to_container(cfg, resolve=True)
    settings = values[problem]
    if problem == "quadratic":
        settings["capacity"] = values["capacity"]
        return settings
    settings.update({key: values[key] for key in SHARED})
    settings.update({key: values[key] for key in SHORTCUTS if values[key] is not None})
    if values["lr"] is not None:
        settings["lr"], settings["lr_sweep"] = values["lr"], [values["lr"]]
    if settings["lr"] not in settings["lr_sweep"]:
        raise ValueError(
            f"{problem}.lr={settings['lr']} is not in {problem}.lr_sweep={settings['lr_sweep']}: the figures "
            f"show runs of the sweep. Add it to the sweep, or set lr=... alone to run that one learning rate."
        )
    return settings


def chosen_problems(problem: str) -> list[str]:
    if problem == "all":
        return list(EXPERIMENTS)
    if problem not in EXPERIMENTS:
        raise ValueError(f"problem={problem!r} is not a toy experiment. Choose one of: {', '.join(EXPERIMENTS)}, all.")
    return [problem]


def run(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with job_pool(cfg.workers) as jobs:
        for problem in chosen_problems(cfg.problem):
            run_one(problem, problem_settings(cfg, problem), jobs, out_dir)
    write_report(out_dir)
    log.info("Wrote %s", out_dir / "README.md")


def run_one(problem: str, settings: dict[str, Any], jobs: Jobs, out_dir: Path) -> None:
    started = time.perf_counter()
    log.info("[%s] running: %s", problem, json.dumps(settings))
    result = EXPERIMENTS[problem](settings, jobs)
    path = out_dir / f"{problem}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    figures = draw_figures(result, out_dir)
    log.info("[%s] done in %.1f s: %s", problem, time.perf_counter() - started,
             ", ".join(str(p) for p in [path, *figures]))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="toy")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
