import pytest
import torch
from torch import nn

from cmopt.flatness import hessian_trace, hessian_vector_product, top_hessian_eigenvalue

D, N = 8, 64


def _mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _neg_mse(model, batch):
    return -_mse(model, batch)


@pytest.fixture
def least_squares():
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    x = x * torch.logspace(-1, 0.7, D, dtype=torch.float64)  # spread the spectrum
    y = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(D, 1, bias=False).to(torch.float64)
    hessian = 2.0 / N * x.T @ x  # closed form for mean((Xw - y)^2)
    return model, (x, y), hessian


def test_top_eigenvalue_matches_closed_form(least_squares):
    model, batch, hessian = least_squares
    expected = torch.linalg.eigvalsh(hessian).max().item()
    got = top_hessian_eigenvalue(model, _mse, batch, max_iter=1000, tol=1e-10)
    assert got == pytest.approx(expected, rel=1e-3)


def test_top_eigenvalue_is_largest_magnitude(least_squares):
    model, batch, hessian = least_squares
    expected = -torch.linalg.eigvalsh(hessian).max().item()
    got = top_hessian_eigenvalue(model, _neg_mse, batch, max_iter=1000, tol=1e-10)
    assert got == pytest.approx(expected, rel=1e-3)


def test_trace_matches_closed_form(least_squares):
    model, batch, hessian = least_squares
    got = hessian_trace(model, _mse, batch, n_samples=2000)
    assert got == pytest.approx(torch.trace(hessian).item(), rel=0.05)


def test_hessian_vector_product_matches_closed_form(least_squares):
    model, batch, hessian = least_squares
    v = torch.randn(1, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (hv,) = hessian_vector_product(_mse(model, batch), [model.weight], [v])
    torch.testing.assert_close(hv, v @ hessian)


def test_two_layer_with_bias_matches_closed_form():
    # A purely linear stack is affine in the input, so its Hessian w.r.t. the last layer's
    # weight and bias is 2/n [X1 1]^T [X1 1] with X1 the (fixed) first-layer output.
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(D, 4), nn.Linear(4, 1)).to(torch.float64)
    model[0].requires_grad_(False)
    with torch.no_grad():
        features = torch.cat([model[0](x), torch.ones(N, 1, dtype=torch.float64)], dim=1)
    hessian = 2.0 / N * features.T @ features
    top = top_hessian_eigenvalue(model, _mse, (x, y), max_iter=1000, tol=1e-10)
    assert top == pytest.approx(torch.linalg.eigvalsh(hessian).max().item(), rel=1e-3)
    trace = hessian_trace(model, _mse, (x, y), n_samples=2000)
    assert trace == pytest.approx(torch.trace(hessian).item(), rel=0.05)


def test_batchnorm_stats_grads_mode_and_global_rng_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1))
    x, y = torch.randn(N, D), torch.randn(N, 1)
    model.train()
    _mse(model, (x, y)).backward()  # populate running stats and .grad
    bn = model[1]
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    grads = [p.grad.clone() for p in model.parameters()]
    rng_state = torch.get_rng_state()

    top_hessian_eigenvalue(model, _mse, (x, y), max_iter=5)
    hessian_trace(model, _mse, (x, y), n_samples=5)

    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, stats[0])
    assert torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_eval_mode_kept():
    model = nn.Sequential(nn.Linear(D, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).eval()
    batch = (torch.randn(N, D), torch.randn(N, 1))
    hessian_trace(model, _mse, batch, n_samples=2)
    assert not any(m.training for m in model.modules())


def test_seeded_results_are_reproducible(least_squares):
    model, batch, _ = least_squares
    first = hessian_trace(model, _mse, batch, n_samples=10, seed=3)
    assert hessian_trace(model, _mse, batch, n_samples=10, seed=3) == first


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"tol": 0}, "tol"),
        ({"tol": -1e-3}, "tol"),
    ],
)
def test_top_eigenvalue_rejects_bad_arguments(least_squares, kwargs, name):
    model, batch, _ = least_squares
    with pytest.raises(ValueError, match=name):
        top_hessian_eigenvalue(model, _mse, batch, **kwargs)


@pytest.mark.parametrize("n_samples", [0, -1, 1.0])
def test_trace_rejects_bad_n_samples(least_squares, n_samples):
    model, batch, _ = least_squares
    with pytest.raises(ValueError, match="n_samples"):
        hessian_trace(model, _mse, batch, n_samples=n_samples)


def test_no_trainable_parameters_raises(least_squares):
    model, batch, _ = least_squares
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        top_hessian_eigenvalue(model, _mse, batch)
    with pytest.raises(ValueError, match="requires_grad"):
        hessian_trace(model, _mse, batch)
