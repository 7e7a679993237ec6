"""python -m experiments.toy [problem=...] [overrides]: run the toy experiments, write JSON, figures and README.md.

Settings are checked before any job starts; a bad one ends in one message and exit code 1. The
canonical settings write results/toy/; any other settings write runs/toy/<what they change>/, and
the last line printed says where.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from experiments.engine import exit_on_user_error
from experiments.toy.escape import run_escape
from experiments.toy.figures import draw_figures
from experiments.toy.parallel import Jobs, job_pool
from experiments.toy.quadratic import run_quadratic
from experiments.toy.report import write_report
from experiments.toy.search import run_search
from experiments.toy.settings import REPOSITORY, check_config, output_dir, problem_settings

CONFIG_DIR = REPOSITORY / "configs"
EXPERIMENTS: dict[str, Callable[[dict[str, Any], Jobs], dict[str, Any]]] = {
    "goldstein_price": functools.partial(run_search, "goldstein_price"),
    "ackley": functools.partial(run_search, "ackley"),
    "flat_sharp": run_escape,
    "quadratic": run_quadratic,
}
# Every float written is rounded to this many significant digits, so the files are the same bytes on
# every machine: round-off that differs between BLAS builds (last digits of an eigenvalue) is cut off.
SIGNIFICANT_DIGITS = 8

log = logging.getLogger(__name__)


def rounded(value: Any) -> Any:
    """`value` with every float in it rounded to SIGNIFICANT_DIGITS significant digits (ints, bools kept)."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {key: rounded(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def canonical_config() -> DictConfig:
    """configs/toy.yaml with no overrides: the settings of `make reproduce`."""
    if GlobalHydra.instance().is_initialized():  # inside the Hydra app
        return compose(config_name="toy")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="toy")


def run(cfg: DictConfig) -> Path:
    """Check the settings, run the chosen problems and write their results; returns the folder written."""
    problems = check_config(cfg)
    settings = {problem: problem_settings(cfg, problem) for problem in problems}
    out_dir, changed = output_dir(cfg, canonical_config())
    out_dir.mkdir(parents=True, exist_ok=True)
    with job_pool(cfg.workers) as jobs:
        for problem in problems:
            run_one(problem, settings[problem], jobs, out_dir)
    write_report(out_dir)
    if changed:
        log.info("Results in %s (README.md, JSON, figures): settings differ from `make reproduce`'s in %s, so "
                 "results/toy/ is left as it was.", _shown(out_dir), ", ".join(changed))
    else:
        log.info("Results in %s (README.md, JSON, figures): the canonical settings of `make reproduce`.",
                 _shown(out_dir))
    return out_dir


def _shown(path: Path) -> Path:
    """A path below the working directory relative to it, as a user would type it."""
    here = Path.cwd().resolve()
    return path.relative_to(here) if path.is_absolute() and path.is_relative_to(here) else path


def run_one(problem: str, settings: dict[str, Any], jobs: Jobs, out_dir: Path) -> None:
    started = time.perf_counter()
    log.info("[%s] running: %s", problem, json.dumps(settings))
    result = rounded(EXPERIMENTS[problem](settings, jobs))
    path = out_dir / f"{problem}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    figures = draw_figures(result, out_dir)
    log.info("[%s] done in %.1f s: %s", problem, time.perf_counter() - started,
             ", ".join(str(_shown(p)) for p in [path, *figures]))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="toy")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


if __name__ == "__main__":
    main()
