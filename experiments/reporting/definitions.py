"""The paper's results, one definition each in configs/paper/<name>.yaml, and where their runs and results go.

A definition has a `title`, a `kind` (KINDS), the settings it `tune`s on validation, its `sweeps` (Hydra
multiruns of one runner: {key: values}; a sweep may name its own `runner`), `steps_per_run`, and a `mini`
version (its own `sweeps`) that runs the same pipeline at toy scale on embedded data. Runs land in
<root>/runs/paper[_mini]/<name>/<sweep>/<overrides>, results in <root>/results/paper[_mini]/<name>/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from experiments.reporting import ResultsError

REPO = Path(__file__).resolve().parents[2]
DEFINITIONS = REPO / "configs" / "paper"
KINDS = ("table", "curves", "lr_sensitivity", "ablation", "overhead")


def definitions(folder: Path = DEFINITIONS) -> dict[str, dict]:
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        definition = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if definition.get("kind") not in KINDS:
            raise ResultsError(f"{path}: kind={definition.get('kind')!r}; valid kinds: {', '.join(KINDS)}.")
        found[path.stem] = definition
    return found


def sweeps(definition: dict, mini: bool) -> list[tuple[str, dict[str, list]]]:
    """(runner, {key: values}) of each multirun; a sweep may name its own runner."""
    source = definition["mini"] if mini else definition
    result = []
    for sweep in source["sweeps"]:
        sweep = dict(sweep)
        runner = sweep.pop("runner", definition.get("runner"))
        result.append((runner, {k: v if isinstance(v, list) else [v] for k, v in sweep.items()}))
    return result


def run_count(definition: dict, mini: bool) -> int:
    return sum(math.prod(len(v) for v in grid.values()) for _, grid in sweeps(definition, mini))


def experiments_of(definition: dict) -> set[tuple[str, str]]:
    """(runner, experiment) of every run of the definition's full sweeps."""
    return {(runner, experiment)
            for runner, grid in sweeps(definition, mini=False) for experiment in grid["experiment"]}


def runs_dir(root: Path, name: str, mini: bool) -> Path:
    return root / "runs" / ("paper_mini" if mini else "paper") / name


def results_dir(root: Path, name: str, mini: bool) -> Path:
    return root / "results" / ("paper_mini" if mini else "paper") / name


def in_repository(path: Path) -> str:
    """A path relative to the repository when inside it (what the commands and messages show)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def override_value(value) -> str:
    """A value as a Hydra override writes it: lists, dicts and booleans as JSON without spaces."""
    return json.dumps(value).replace(" ", "") if isinstance(value, (list, dict, bool)) else str(value)
