"""What a Hydra job leaves in its run folder, written only once the engine has accepted the run.

The runners' configs set `hydra.output_subdir: null` and keep Hydra's log file off the root logger, so
Hydra itself writes nothing into the folder before the task starts (it only creates the folder). A
command the engine refuses (a bad value, a resume with another config) therefore leaves an existing
folder byte-identical and removes the empty folder Hydra made for it (up to runs_dir); an accepted run gets what Hydra
would have written: `.hydra/{config,hydra,overrides}.yaml` and the job's `<job name>.log`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

HYDRA_SUBDIR = ".hydra"


def _hydra_job_in(run_dir: Path):
    """Hydra's config of the job whose output folder is run_dir, or None (a direct call of the engine)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    same = Path(hydra_cfg.runtime.output_dir).resolve() == run_dir.resolve()
    return hydra_cfg if same else None


def record_accepted_run(cfg: DictConfig, run_dir: Path) -> None:
    """Write the Hydra job's record into run_dir and log to its log file from now on."""
    hydra_cfg = _hydra_job_in(run_dir)
    if hydra_cfg is None:
        return
    folder = run_dir / HYDRA_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
                          ("overrides.yaml", hydra_cfg.overrides.task)):
        (folder / name).write_text(OmegaConf.to_yaml(content), encoding="utf-8")
    handler = logging.FileHandler(run_dir / f"{hydra_cfg.job.name}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(hydra_cfg.job_logging.formatters.simple.format))
    logging.getLogger().addHandler(handler)  # Hydra's next job (multirun) resets the root's handlers


@contextlib.contextmanager
def removed_if_refused(run_dir: Path, cfg: DictConfig):
    """When the body fails, remove the Hydra job's folder run_dir if it is still as empty as Hydra made it,
    and the folders between it and cfg.runs_dir left empty."""
    made_by_hydra = _hydra_job_in(run_dir) is not None and not any(run_dir.iterdir())
    try:
        yield
    except BaseException:
        if made_by_hydra:
            _remove_empty(run_dir.resolve(), Path(cfg.runs_dir).resolve())
        raise


def _remove_empty(folder: Path, top: Path) -> None:
    while top in folder.parents:
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            return
        folder = folder.parent
