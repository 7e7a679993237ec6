"""Trajectories come from cmopt's optimizers, runs batched in one optimizer stay independent, noise is seeded."""

import pytest
import torch

import cmopt
from experiments.toy.escape import escaped
from experiments.toy.functions import ackley, value_and_gradient
from experiments.toy.simulate import gaussian_noise, optimizer_hyperparameters, simulate

STARTS = torch.tensor([[2.6, -1.7], [0.4, 0.9], [-1.2, 2.2]], dtype=torch.float64)
STEPS = 25


@pytest.mark.parametrize("name", ["adam", "adam_cg", "adam_cm", "sam_adam_cm", "adam_cm_debiased"])
def test_runs_batched_in_one_optimizer_equal_the_same_runs_alone(name):
    hyperparameters = optimizer_hyperparameters(name, capacity=3, decay=0.7, rho=0.05)
    noise = gaussian_noise([7, 8, 9], STEPS, 2, std=0.3)
    batch = simulate(name, ackley, STARTS, 0.05, STEPS, noise, hyperparameters)
    for i in range(len(STARTS)):
        alone = simulate(name, ackley, STARTS[i:i + 1], 0.05, STEPS, noise[i:i + 1], hyperparameters)
        assert torch.equal(batch[i], alone[0])


def test_sam_trajectory_is_cmopt_sam_with_noise_added_to_both_passes():
    noise = gaussian_noise([3], STEPS, 2, std=0.3)[0]
    path = simulate("sam_adam_cm", ackley, STARTS[:1], 0.05, STEPS, noise.unsqueeze(0),
                    dict(capacity=3, decay=0.5, rho=0.1))[0]
    # Written out with cmopt's public classes: the loss's gradient plus this step's noise, in both SAM passes.
    p = STARTS[0].clone().requires_grad_(True)
    optimizer = cmopt.SAM([p], cmopt.AdamCM, rho=0.1, lr=0.05, capacity=3, decay=0.5)
    expected = [p.detach().clone()]
    for t in range(STEPS):
        def closure(t=t):
            optimizer.zero_grad()
            loss = ackley(p) + noise[t] @ p
            loss.backward()
            return loss
        closure()
        optimizer.step(closure)
        expected.append(p.detach().clone())
    torch.testing.assert_close(path, torch.stack(expected), rtol=0, atol=1e-12)


def test_adam_cg_gets_capacity_and_decay_from_the_experiment_not_cmopt_defaults():
    # cmopt's AdamCG defaults to C=10; the experiment passes C explicitly (the spec's C=5)
    hyperparameters = optimizer_hyperparameters("adam_cg", capacity=5, decay=0.7, rho=0.05)
    assert hyperparameters == {"capacity": 5, "decay": 0.7}
    assert optimizer_hyperparameters("adam", 5, 0.7, 0.05) == {}
    assert optimizer_hyperparameters("sam_adam", 5, 0.7, 0.05) == {"rho": 0.05}
    assert optimizer_hyperparameters("sam_adam_cm", 5, 0.7, 0.05) == {"capacity": 5, "decay": 0.7, "rho": 0.05}


def test_exact_gradient_run_with_zero_noise_is_plain_adam():
    path = simulate("adam", ackley, STARTS[:1], 0.02, STEPS, torch.zeros(1, STEPS, 2, dtype=torch.float64), {})[0]
    p = STARTS[0].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([p], lr=0.02)
    for t in range(STEPS):
        optimizer.zero_grad()
        ackley(p).backward()
        optimizer.step()
        torch.testing.assert_close(path[t + 1], p.detach(), rtol=0, atol=1e-12)


def test_noise_stream_depends_on_the_seed_alone():
    together = gaussian_noise([5, 11], 10, 2, std=0.5)
    alone = gaussian_noise([11], 10, 2, std=0.5)
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])
    unit = torch.randn(10, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(together[0], 0.5 * unit)
    assert torch.equal(gaussian_noise([5], 10, 2, std=0.0), torch.zeros(1, 10, 2, dtype=torch.float64))


def test_value_and_gradient_returns_each_points_own_gradient():
    points = STARTS.clone()
    values, gradient = value_and_gradient(ackley, points)
    for point, value, g in zip(points, values, gradient):
        p = point.clone().requires_grad_(True)
        loss = ackley(p)
        loss.backward()
        assert float(value) == float(loss.detach())
        assert torch.equal(g, p.grad)


def test_escape_classification_on_hand_made_trajectories():
    barrier = torch.tensor(0.3, dtype=torch.float64)  # flat minimum at -1 (left), sharp one at 1 (right)
    trajectories = {
        "stays in the sharp basin": [1.0, 1.1, 0.9, 1.02],
        "leaves, then falls back": [1.0, 0.5, -0.2, 0.1, 0.6, 0.98],
        "crosses and settles in the flat minimum": [1.0, 0.4, 0.0, -0.8, -1.0],
        "flies far past the flat minimum": [1.0, 0.0, -3.0, -6.0],
        "flies far past the sharp minimum": [1.0, 2.0, 5.0],
        "ends exactly on the border": [1.0, 0.3],
    }
    expected = [False, False, True, True, False, False]
    finals = torch.tensor([path[-1] for path in trajectories.values()], dtype=torch.float64)
    assert escaped(finals, barrier, flat_minimum=-1.0).tolist() == expected
    # mirrored: the flat minimum on the right
    assert escaped(-finals, -barrier, flat_minimum=1.0).tolist() == expected


def test_the_debiased_variant_is_cmopt_adam_cm_with_variant_debiased():
    hyperparameters = optimizer_hyperparameters("adam_cm_debiased", capacity=3, decay=0.7, rho=0.05)
    assert hyperparameters == {"variant": "debiased", "capacity": 3, "decay": 0.7}
    noise = gaussian_noise([4], STEPS, 2, std=0.3)
    path = simulate("adam_cm_debiased", ackley, STARTS[:1], 0.05, STEPS, noise, hyperparameters)[0]
    p = STARTS[0].clone().requires_grad_(True)
    optimizer = cmopt.AdamCM([p], lr=0.05, capacity=3, decay=0.7, variant="debiased")
    expected = [p.detach().clone()]
    for t in range(STEPS):
        optimizer.zero_grad()
        (ackley(p) + noise[0, t] @ p).backward()
        optimizer.step()
        expected.append(p.detach().clone())
    torch.testing.assert_close(path, torch.stack(expected), rtol=0, atol=1e-12)
    paper = simulate("adam_cm", ackley, STARTS[:1], 0.05, STEPS, noise, dict(capacity=3, decay=0.7))[0]
    assert torch.equal(paper[1], paper[0]) and not torch.equal(path[1], path[0])  # the paper's first step stalls
