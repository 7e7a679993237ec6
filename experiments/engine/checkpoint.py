"""Checkpoints through torch.distributed.checkpoint (DCP), written atomically; RNG states as tensors.

A run folder's checkpoint is the folder `checkpoint/`:
- the model and the optimizer (cmopt's critical buffers included), and with trainer.weight_averaging
  the averaged model, as DCP writes them: every process
  writes its own shards (FSDP) or, for tensors every process holds alike (DDP), one of them does;
- `trainer.pt`, written by the main process with torch.save: the scheduler, the training state
  (experiments/engine/state.py), every process's RNG streams, unlogged window and carried state,
  and the config the run was started with.
It is written into `checkpoint.tmp/` and then renamed into place (the previous one moved aside
first and removed after): a run killed while saving resumes from the previous complete checkpoint.
A DCP checkpoint loads on any number of processes and with either strategy (DCP reshards).

`checkpoint.pt`, the single file earlier versions wrote, still resumes (ddp strategy).
`best_model.pt` stays a plain state dict of the model that `torch.load` reads.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

CHECKPOINT_DIR = "checkpoint"
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"  # a single file, as earlier versions of the engine wrote it
TRAINER_FILE = "trainer.pt"
BEST_MODEL_NAME = "best_model.pt"  # the model weights at the best evaluation (Task.select)


def save_atomically(obj: Any, path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a killed run leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns that it assumes one process when there is no process group: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is (disabled, )?unavailable or uninitialized")
        yield


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _checkpointed(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """What DCP takes: SAM's state is its base optimizer's (DCP steps an empty optimizer without a closure)."""
    return getattr(optimizer, "base_optimizer", optimizer)


def exists(run_dir: Path) -> bool:
    return _complete(run_dir) is not None or (run_dir / LEGACY_CHECKPOINT_NAME).exists()


def _complete(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder: the current one, or the previous one if a save was
    killed between moving it aside and renaming the new one into place."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        if (run_dir / name / TRAINER_FILE).exists():
            return run_dir / name
    return None


def save(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, trainer: dict[str, Any],
         is_main: bool, averaged: nn.Module | None = None) -> None:
    """Every process calls it (collective); `trainer` matters on the main process only. `averaged`: the
    averaged model of trainer.weight_averaging, saved beside the model (engine/averaging.py)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp, old, final = (run_dir / f"{CHECKPOINT_DIR}{s}" for s in (".tmp", ".old", ""))
    if is_main and tmp.exists():
        shutil.rmtree(tmp)  # a save killed half way
    _barrier()
    model_state, optimizer_state = get_state_dict(model, _checkpointed(optimizer))
    state = {"model": model_state, "optimizer": optimizer_state}
    if averaged is not None:
        state["averaged"] = averaged.state_dict()
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=tmp)
    if is_main:
        save_atomically(trainer, tmp / TRAINER_FILE)  # last: its presence marks the folder complete
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def load_trainer(run_dir: Path) -> dict[str, Any]:
    """The main process's file of a checkpoint (or the legacy single file, whole)."""
    folder = _complete(run_dir)
    if folder is None:
        return torch.load(run_dir / LEGACY_CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    return torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True)


def load_model_and_optimizer(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             legacy: dict[str, Any] | None, averaged: nn.Module | None = None) -> None:
    """Every process calls it. `legacy`: the single-file checkpoint's content, when that is what there is."""
    if legacy is not None:
        model.load_state_dict(legacy["model"])
        optimizer.load_state_dict(legacy["optimizer"])
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    target = _checkpointed(optimizer)
    model_state, optimizer_state = get_state_dict(model, target)
    state = {"model": model_state, "optimizer": optimizer_state}
    if averaged is not None:
        state["averaged"] = averaged.state_dict()
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=_complete(run_dir))
    set_state_dict(model, target, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    if target is not optimizer:  # SAM: loading gave its base optimizer new group dicts; share them again, or
        optimizer.param_groups = target.param_groups  # the lr schedule (stepping SAM's) would stop reaching it
    if averaged is not None:
        averaged.load_state_dict(state["averaged"])


def read(run_dir: Path) -> dict[str, Any]:
    """A checkpoint as one dict in one process (no process group needed): the trainer file's entries,
    "progress" (the training state's), and "model" and "optimizer" as full tensors (keys as DCP saved
    them: parameter names). A legacy single file is returned as it is."""
    folder = _complete(run_dir)
    if folder is None:
        return load_trainer(run_dir)
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    with _quiet_single_process():
        tensors = _load_state_dict_from_keys(checkpoint_id=folder)
    trainer = load_trainer(run_dir)
    return {**trainer, "progress": trainer["state"]["progress"], "model": tensors["model"],
            "optimizer": tensors["optimizer"], **({"averaged": tensors["averaged"]} if "averaged" in tensors else {})}


def trainer_path(run_dir: Path) -> Path:
    """The file whose presence marks a complete checkpoint."""
    return run_dir / CHECKPOINT_DIR / TRAINER_FILE


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from, in types weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
