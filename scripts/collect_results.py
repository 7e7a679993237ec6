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

# The logic, TABLE_METRICS included, is experiments.reporting.runs; this file is its command line.

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.reporting import one_line_errors
from experiments.reporting.runs import collect_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders above them")
    parser.add_argument("--out", type=Path, default=Path("results/image_classification"))
    args = parser.parse_args(argv)
    runs, varying = collect_runs(args.paths, args.out)
    print(f"{len(runs)} runs -> {args.out / 'runs.csv'}, {args.out / 'table.md'}"
          + (f" (also grouped by {', '.join(varying)})" if varying else ""))


if __name__ == "__main__":
    with one_line_errors():
        main()
