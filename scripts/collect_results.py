"""Collect finished runs into one CSV and a mean ± std table over seeds.

    python scripts/collect_results.py RUN_DIR_OR_PARENT... [--out results/image_classification]

Every `summary.json` below the given folders is one run; its `config.yaml` (next to it) says what ran.
Writes `<out>/runs.csv` (one row per run) and `<out>/table.md`: runs grouped by data x model x optimizer
and by every other setting that differs inside such a group (e.g. optimizer.lr in a sweep), so different
settings are never averaged together; the seed is what the mean and the sample std (n - 1) run over.
Runs whose summary status is not "finished" are skipped with a warning.

Every runner's folders work: the "data" column is dataset.name (image classification, language
modelling) or benchmark.name (online learning). The table shows the metrics the runs have, each with
one number format for its mean and its std (see TABLE_METRICS).
"""

from __future__ import annotations

import argparse
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


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those holding summary.json) at or below each path, each once."""
    found = set()
    for path in paths:
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist; pass run folders or folders above them.")
        found.update(summary.parent.resolve() for summary in path.rglob("summary.json"))
    return sorted(found)


def shown(run_dir: Path) -> Path:
    """The run folder relative to the working directory when below it, so results/ holds no machine paths."""
    here = Path.cwd().resolve()
    return run_dir.relative_to(here) if run_dir.is_relative_to(here) else run_dir


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
    config = flatten(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    identity_keys = {key for keys in IDENTITY.values() for key in keys}
    settings = {k: v for k, v in config.items() if k not in identity_keys and not is_bookkeeping(k)}
    return {
        "run_dir": run_dir,
        "seed": config.get("seed"),
        "identity": tuple(next((config[k] for k in keys if k in config), None) for keys in IDENTITY.values()),
        "settings": settings,
        "summary": {k: v for k, v in summary.items()
                    if k != "status" and (v is None or isinstance(v, (int, float)))},
    }


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders above them")
    parser.add_argument("--out", type=Path, default=Path("results/image_classification"))
    args = parser.parse_args(argv)
    runs = [run for run in map(load_run, find_runs(args.paths)) if run is not None]
    if not runs:
        raise SystemExit(f"error: no finished runs (summary.json with status 'finished') under "
                         f"{', '.join(map(str, args.paths))}.")
    varying = varying_settings(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, varying, args.out / "runs.csv")
    write_table(runs, varying, args.out / "table.md", [str(p) for p in args.paths])
    print(f"{len(runs)} runs -> {args.out / 'runs.csv'}, {args.out / 'table.md'}"
          + (f" (also grouped by {', '.join(varying)})" if varying else ""))


if __name__ == "__main__":
    main()
