"""Convergence rates of heavy-ball momentum and SGD with critical momenta on quadratics (Figure 3).

On f(θ) = ½ θᵀHθ every method here is linear, and it acts on each eigendirection of H separately.
For an eigenvalue h the state z_t = (θ_t, buf_{t-1}, b_1, ..., b_C) holds the parameter, the
momentum and the buffer of critical momenta, b_j = buf_{t-j}: the C most recent momenta, which is
what the buffer holds when priorities decay fast (λ → 0: the oldest entry always has the lowest
priority and is the one replaced). One step of SGD+CM with momentum β (cmopt.SGDCM once its
buffer is full):

    buf_t = β·buf_{t-1} + h·θ_t,   d_t = buf_t + (1/C)·Σ_j b_j,   θ_{t+1} = θ_t - lr·d_t,
    and the buffer becomes (buf_t, b_1, ..., b_{C-1}).

C = 0 is heavy-ball momentum (torch.optim.SGD's form). The asymptotic rate is the spectral radius
of the step matrix, maximised over the eigenvalues h in [μ, L]; the optimal rate ρ* minimises it
over the learning rate and the momentum. Everything is in units where L = 1, so μ = 1/κ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.toy.parallel import Jobs

EIGENVALUES = 65  # points of the geometric grid over [μ, L], endpoints included
LR_RANGE = (1e-4, 4.0)  # lr·L; heavy ball diverges beyond lr·L = 2(1 + momentum) < 4
GAP_RANGE = (-4.0, 0.0)  # log10(1 - √momentum): √momentum from 0.9999 down to 0 (see optimal_rate)
COARSE_POINTS = 17  # per axis of the first grid
LOCAL_POINTS = 5  # per axis of each grid around the best point
SHRINK = 0.5  # a local grid's spacing after it found nothing better
SEARCH_TOLERANCE = 1e-7  # stop once the spacing is below this
MAX_SEARCH_GRIDS = 400
# Rates are compared at this many decimals: closer ones are ties, won by the first grid point (smallest lr).
# Below it they differ only by eigenvalue round-off, which changes between machines (BLAS builds), and
# heavy ball's rate is exactly √momentum over a whole range of lr: breaking those ties by round-off
# would make the reported lr a property of the machine.
RATE_DECIMALS = 12


def step_matrix(h: np.ndarray, lr: np.ndarray, momentum: np.ndarray, capacity: int) -> np.ndarray:
    """The matrices of one SGD+CM step, (..., C+2, C+2), broadcasting h, lr and momentum.

    With C ≥ 1 the momentum and b_1 hold the same number after every step; keeping both makes one
    layout serve C = 0 too and only adds an eigenvalue 0.
    """
    h, lr, momentum = np.broadcast_arrays(np.asarray(h, float), np.asarray(lr, float), np.asarray(momentum, float))
    size = capacity + 2
    m = np.zeros((*h.shape, size, size))
    new_momentum = np.zeros((*h.shape, size))  # buf_t as a row acting on z_t
    new_momentum[..., 0] = h
    new_momentum[..., 1] = momentum
    m[..., 0, :] = -lr[..., None] * new_momentum
    m[..., 0, 0] += 1
    m[..., 1, :] = new_momentum
    if capacity > 0:
        m[..., 0, 2:] -= lr[..., None] / capacity
        m[..., 2, :] = new_momentum
        for j in range(3, size):
            m[..., j, j - 1] = 1
    return m


def spectral_radius(lr: np.ndarray, momentum: np.ndarray, capacity: int, condition_number: float,
                    eigenvalues: int = EIGENVALUES) -> np.ndarray:
    """max over h in [1/κ, 1] of the spectral radius of the step matrix, for each (lr, momentum)."""
    h = np.geomspace(1 / condition_number, 1.0, eigenvalues)
    lr, momentum = np.broadcast_arrays(np.asarray(lr, float), np.asarray(momentum, float))
    matrices = step_matrix(h, lr[..., None], momentum[..., None], capacity)
    return np.abs(np.linalg.eigvals(matrices)).max(axis=(-1, -2))


def optimal_rate(condition_number: float, capacity: int, momentum: float | None = None) -> dict[str, float]:
    """ρ* and where it is reached: over lr and momentum, or over lr alone when `momentum` is given.

    A coarse grid in (log10 lr, log10(1 - √momentum)), then a small grid around the best point so far:
    it moves to a better point when it finds one and otherwise shrinks. Heavy ball's optimum is the tip
    of a wedge, lr in [(1 - √momentum)²/μ, (1 + √momentum)²/L]; in these coordinates its sides have
    slopes 2 and about 0 whatever κ, so the grid's directions always reach into it (in √momentum or
    log(1 - momentum) the wedge turns into a sliver at some κ, and the search stalls).
    """
    fixed = momentum is not None

    def rate(log_lr, gap):
        momenta = np.full_like(gap, momentum) if fixed else (1 - 10.0 ** np.minimum(gap, 0.0)) ** 2
        rates = spectral_radius(10.0**log_lr, momenta, capacity, condition_number)
        return np.round(rates, RATE_DECIMALS), momenta

    def around(centre, spacing, points):
        return centre + (np.arange(points) - (points - 1) / 2) * spacing

    spacing = np.array([np.log10(LR_RANGE[1] / LR_RANGE[0]), 0.0 if fixed else GAP_RANGE[1] - GAP_RANGE[0]])
    spacing /= COARSE_POINTS - 1
    centre = np.array([np.log10(LR_RANGE).mean(), 0.0 if fixed else np.mean(GAP_RANGE)])
    points = [COARSE_POINTS, 1 if fixed else COARSE_POINTS]
    best = (np.inf, 0.0, 0.0)
    for _ in range(MAX_SEARCH_GRIDS):
        axes = [around(c, d, n) for c, d, n in zip(centre, spacing, points)]
        grid_x, grid_gap = np.meshgrid(*axes, indexing="ij")
        rates, momenta = rate(grid_x, grid_gap)
        i = np.unravel_index(np.argmin(rates), rates.shape)
        if rates[i] < best[0]:
            best = (float(rates[i]), float(10.0 ** grid_x[i]), float(momenta[i]))
            centre = np.array([grid_x[i], grid_gap[i]])
        else:
            spacing = spacing * SHRINK
        if spacing.max() < SEARCH_TOLERANCE:
            break
        points = [LOCAL_POINTS, 1 if fixed else LOCAL_POINTS]
    return {"rate": best[0], "lr": best[1], "momentum": best[2]}


def heavy_ball_optimal_rate(condition_number: float) -> float:
    """Polyak's closed form: (√κ - 1) / (√κ + 1)."""
    root = np.sqrt(condition_number)
    return float((root - 1) / (root + 1))


METHODS = {"heavy_ball": 0, "sgd_cm": None}  # name -> capacity (None: the experiment's capacity)


def _optimal_rate(job: dict[str, Any]) -> dict[str, float]:
    return optimal_rate(**job)


def run_quadratic(settings: dict[str, Any], jobs: Jobs) -> dict[str, Any]:
    """Every number behind Figure 3 and the quadratic table, ready for JSON."""
    kappas = [float(k) for k in np.logspace(*settings["log10_condition_numbers"])]
    capacities = {name: settings["capacity"] if c is None else c for name, c in METHODS.items()}
    searches = [(name, momentum) for momentum in (None, settings["fixed_momentum"]) for name in METHODS]
    found = jobs.map(_optimal_rate, [
        dict(condition_number=k, capacity=capacities[name], momentum=momentum)
        for name, momentum in searches for k in kappas
    ], description="quadratic")
    by_search = {search: found[i * len(kappas):(i + 1) * len(kappas)] for i, search in enumerate(searches)}
    lr_sweep = {
        name: [[float(spectral_radius(lr, settings["fixed_momentum"], capacity, k)) for k in kappas]
               for lr in settings["scaled_lr_sweep"]]
        for name, capacity in capacities.items()
    }
    return dict(
        experiment="quadratic",
        settings=settings,
        condition_numbers=kappas,
        heavy_ball_closed_form=[heavy_ball_optimal_rate(k) for k in kappas],
        optimal={name: by_search[(name, None)] for name in METHODS},
        fixed_momentum={name: by_search[(name, settings["fixed_momentum"])] for name in METHODS},
        # [lr][κ]: the rate at momentum fixed_momentum and lr = scaled_lr / L
        lr_sweep=lr_sweep,
    )
