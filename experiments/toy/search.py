"""Global-minimum search on Goldstein-Price (Figure 1) and Ackley (Figures 2 and 4), with their tables.

From a grid of starting points, each optimizer runs at each learning rate of the sweep. A run
reaches the global minimum when its final loss is below the loss at the lowest non-global local
minimum: a point that low can only lie in the global minimum's basin (gradient flow never climbs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from experiments.toy.functions import (ACKLEY_NEAREST_LOCAL_MINIMUM, GOLDSTEIN_PRICE_MINIMA, Loss, ackley,
                                       goldstein_price)
from experiments.toy.parallel import Jobs
from experiments.toy.simulate import gaussian_noise, optimizer_hyperparameters, simulate


@dataclass(frozen=True)
class Landscape:
    loss: Loss
    global_minimum: tuple[float, float]
    lowest_local_minimum: tuple[float, float]  # the best of the others: its loss is the success threshold


LANDSCAPES = {
    "goldstein_price": Landscape(goldstein_price, GOLDSTEIN_PRICE_MINIMA[0], GOLDSTEIN_PRICE_MINIMA[1]),
    "ackley": Landscape(ackley, (0.0, 0.0), ACKLEY_NEAREST_LOCAL_MINIMUM),
}


def loss_at(landscape: Landscape, point: tuple[float, float]) -> float:
    return float(landscape.loss(torch.tensor(point, dtype=torch.float64)))


def start_grid(low: float, high: float, points: int) -> Tensor:
    """points x points starting points, row by row (x, then y)."""
    axis = torch.linspace(low, high, points, dtype=torch.float64)
    return torch.cartesian_prod(axis, axis)


def _trajectories(job: dict[str, Any]) -> Tensor:
    landscape = LANDSCAPES[job["problem"]]
    noise = gaussian_noise(job["run_seeds"], job["steps"], 2, job["noise"])
    return simulate(job["optimizer"], landscape.loss, job["starts"], job["lr"], job["steps"], noise,
                    job["hyperparameters"])


def run_search(problem: str, settings: dict[str, Any], jobs: Jobs) -> dict[str, Any]:
    """Every number behind the problem's table and figures, ready for JSON."""
    landscape = LANDSCAPES[problem]
    threshold = loss_at(landscape, landscape.lowest_local_minimum)
    grid = start_grid(**settings["starts"])
    seeds = range(settings["seeds"])
    # Run (seed, start) gets noise seed seed * len(grid) + start: its own stream, the same for every optimizer.
    starts = grid.repeat(len(seeds), 1)
    run_seeds = [seed * len(grid) + i for seed in seeds for i in range(len(grid))]

    def job(optimizer: str, lr: float, job_starts: Tensor, job_seeds: list[int]) -> dict[str, Any]:
        hyperparameters = optimizer_hyperparameters(optimizer, settings["capacity"], settings["decay"], settings["rho"])
        return dict(problem=problem, optimizer=optimizer, lr=lr, starts=job_starts, run_seeds=job_seeds,
                    steps=settings["steps"], noise=settings["noise"], hyperparameters=hyperparameters)

    sweep = [(optimizer, lr) for lr in settings["lr_sweep"] for optimizer in settings["optimizers"]]
    figure_starts = torch.tensor(settings["figure_starts"], dtype=torch.float64)
    figure_seeds = range(settings["figure_seeds"])
    figure_runs = figure_starts.repeat(len(figure_seeds), 1)
    # Figure runs get seeds past the grid's, so no figure run shares noise with a grid run by accident.
    figure_run_seeds = [10**6 + seed * len(figure_starts) + i
                        for seed in figure_seeds for i in range(len(figure_starts))]
    paths = jobs.map(
        _trajectories,
        [job(optimizer, lr, starts, run_seeds) for optimizer, lr in sweep]
        + [job(optimizer, settings["lr"], figure_runs, figure_run_seeds) for optimizer in settings["optimizers"]],
        description=problem,
    )
    sweep_paths, figure_paths = paths[: len(sweep)], paths[len(sweep):]

    runs, summary = [], []
    for (optimizer, lr), path in zip(sweep, sweep_paths):
        final_loss = landscape.loss(path[:, -1])
        reached = final_loss < threshold
        summary.append(dict(optimizer=optimizer, lr=lr, runs=len(path), reached_global_minimum=int(reached.sum()),
                            global_minimum_fraction=float(reached.double().mean()),
                            median_final_loss=float(final_loss.median())))
        for i in range(len(path)):
            runs.append(dict(optimizer=optimizer, lr=lr, start=starts[i].tolist(), seed=i // len(grid),
                             final_point=path[i, -1].tolist(), final_loss=float(final_loss[i]),
                             reached_global_minimum=bool(reached[i])))
    trajectories = []
    for optimizer, path in zip(settings["optimizers"], figure_paths):
        for i in range(len(path)):
            trajectories.append(dict(optimizer=optimizer, lr=settings["lr"], start=figure_runs[i].tolist(),
                                     seed=i // len(figure_starts), points=path[i].tolist(),
                                     losses=landscape.loss(path[i]).tolist()))
    return dict(
        experiment=problem,
        settings=settings,
        global_minimum=dict(point=list(landscape.global_minimum), loss=loss_at(landscape, landscape.global_minimum)),
        lowest_local_minimum=dict(point=list(landscape.lowest_local_minimum), loss=threshold),
        success="final loss below the lowest non-global local minimum's loss (so in the global minimum's basin)",
        summary=summary,
        runs=runs,
        trajectories=trajectories,
    )
