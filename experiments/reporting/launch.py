"""A definition's sweeps as Hydra multiruns of its runners (each run reproducible by its own command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.reporting.definitions import REPO, in_repository, override_value, runs_dir, sweeps


def commands(root: Path, name: str, definition: dict, mini: bool, launcher: str) -> list[list[str]]:
    """One `python -m experiments.<runner> -m ...` per sweep."""
    result = []
    for index, (runner, grid) in enumerate(sweeps(definition, mini)):
        argv = [sys.executable, "-m", f"experiments.{runner}", "-m",
                f"hydra.sweep.dir={in_repository(runs_dir(root, name, mini))}/{index}"]
        if launcher == "slurm":
            argv.append("hydra/launcher=slurm")
        argv += [f"{key}={','.join(override_value(v) for v in values)}" for key, values in grid.items()]
        result.append(argv)
    return result


def run(root: Path, name: str, definition: dict, mini: bool, launcher: str) -> None:
    """Launch every sweep from the repository (`print`: print the commands instead); a failed run is said,
    and the table says which."""
    for argv in commands(root, name, definition, mini, launcher):
        line = " ".join(argv[1:] if argv[0] == sys.executable else argv)
        if launcher == "print":
            print(f"python {line}")
            continue
        print(f"[{name}] python {line}", flush=True)
        done = subprocess.run(argv, cwd=REPO)
        if done.returncode != 0:
            print(f"[{name}] a run of this sweep failed (exit {done.returncode}); the table will say which.",
                  file=sys.stderr)
