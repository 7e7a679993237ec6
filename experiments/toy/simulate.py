"""Run many independent optimizer trajectories on a toy loss, every step taken by a cmopt optimizer.

Runs that share an optimizer name and learning rate go in one optimizer, one parameter group per
run: Adam's state is per tensor and the critical buffer and its priorities are per group, so the
runs stay independent while the Python overhead of a step is paid once. SAM's perturbation uses the
global gradient norm over all of its groups, so SAM gets one optimizer per run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import cmopt
from cmopt.registry import SAM_PREFIX
from experiments.toy import VARIANTS
from experiments.toy.functions import Loss, value_and_gradient


def optimizer_hyperparameters(name: str, capacity: int, decay: float, rho: float) -> dict[str, Any]:
    """The hyperparameters `name` takes besides the learning rate: capacity and decay, SAM's rho, and a
    variant's fixed options (experiments.toy.VARIANTS)."""
    name, fixed = VARIANTS.get(name, (name, {}))
    base = name.removeprefix(SAM_PREFIX)
    hyperparameters: dict[str, Any] = dict(fixed)
    if base.endswith(("_cm", "_cg")):
        hyperparameters.update(capacity=capacity, decay=decay)
    if base != name:
        hyperparameters["rho"] = rho
    return hyperparameters


def gaussian_noise(run_seeds: list[int], steps: int, dimension: int, std: float) -> Tensor:
    """Noise added to the exact gradient, (runs, steps, dimension); each run's stream depends on its seed alone.

    The same seed gives the same stream to every optimizer and learning rate, so they are compared on
    common random numbers.
    """
    noise = torch.zeros(len(run_seeds), steps, dimension, dtype=torch.float64)
    if std > 0:
        for i, seed in enumerate(run_seeds):
            generator = torch.Generator().manual_seed(seed)
            noise[i] = std * torch.randn(steps, dimension, generator=generator, dtype=torch.float64)
    return noise


def simulate(name: str, loss: Loss, starts: Tensor, lr: float, steps: int, noise: Tensor,
             hyperparameters: dict[str, Any]) -> Tensor:
    """The trajectories (runs, steps + 1, dimension) of optimizer `name` from each start (runs, dimension).

    Step t uses the exact gradient plus noise[:, t]; both passes of a SAM step see the same draw, as
    the two passes of SAM see one minibatch.
    """
    points = [start.detach().clone().to(torch.float64) for start in starts]
    name = VARIANTS.get(name, (name,))[0]  # its options are among `hyperparameters`
    sam = name.startswith(SAM_PREFIX)
    if sam:
        optimizers = [cmopt.create_optimizer(name, [p], lr=lr, **hyperparameters) for p in points]
    else:
        optimizers = [cmopt.create_optimizer(name, [{"params": [p]} for p in points], lr=lr, **hyperparameters)]
    path = torch.empty(len(points), steps + 1, starts.shape[-1], dtype=torch.float64)
    path[:, 0] = torch.stack(points)
    for t in range(steps):
        _set_gradients(points, loss, noise[:, t])
        if sam:
            for optimizer in optimizers:
                optimizer.first_step()
            _set_gradients(points, loss, noise[:, t])
            for optimizer in optimizers:
                optimizer.second_step()
        else:
            optimizers[0].step()
        path[:, t + 1] = torch.stack(points)
    return path


def _set_gradients(points: list[Tensor], loss: Loss, noise: Tensor) -> None:
    _, gradient = value_and_gradient(loss, torch.stack(points))
    for p, g in zip(points, gradient + noise):
        p.grad = g
