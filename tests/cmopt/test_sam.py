"""SAM: one step equals the two-pass update computed by hand; it trains; BatchNorm sees one pass."""

from __future__ import annotations

import copy

import pytest
import torch

from cmopt import SAM, create_optimizer, sam_step

A = torch.tensor([[3.0, 0.5, 0.0, 0.2, 0.0], [0.5, 2.0, 0.1, 0.0, 0.0], [0.0, 0.1, 1.0, 0.3, 0.0],
                  [0.2, 0.0, 0.3, 4.0, 0.6], [0.0, 0.0, 0.0, 0.6, 0.5]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)


def quadratic(parts):
    theta = torch.cat([p.reshape(-1) for p in parts])
    return 0.5 * theta @ A @ theta - B @ theta


def gradient(theta):
    return A @ theta - B


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_equals_the_hand_computed_two_pass_update(adaptive):
    rho, lr = 0.3, 0.1
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.7, -0.4], dtype=torch.float64)
    parts = [torch.nn.Parameter(theta0[:2].clone()), torch.nn.Parameter(theta0[2:].reshape(1, 3).clone())]
    opt = SAM(parts, torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)

    def closure():
        opt.zero_grad()
        loss = quadratic(parts)
        loss.backward()
        return loss

    closure()
    opt.step(closure)

    g0 = gradient(theta0)
    if adaptive:
        e = rho * theta0**2 * g0 / torch.linalg.norm(theta0 * g0)
    else:
        e = rho * g0 / torch.linalg.norm(g0)
    expected = theta0 - lr * gradient(theta0 + e)
    got = torch.cat([p.detach().reshape(-1) for p in parts])
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def test_first_and_second_step_move_to_the_perturbed_point_and_back():
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.7, -0.4], dtype=torch.float64)
    p = torch.nn.Parameter(theta0.clone())
    opt = SAM([p], torch.optim.SGD, rho=0.2, lr=0.0)
    quadratic([p]).backward()
    opt.first_step(zero_grad=True)
    g0 = gradient(theta0)
    torch.testing.assert_close(p.detach(), theta0 + 0.2 * g0 / g0.norm(), rtol=1e-14, atol=1e-14)
    quadratic([p]).backward()
    opt.second_step()
    assert torch.equal(p.detach(), theta0)  # restored exactly, lr = 0


def test_sam_adam_cm_trains_a_small_network():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, :1] * x[:, 1:2] + torch.sin(2 * x[:, 2:3])).detach()
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = create_optimizer("sam_adam_cm", model, lr=3e-3, rho=0.05)
    losses = [float(sam_step(opt, model, lambda: torch.nn.functional.mse_loss(model(x), y))) for _ in range(300)]
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])  # measured: 1.64 -> 0.20
    assert opt.base_optimizer.critical_buffers[0].steps == 300


def test_sam_step_updates_batchnorm_statistics_in_the_first_pass_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    expected = copy.deepcopy(model)
    expected(x)  # one training-mode forward at the starting weights
    opt = create_optimizer("sam_adam", model, lr=0.1, rho=0.5)
    sam_step(opt, model, lambda: torch.nn.functional.mse_loss(model(x), y))
    bn, ref = model[1], expected[1]
    assert torch.equal(bn.running_mean, ref.running_mean)
    assert torch.equal(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1


def test_lr_scheduler_and_added_groups_reach_the_base_optimizer():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = create_optimizer("sam_adam_cm", [p], lr=1.0, rho=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(2)
    opt.first_step()
    opt.second_step()
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.5
    opt.add_param_group({"params": [q], "lr": 0.25})
    assert opt.base_optimizer.param_groups[1]["lr"] == 0.25 and opt.param_groups[1]["rho"] == 0.1


def test_a_tensor_without_a_second_pass_gradient_is_still_restored():
    a, b = torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([3.0]))
    opt = SAM([a, b], torch.optim.SGD, rho=0.5, lr=0.0)
    a.grad, b.grad = torch.tensor([1.0, 0.0]), torch.tensor([1.0])
    opt.first_step(zero_grad=True)
    assert b.item() != 3.0
    a.grad = torch.tensor([1.0, 1.0])  # the second pass did not reach b
    opt.second_step()
    assert b.item() == 3.0 and a.tolist() == [1.0, 2.0]


def test_the_readme_loop_without_zero_grad_takes_the_hand_computed_sam_steps():
    # README: `loss = cmopt.sam_step(opt, model, lambda: loss_fn(model(x), y))` in a loop, no zero_grad.
    rho, lr = 0.3, 0.1
    theta = torch.tensor([0.5, -1.0, 2.0, 0.7, -0.4], dtype=torch.float64)
    parts = [torch.nn.Parameter(theta[:2].clone()), torch.nn.Parameter(theta[2:].reshape(1, 3).clone())]
    model = torch.nn.ParameterList(parts)
    opt = create_optimizer("sam_sgd", parts, lr=lr, rho=rho)
    for _ in range(5):
        loss = sam_step(opt, model, lambda: quadratic(parts))
        g = gradient(theta)
        assert float(loss) == pytest.approx(float(0.5 * theta @ A @ theta - B @ theta), rel=1e-14)
        theta = theta - lr * gradient(theta + rho * g / torch.linalg.norm(g))
        got = torch.cat([p.detach().reshape(-1) for p in parts])
        torch.testing.assert_close(got, theta, rtol=1e-14, atol=1e-14)
        assert all(p.grad is None for p in parts)  # nothing left for the next step's first pass


def test_sam_step_ignores_a_gradient_left_by_the_caller():
    theta = torch.tensor([0.5, -1.0, 2.0, 0.7, -0.4], dtype=torch.float64)
    p = torch.nn.Parameter(theta.clone())
    opt = create_optimizer("sam_sgd", [p], lr=0.1, rho=0.3)
    p.grad = torch.full_like(theta, 100.0)  # e.g. a backward() the caller ran for logging
    sam_step(opt, torch.nn.ParameterList([p]), lambda: quadratic([p]))
    g = gradient(theta)
    torch.testing.assert_close(p.detach(), theta - 0.1 * gradient(theta + 0.3 * g / g.norm()),
                               rtol=1e-14, atol=1e-14)


def _readme_loop(model, opt, x, y, steps):
    for _ in range(steps):
        sam_step(opt, model, lambda: torch.nn.functional.mse_loss(model(x), y))


def test_the_readme_loop_saved_and_restored_at_step_40_ends_bitwise_as_uninterrupted():
    import io

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        return model, create_optimizer("sam_adam_cm", model, lr=3e-3, rho=0.05)

    torch.manual_seed(1)
    x = torch.randn(64, 4)
    y = x[:, :1] * x[:, 1:2]
    model, opt = build()
    _readme_loop(model, opt, x, y, 100)

    first, first_opt = build()
    _readme_loop(first, first_opt, x, y, 40)
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed, resumed_opt = build()
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    _readme_loop(resumed, resumed_opt, x, y, 60)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
