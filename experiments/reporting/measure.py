"""Seconds per training step (forward, backward, adam_cm step) of an experiment, on its runner's own task.

The runner's `build_task` makes the model and the data from the experiment's config, as a run does, so the
experiment's data must be where its config says (data_dir); one training batch of it is timed. Batches above
`max_batch` are timed at `max_batch` and scaled linearly.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from experiments.reporting.definitions import REPO


def step_seconds(runner: str, experiment: str, device: str, max_batch: int, steps: int,
                 overrides: Iterable[str] = ()) -> float:
    """The median time of `steps` training steps (after one warm-up) at the experiment's batch size."""
    import torch
    from hydra import compose, initialize_config_dir

    import cmopt
    from experiments.engine.task import BatchStream, move_to

    with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
        cfg = compose(runner, overrides=[f"experiment={experiment}", *overrides])
    batch_size = min(cfg.trainer.batch_size, max_batch)
    task = importlib.import_module(f"experiments.{runner}").build_task(cfg)
    model = task.model.to(device)
    stage = task.stages[0]
    if isinstance(stage, BatchStream):
        batch = stage.batches(batch_size, 0, 1)[0]
    else:
        loader = torch.utils.data.DataLoader(stage, batch_size=batch_size, collate_fn=task.collate_fn)
        batch = next(iter(loader))
    batch = move_to(batch, torch.device(device))
    optimizer = cmopt.create_optimizer("adam_cm", model, lr=1e-4)
    times = []
    for _ in range(steps + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        state = () if task.initial_state is None else (task.initial_state(batch),)
        task.forward(model, batch, *state)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * cfg.trainer.batch_size / batch_size


def measure(experiments: Iterable[tuple[str, str]], device: str, max_batch: int, steps: int,
            path: Path) -> Path:
    """Add each (runner, experiment)'s step time on this device to the JSON at `path`, keyed
    "<runner>/<experiment>" and then by the device, and rewrite it."""
    import torch

    measured = json.loads(path.read_text()) if path.is_file() else {}
    label = f"{device} ({torch.cuda.get_device_name() if device.startswith('cuda') else cpu_name()})"
    for runner, experiment in sorted(experiments):
        name = f"{runner}/{experiment}"
        measured.setdefault(name, {})[label] = step_seconds(runner, experiment, device, max_batch, steps)
        print(f"{name}: {measured[name][label]:.3g} s/step on {label}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return path


def cpu_name() -> str:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").is_file() else ["CPU"]
    return f"{names[0] if names else 'CPU'}, {os.cpu_count()} cores"
