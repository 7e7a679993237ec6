"""Results from run folders: the tables, selections, figures and indexes that scripts/ writes into results/.

    runs         run folders -> one row a run (runs.csv) and mean ± std over seeds (collect_results.py)
    select       every tuned value chosen on validation, never on test (make_tables.py)
    definitions  the paper's results, one configs/paper/<name>.yaml each: sweeps, runs, folders
    launch       a definition's sweeps as Hydra multiruns (paper.py run)
    collect      a definition's runs -> results/paper[_mini]/<name>/ (paper.py collect)
    figures      curves, learning-rate sensitivity, ablations, the online runs' heat-maps
    measure      seconds per training step of each experiment, timed on the runners' own tasks
    index        every result, its status and compute (paper.py list, results/README.md)

Every function takes the folders it reads and writes; what a user can fix raises ResultsError, which the
commands print as one line before exiting 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from experiments.options import UserError


class ResultsError(UserError):
    """Run folders, definitions or results that a user can fix: missing, empty, or not comparable."""


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A command's UserError (ResultsError, or a runner's own: missing data) as `error: ...`, and exit 1."""
    try:
        yield
    except UserError as error:
        sys.exit(f"error: {error}")
