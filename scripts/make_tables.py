"""Paper-style tables from run folders, with every tuned value chosen on validation, never on test.

    python scripts/make_tables.py RUN_DIR_OR_PARENT... [--out runs/tables] [--tune optimizer.lr ...]
                                  [--seeds N]

Runs are grouped by data x model x optimizer and by every other setting that differs between them,
except the tuned ones (`--tune`, default optimizer.lr) and the seed. Inside a group, each candidate
(a value of the tuned settings) is scored by the mean of its validation metric over its seeds; the
best candidate's TEST metrics are reported as mean ± sample std over its seeds, with the number of
seeds and the selected values. The validation metric and its direction are the runs' own `select`
(configs/<runner>/<runner>.yaml, saved in each run's config.yaml); what the table reports beside it:

    image classification   select.metric val_acc              -> test_acc, top_hessian_eigenvalue
    language modelling     select.metric val_ppl              -> test_ppl (at the best-validation checkpoint)
    online learning        select.metric val_average_accuracy -> average_accuracy, forgetting, backward_transfer

A run that failed (a NaN loss, a crash) or never finished is not averaged silently: a candidate with
such runs, or with fewer seeds than `--seeds` (default: the most seeds any candidate has), is marked,
and candidates whose runs all finished are preferred. Writes <out>/table.md and <out>/selection.csv
(every candidate with its validation score, the chosen one flagged).
"""

# The logic is experiments.reporting.select; this file is its command line.

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.reporting import one_line_errors
from experiments.reporting.select import make_tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders above them")
    parser.add_argument("--out", type=Path, default=Path("runs/tables"),
                        help="where table.md and selection.csv go (default: runs/tables, beside your runs)")
    parser.add_argument("--tune", nargs="+", default=["optimizer.lr"],
                        help="settings chosen on validation inside each group (default: optimizer.lr)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds each setting should have")
    args = parser.parse_args(argv)
    rows = make_tables(args.paths, args.out, args.tune, args.seeds)
    print(f"{len(rows)} rows -> {args.out / 'table.md'}, {args.out / 'selection.csv'} (--out chooses the folder)")


if __name__ == "__main__":
    with one_line_errors():
        main()
