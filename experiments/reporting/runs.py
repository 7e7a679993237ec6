"""Run folders: each run's identity, settings and summary; one CSV row a run; mean ± std over seeds.

A run folder holds config.yaml (what ran) and, once it finished, summary.json. Runs are grouped by
data x model x optimizer (IDENTITY) and by every other setting that differs inside such a group, so different
settings are never averaged together; the seed is what the mean and the sample std (n - 1) run over.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from experiments.options import BOOKKEEPING_KEYS
from experiments.reporting import ResultsError

# The columns every table groups by, and the config entries they come from (the first one present).
IDENTITY = {"data": ("dataset.name", "benchmark.name"), "model": ("model.name",), "optimizer": ("optimizer.name",)}
# Summary numbers in the order the CSV lists them; any others follow alphabetically.
SUMMARY_ORDER = ("test_acc", "test_loss",
                 "best_val_ppl", "test_ppl", "final_val_ppl", "final_test_ppl", "train_ppl",
                 "average_accuracy", "forgetting", "backward_transfer", "forward_transfer", "learning_accuracy",
                 "train_loss", "top_hessian_eigenvalue", "buffer_admission_rate", "optimizer_state_bytes", "steps",
                 "wall_time_s")


@dataclass(frozen=True)
class Metric:
    """A table column: a summary key and the one format of its numbers, mean and std alike."""

    key: str
    header: str
    decimals: int
    scale: float = 1.0  # 100: a fraction shown in %

    def show(self, value: float) -> str:
        text = f"{self.scale * value:.{self.decimals}f}"
        return text.lstrip("-") if float(text) == 0 else text  # "0.00", never "-0.00"


def percent(key: str) -> Metric:
    return Metric(key, f"{key} (%)", decimals=2, scale=100.0)


# Table columns in order; a column appears when some run has its metric.
TABLE_METRICS = (
    percent("test_acc"),  # image classification
    Metric("test_loss", "test_loss", decimals=4),
    *(Metric(key, key, decimals=2)  # language modelling: perplexities
      for key in ("best_val_ppl", "test_ppl", "final_val_ppl", "final_test_ppl", "train_ppl")),
    *map(percent, ("average_accuracy", "forgetting", "backward_transfer", "forward_transfer",  # online learning
                   "learning_accuracy")),
    Metric("top_hessian_eigenvalue", "top_hessian_eigenvalue", decimals=2),
)


def _run_folders(paths: list[Path], marker: str) -> list[Path]:
    found = set()
    for path in paths:
        if not path.exists():
            raise ResultsError(f"{path} does not exist; pass run folders or folders above them.")
        found.update(m.parent.resolve() for m in path.rglob(marker) if m.parent.name != ".hydra")
    return sorted(found)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those holding summary.json) at or below each path, each once."""
    return _run_folders(paths, "summary.json")


def attempted_runs(paths: list[Path]) -> list[Path]:
    """Every run folder (config.yaml) below the paths, finished or not: a missing summary is a failed run."""
    return _run_folders(paths, "config.yaml")


def shown(path: Path) -> Path:
    """The path relative to the working directory when below it, so results/ holds no machine paths."""
    here = Path.cwd().resolve()
    return path.relative_to(here) if path.is_relative_to(here) else path


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}; lists become JSON text so they can be grouped."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def is_bookkeeping(key: str) -> bool:
    return any(key == entry or key.startswith(entry + ".") for entry in BOOKKEEPING_KEYS)


def _described(run_dir: Path) -> dict:
    """{"run_dir", "seed", "identity", "settings"} from the run's config.yaml."""
    config = flatten(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    identity_keys = {key for keys in IDENTITY.values() for key in keys}
    return {
        "run_dir": run_dir,
        "seed": config.get("seed"),
        "identity": tuple(next((config[k] for k in keys if k in config), None) for keys in IDENTITY.values()),
        "settings": {k: v for k, v in config.items() if k not in identity_keys and not is_bookkeeping(k)},
    }


def load_run(run_dir: Path, warn: bool = True) -> dict | None:
    """One run as {"run_dir", "seed", "identity", "settings", "summary"}; None (with a warning) skips it.
    `warn=False`: the run's own warnings are not printed (a caller that loaded it before printed them)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "finished":
        print(f"warning: skipping {run_dir}: status is {summary.get('status')!r}, not 'finished'",
              file=sys.stderr)
        return None
    if not (run_dir / "config.yaml").is_file():
        print(f"warning: skipping {run_dir}: no config.yaml next to summary.json", file=sys.stderr)
        return None
    for warning in summary.get("warnings", []) if warn else []:  # e.g. a diverged run: kept in the table, but said
        print(f"warning: {run_dir}: {warning}", file=sys.stderr)
    return {**_described(run_dir),
            "summary": {k: v for k, v in summary.items()
                        if k != "status" and (v is None or isinstance(v, (int, float)))}}


def load_attempt(run_dir: Path) -> dict:
    """A run as load_run sees it, with "failed": False; or a failed one, its identity from config.yaml."""
    run = load_run(run_dir) if (run_dir / "summary.json").is_file() else None
    if run is not None:
        return {**run, "failed": False}
    return {**_described(run_dir), "failed": True, "summary": {}}


def finished_runs(paths: list[Path], warn: bool = True) -> list[dict]:
    return [run for run in (load_run(d, warn) for d in find_runs(paths)) if run is not None]


def varying_settings(runs: list[dict]) -> list[str]:
    """Settings that take more than one value among runs of the same data x model x optimizer."""
    keys = set().union(*(run["settings"] for run in runs))
    values = defaultdict(set)
    for run in runs:
        for key in keys:
            values[run["identity"], key].add(json.dumps(run["settings"].get(key), sort_keys=True))
    return sorted({key for (_, key), seen in values.items() if len(seen) > 1})


def write_csv(runs: list[dict], varying: list[str], path: Path) -> None:
    optimizer_settings = sorted({k for r in runs for k in r["settings"] if k.startswith("optimizer.")})
    settings = optimizer_settings + [k for k in varying if k not in optimizer_settings]
    summary_keys = {k for r in runs for k in r["summary"]}
    numbers = [k for k in SUMMARY_ORDER if k in summary_keys] + sorted(summary_keys - set(SUMMARY_ORDER))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_dir", *IDENTITY, "seed", *settings, *numbers])
        for run in runs:
            writer.writerow([shown(run["run_dir"]), *run["identity"], run["seed"],
                             *(run["settings"].get(k, "") for k in settings),
                             *("" if run["summary"].get(k) is None else run["summary"][k] for k in numbers)])


def mean_and_std(values: list[float], metric: Metric) -> str:
    """"mean ± sample std" for two or more values, the value alone for one; "—" for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return metric.show(values[0])
    return f"{metric.show(statistics.mean(values))} ± {metric.show(statistics.stdev(values))}"


def sort_key(group: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in group)


def write_table(runs: list[dict], varying: list[str], path: Path, sources: list[str]) -> None:
    groups = defaultdict(list)
    for run in runs:
        groups[run["identity"] + tuple(run["settings"].get(k) for k in varying)].append(run)
    metrics = [m for m in TABLE_METRICS if any(r["summary"].get(m.key) is not None for r in runs)]
    header = [*IDENTITY, *varying, *(m.header for m in metrics), "seeds"]
    lines = [
        f"<!-- Generated by scripts/collect_results.py from {len(runs)} finished runs under "
        f"{', '.join(sources)}. Do not edit; run the script again. -->",
        "",
        "Mean ± sample standard deviation (n − 1) over seeds, both in the column's format (accuracies in %); "
        "a row of a single seed shows its value alone.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key in sorted(groups, key=sort_key):
        members = groups[key]
        seeds = [r["seed"] for r in members]
        if len(set(seeds)) < len(seeds):
            print(f"warning: {key} holds the same seed more than once ({seeds}); each run counts",
                  file=sys.stderr)
        cells = ["" if v is None else str(v) for v in key]
        for metric in metrics:
            values = [r["summary"][metric.key] for r in members if r["summary"].get(metric.key) is not None]
            finite = [v for v in values if math.isfinite(v)]
            partial = 0 < len(finite) < len(members)
            cells.append(mean_and_std(finite, metric) + (f" ({len(finite)} runs)" if partial else ""))
        cells.append(str(len(members)))
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def collect_runs(paths: list[Path], out: Path) -> tuple[list[dict], list[str]]:
    """<out>/runs.csv and <out>/table.md from every finished run below the paths; (the runs, the settings
    they are also grouped by)."""
    runs = finished_runs(paths)
    if not runs:
        raise ResultsError(f"no finished runs (summary.json with status 'finished') under "
                           f"{', '.join(map(str, paths))}.")
    varying = varying_settings(runs)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, varying, out / "runs.csv")
    write_table(runs, varying, out / "table.md", [str(p) for p in paths])
    return runs, varying
