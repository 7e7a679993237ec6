"""Escaping a sharp minimum for a flat one of equal depth, against sharpness (Figure 5).

Runs start in or next to the sharp minimum, at offsets measured in the sharp minimum's width. A run
escaped when its final point lies in the flat minimum's basin: on the flat minimum's side of the
loss's peak between the two minima. The escape ratio is the fraction of runs that escaped.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from experiments.toy.functions import flat_sharp, flat_sharp_barrier
from experiments.toy.parallel import Jobs
from experiments.toy.simulate import gaussian_noise, optimizer_hyperparameters, simulate


def escaped(final_points: Tensor, barrier: Tensor, flat_minimum: float) -> Tensor:
    """Whether each final point is on the flat minimum's side of the barrier (where the loss peaks)."""
    return torch.sign(final_points - barrier) == torch.sign(torch.as_tensor(flat_minimum) - barrier)


def _trajectories(job: dict[str, Any]) -> Tensor:
    landscape = job["landscape"]
    loss = functools.partial(flat_sharp, sharpness=job["sharpness"], **landscape)
    noise = gaussian_noise(job["run_seeds"], job["steps"], 1, job["noise"])
    return simulate(job["optimizer"], loss, job["starts"], job["lr"], job["steps"], noise, job["hyperparameters"])


def run_escape(settings: dict[str, Any], jobs: Jobs) -> dict[str, Any]:
    """Every number behind Figure 5 and the escape table, ready for JSON."""
    landscape = {k: settings[k] for k in ("flat_minimum", "sharp_minimum", "flat_width")}
    sharpness_values = torch.tensor(settings["sharpness"], dtype=torch.float64)
    barriers = flat_sharp_barrier(sharpness_values, **landscape)
    # One run per (seed, sharpness, start offset); its noise seed is its index, shared by every optimizer.
    cells = [(seed, s, offset) for seed in range(settings["seeds"]) for s in range(len(sharpness_values))
             for offset in settings["start_offsets"]]
    sharpness = torch.tensor([float(sharpness_values[s]) for _, s, _ in cells], dtype=torch.float64)
    starts = torch.tensor([[settings["sharp_minimum"] + offset * settings["flat_width"] / float(sharpness_values[s])]
                           for _, s, offset in cells], dtype=torch.float64)
    barrier = torch.stack([barriers[s] for _, s, _ in cells])

    sweep = [(optimizer, lr) for lr in settings["lr_sweep"] for optimizer in settings["optimizers"]]
    paths = jobs.map(_trajectories, [
        dict(optimizer=optimizer, lr=lr, landscape=landscape, sharpness=sharpness, starts=starts,
             run_seeds=list(range(len(cells))), steps=settings["steps"], noise=settings["noise"],
             hyperparameters=optimizer_hyperparameters(optimizer, settings["capacity"], settings["decay"],
                                                       settings["rho"]))
        for optimizer, lr in sweep
    ], description="flat_sharp")

    runs, summary = [], []
    for (optimizer, lr), path in zip(sweep, paths):
        final = path[:, -1, 0]
        escapes = escaped(final, barrier, settings["flat_minimum"])
        by_sharpness = escapes.view(settings["seeds"], len(sharpness_values), -1)
        summary.append(dict(
            optimizer=optimizer, lr=lr, runs=len(cells), escaped=int(escapes.sum()),
            escape_ratio=float(escapes.double().mean()),
            escape_ratio_by_sharpness=by_sharpness.double().mean(dim=(0, 2)).tolist(),
            # [sharpness][start offset]: the fraction of seeds that escaped (Figure 5's grid)
            escape_ratio_by_sharpness_and_start=by_sharpness.double().mean(dim=0).tolist(),
        ))
        for (seed, s, offset), x0, x, e in zip(cells, starts[:, 0].tolist(), final.tolist(), escapes.tolist()):
            runs.append(dict(optimizer=optimizer, lr=lr, sharpness=float(sharpness_values[s]), start_offset=offset,
                             start=x0, seed=seed, final_point=x, escaped=e))
    return dict(
        experiment="flat_sharp",
        settings=settings,
        barriers=[dict(sharpness=float(s), point=float(b)) for s, b in zip(sharpness_values, barriers)],
        success="final point on the flat minimum's side of the loss's peak between the minima",
        summary=summary,
        runs=runs,
    )
