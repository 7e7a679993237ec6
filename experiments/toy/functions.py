"""The toy loss landscapes: Goldstein-Price, Ackley, and a 1-D function with a flat and a sharp minimum.

Each function maps points of shape (..., d) to losses of shape (...), in torch, so that one call
evaluates every run of a batch and autograd supplies the exact gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Loss = Callable[[Tensor], Tensor]


def goldstein_price(points: Tensor) -> Tensor:
    """Goldstein-Price on [-2, 2]^2: global minimum f(0, -1) = 3, local minima at 30, 84 and 840."""
    x, y = points[..., 0], points[..., 1]
    first = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2)
    second = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2)
    return first * second


def ackley(points: Tensor) -> Tensor:
    """Ackley: global minimum f(0, 0) = 0 among local minima near every point of the integer lattice."""
    x, y = points[..., 0], points[..., 1]
    squared = 0.5 * (x**2 + y**2)
    # The radius is a cone at the origin: where it is 0, use 0 as its gradient instead of autograd's NaN.
    positive = squared > 0
    radius = torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)
    return (-20 * torch.exp(-0.2 * radius) - torch.exp(0.5 * (torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y)))
            + math.e + 20)


# Goldstein-Price's minima (Goldstein & Price 1971); the global one first.
GOLDSTEIN_PRICE_MINIMA = ((0.0, -1.0), (-0.6, -0.4), (1.8, 0.2), (1.2, 0.8))
# Ackley's lowest non-global minima sit at (±a, 0) and (0, ±a); a found by Newton's method (tested).
ACKLEY_NEAREST_LOCAL_MINIMUM = (0.952166, 0.0)


def well(x: Tensor, centre: float, width: Tensor | float) -> Tensor:
    """1 - exp(-(x - centre)^2 / (2 width^2)): 0 at the centre, rising to 1 a few widths away."""
    return 1 - torch.exp(-((x - centre) ** 2) / (2 * width**2))


def flat_sharp(points: Tensor, sharpness: Tensor | float, flat_minimum: float, sharp_minimum: float,
               flat_width: float) -> Tensor:
    """A 1-D loss with a flat and a sharp minimum of equal depth: the product of two wells.

    f(x) = well(x, flat_minimum, flat_width) * well(x, sharp_minimum, flat_width / sharpness). It is 0
    exactly at both minima and positive elsewhere, so the two are equally deep; the sharp one's
    curvature is about sharpness^2 times the flat one's; between them the loss rises to a barrier
    of about 1 whatever the sharpness. `points` has shape (..., 1); `sharpness` broadcasts against (...).
    """
    x = points[..., 0]
    return well(x, flat_minimum, flat_width) * well(x, sharp_minimum, flat_width / sharpness)


def value_and_gradient(loss: Loss, points: Tensor) -> tuple[Tensor, Tensor]:
    """The losses of a batch of points and the gradient of each with respect to its own point."""
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        values = loss(points)
        (gradient,) = torch.autograd.grad(values.sum(), points)
    return values.detach(), gradient


def flat_sharp_barrier(sharpness: Tensor, flat_minimum: float, sharp_minimum: float, flat_width: float,
                       iterations: int = 100) -> Tensor:
    """Where the loss peaks between the two minima, for each sharpness: the border of their basins.

    Bisection on the sign of f' between the minima (f rises from the flat minimum, then falls into
    the sharp one, so f' changes sign once, from + to -).
    """
    low = torch.full_like(sharpness, flat_minimum + 1e-9 * (sharp_minimum - flat_minimum))
    high = torch.full_like(sharpness, sharp_minimum - 1e-9 * (sharp_minimum - flat_minimum))

    def loss(points: Tensor) -> Tensor:
        return flat_sharp(points, sharpness, flat_minimum, sharp_minimum, flat_width)

    for _ in range(iterations):
        middle = (low + high) / 2
        _, slope = value_and_gradient(loss, middle.unsqueeze(-1))
        rising = slope[..., 0] * (sharp_minimum - flat_minimum) > 0
        low, high = torch.where(rising, middle, low), torch.where(rising, high, middle)
    return (low + high) / 2
