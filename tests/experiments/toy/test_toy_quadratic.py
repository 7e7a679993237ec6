"""The quadratic analysis: Polyak's closed form, the step matrix, and the model against cmopt.SGDCM itself."""

import math

import numpy as np
import pytest
import torch

import cmopt
from experiments.toy import quadratic
from experiments.toy.quadratic import heavy_ball_optimal_rate, optimal_rate, spectral_radius, step_matrix


@pytest.mark.parametrize("kappa", [10, 100, 1000])
def test_heavy_ball_optimal_rate_reproduces_the_closed_form(kappa):
    found = optimal_rate(kappa, capacity=0)
    closed = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert abs(found["rate"] - closed) < 1e-3
    # ... at Polyak's step size and momentum (L = 1, μ = 1/κ)
    assert found["lr"] == pytest.approx(4 / (1 + 1 / math.sqrt(kappa)) ** 2, rel=1e-2)
    assert found["momentum"] == pytest.approx(closed**2, abs=1e-2)
    assert heavy_ball_optimal_rate(kappa) == pytest.approx(closed, rel=1e-15)


def test_heavy_ball_spectral_radius_at_polyaks_parameters():
    kappa = 50.0
    closed = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    rate = spectral_radius(4 / (1 + 1 / math.sqrt(kappa)) ** 2, closed**2, 0, kappa)
    assert float(rate) == pytest.approx(closed, abs=1e-6)


def test_heavy_ball_step_matrix_has_the_characteristic_polynomial_of_polyaks_iteration():
    h, lr, momentum = 0.37, 1.3, 0.6
    eigenvalues = np.sort_complex(np.linalg.eigvals(step_matrix(h, lr, momentum, 0)))
    roots = np.sort_complex(np.roots([1, -(1 + momentum - lr * h), momentum]))
    np.testing.assert_allclose(eigenvalues, roots, atol=1e-12)


def test_sgd_cm_model_follows_cmopt_sgd_cm_with_fast_priority_decay():
    # With decay 1e-6 the oldest entry always has the lowest priority, so the buffer holds the C most recent
    # momenta, as the model assumes; the model starts once the buffer is full (before, mean(B) averages fewer).
    capacity, lr, momentum = 3, 0.2, 0.5
    h = torch.tensor([0.05, 0.4, 1.0], dtype=torch.float64)
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = cmopt.SGDCM([theta], lr=lr, momentum=momentum, capacity=capacity, decay=1e-6)

    def step():
        optimizer.zero_grad()
        (0.5 * (h * theta**2).sum()).backward()
        optimizer.step()

    for _ in range(capacity + 1):
        step()
    buffer = optimizer.critical_buffers[0]
    newest_first = torch.argsort(buffer.priorities, descending=True)
    entries = buffer.rows[0][newest_first]
    momentum_buffer = optimizer.state[theta]["momentum_buffer"]
    z = torch.cat([theta.detach().unsqueeze(0), momentum_buffer.unsqueeze(0), entries]).numpy()  # (C+2, 3)
    for _ in range(30):
        step()
        z = np.stack([step_matrix(float(h[i]), lr, momentum, capacity) @ z[:, i] for i in range(3)], axis=1)
        np.testing.assert_allclose(z[0], theta.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_sgd_cm_with_fixed_momentum_finds_a_rate_below_one_and_search_respects_it():
    found = optimal_rate(100.0, capacity=5, momentum=0.9)
    assert found["momentum"] == 0.9
    assert found["rate"] < 1
    assert float(spectral_radius(found["lr"], 0.9, 5, 100.0)) == pytest.approx(found["rate"], abs=1e-12)


@pytest.mark.parametrize("kappa, capacity, momentum", [(10.0, 0, 0.9), (3.0, 0, 0.9), (100.0, 5, None)])
def test_the_search_ignores_round_off_that_differs_between_machines(kappa, capacity, momentum, monkeypatch):
    # Heavy ball's rate is exactly √0.9 over a range of lr at these κ: ties that round-off alone would break.
    # Another machine's BLAS changes eigenvalues in the last bits; emulate it with relative noise of 1e-15.
    exact = quadratic.spectral_radius
    here = optimal_rate(kappa, capacity, momentum)
    for seed in range(3):
        generator = np.random.default_rng(seed)

        def elsewhere(*args, **kwargs):
            rates = exact(*args, **kwargs)
            return rates * (1 + 1e-15 * generator.uniform(-1, 1, np.shape(rates)))

        monkeypatch.setattr(quadratic, "spectral_radius", elsewhere)
        assert optimal_rate(kappa, capacity, momentum) == here
