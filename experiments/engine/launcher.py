"""Checks of the command line that Hydra's launchers would only fail on with a traceback."""

from __future__ import annotations

import shutil
import sys

SLURM_LAUNCHER = "hydra/launcher=slurm"


def check_launcher(argv: list[str]) -> None:
    """Exit with one message when the SLURM launcher is asked for on a machine without SLURM."""
    if SLURM_LAUNCHER in argv and shutil.which("srun") is None and shutil.which("sbatch") is None:
        print(f"Error: {SLURM_LAUNCHER} submits each run as a SLURM job, but SLURM was not found on this "
              "machine (no srun or sbatch on PATH). Run the command on the cluster's login node; or print the "
              "commands to run elsewhere: python scripts/paper.py run <result> --launcher print; or run here "
              "without it (drop hydra/launcher=slurm, or use hydra/launcher=local).", file=sys.stderr)
        sys.exit(1)
