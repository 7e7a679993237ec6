"""The toy landscapes: known minima, autograd gradients against finite differences, the 1-D basin border."""

import math

import pytest
import torch

from experiments.toy.functions import (ACKLEY_NEAREST_LOCAL_MINIMUM, GOLDSTEIN_PRICE_MINIMA, ackley, flat_sharp,
                                       flat_sharp_barrier, goldstein_price, value_and_gradient)

LANDSCAPE = dict(flat_minimum=-1.0, sharp_minimum=1.0, flat_width=0.5)


def at(*point):
    return torch.tensor(point, dtype=torch.float64)


def central_differences(loss, point, step=1e-6):
    gradient = torch.zeros_like(point)
    for i in range(point.numel()):
        e = torch.zeros_like(point)
        e[i] = step
        gradient[i] = (loss(point + e) - loss(point - e)) / (2 * step)
    return gradient


def test_goldstein_price_minima_from_the_literature():
    assert float(goldstein_price(at(0.0, -1.0))) == pytest.approx(3.0, abs=1e-12)
    for point, value in zip(GOLDSTEIN_PRICE_MINIMA[1:], (30.0, 84.0, 840.0)):
        assert float(goldstein_price(at(*point))) == pytest.approx(value, rel=1e-12)
    for point in GOLDSTEIN_PRICE_MINIMA:
        _, gradient = value_and_gradient(goldstein_price, at(*point))
        assert gradient.abs().max() < 1e-9
    # nothing on a fine grid of the domain goes below the global minimum
    axis = torch.linspace(-2, 2, 401, dtype=torch.float64)
    assert float(goldstein_price(torch.cartesian_prod(axis, axis)).min()) >= 3.0 - 1e-12


def test_ackley_global_minimum_and_its_nearest_rival():
    assert float(ackley(at(0.0, 0.0))) == pytest.approx(0.0, abs=1e-12)
    _, gradient = value_and_gradient(ackley, at(0.0, 0.0))
    assert torch.equal(gradient, torch.zeros(2, dtype=torch.float64))  # the cone's tip: 0, not NaN
    # the lowest non-global minimum: stationary, and a minimum of the values around it
    point = at(*ACKLEY_NEAREST_LOCAL_MINIMUM)
    _, gradient = value_and_gradient(ackley, point)
    assert gradient.abs().max() < 1e-4
    around = point + 0.01 * torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float64)
    assert bool((ackley(around) > ackley(point)).all())
    assert float(ackley(point)) == pytest.approx(2.57993, abs=1e-5)


@pytest.mark.parametrize("loss, point", [
    (goldstein_price, (0.3, -0.7)), (goldstein_price, (-1.5, 1.2)),
    (ackley, (0.31, -2.2)), (ackley, (1e-3, 2e-3)),
    (lambda p: flat_sharp(p, 8.0, **LANDSCAPE), (0.93,)), (lambda p: flat_sharp(p, 1.0, **LANDSCAPE), (-0.4,)),
])
def test_gradient_matches_finite_differences(loss, point):
    point = at(*point)
    _, gradient = value_and_gradient(loss, point.unsqueeze(0))
    expected = central_differences(loss, point)
    torch.testing.assert_close(gradient[0], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sharpness", [1.0, 4.0, 32.0])
def test_flat_sharp_has_two_minima_of_equal_depth_at_the_documented_places(sharpness):
    def loss(x):
        return flat_sharp(torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1), sharpness, **LANDSCAPE)

    assert float(loss(-1.0)) == 0.0 and float(loss(1.0)) == 0.0
    x = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    away = (x + 1).abs().gt(1e-6) & (x - 1).abs().gt(1e-6)
    assert bool((loss(x[away]) > 0).all())
    # curvature by second differences: the sharp minimum's is sharpness² times the flat one's (wells 4 widths apart)
    h = 1e-4

    def curvature(c):
        return float((loss(c + h) - 2 * loss(c) + loss(c - h)) / h**2)

    assert curvature(1.0) / curvature(-1.0) == pytest.approx(sharpness**2, rel=1e-3)


def test_barrier_is_the_single_peak_between_the_minima():
    sharpness = torch.tensor([1.0, 2.0, 8.0, 32.0], dtype=torch.float64)
    barriers = flat_sharp_barrier(sharpness, **LANDSCAPE)
    x = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    for s, barrier in zip(sharpness, barriers):
        f = flat_sharp(x.unsqueeze(-1), float(s), **LANDSCAPE)
        assert float(barrier) == pytest.approx(float(x[f.argmax()]), abs=2e-5)
        rising = (f[1:] > f[:-1]).int()
        assert int((rising[1:] != rising[:-1]).sum()) == 1  # rises, then falls: one peak, two basins
    assert math.isclose(float(barriers[0]), 0.0, abs_tol=1e-9)  # identical wells: the border is halfway
