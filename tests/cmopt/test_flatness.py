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


# ---- the top k eigenvalues, ε-sharpness, the mean perturbed increase, the distance travelled -----------

from cmopt.flatness import average_sharpness, epsilon_sharpness, parameter_distance, top_hessian_eigenvalues  # noqa: E402


class Quadratic(nn.Module):
    """L(θ) = ½ (θ - c)ᵀ H (θ - c), H = Q diag(spectrum) Qᵀ with a seeded random rotation Q."""

    def __init__(self, spectrum, centre=None, seed=0):
        super().__init__()
        n = len(spectrum)
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        self.register_buffer("hessian", q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T)
        self.register_buffer("q", q)
        self.register_buffer("centre", torch.zeros(n, dtype=torch.float64) if centre is None else centre)
        self.theta = nn.Parameter(self.centre.clone())

    def forward(self, _batch):
        r = self.theta - self.centre
        return 0.5 * r @ self.hessian @ r


def _quadratic_loss(model, batch):
    return model(batch)


def test_top_k_eigenvalues_match_a_known_spectrum_largest_magnitude_first():
    spectrum = [10.0, 8.0, -7.0, 6.0, 5.0] + torch.linspace(-2, 2, 35, dtype=torch.float64).tolist()
    model = Quadratic(spectrum)
    exact = top_hessian_eigenvalues(model, _quadratic_loss, None, k=5, max_iter=40, tol=1e-12)
    assert exact == pytest.approx([10.0, 8.0, -7.0, 6.0, 5.0], rel=1e-10)
    # Fewer products than parameters: the well-separated extremes converge first, to the tolerance.
    early = top_hessian_eigenvalues(model, _quadratic_loss, None, k=3, max_iter=30, tol=1e-6)
    assert early == pytest.approx([10.0, 8.0, -7.0], rel=1e-5)


def test_top_k_eigenvalues_match_eigvalsh_of_a_small_models_full_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(torch.float64)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 3, generator=gen, dtype=torch.float64), torch.randn(20, 2, generator=gen, dtype=torch.float64)
    params = list(model.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def loss_of(flat):
        tensors = [t.reshape(s) for t, s in zip(flat.split(sizes), shapes)]
        names = [n for n, _ in model.named_parameters()]
        out = torch.func.functional_call(model, dict(zip(names, tensors)), (x,))
        return ((out - y) ** 2).mean()

    hessian = torch.autograd.functional.hessian(loss_of, torch.cat([p.detach().flatten() for p in params]))
    values = torch.linalg.eigvalsh(hessian)
    expected = values[torch.argsort(values.abs(), descending=True)][:4].tolist()
    got = top_hessian_eigenvalues(model, _mse, (x, y), k=4, max_iter=sum(sizes), tol=1e-12)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-12)
    assert got[0] == pytest.approx(top_hessian_eigenvalue(model, _mse, (x, y), max_iter=1000, tol=1e-10), rel=1e-3)


def test_epsilon_sharpness_at_the_minimum_is_half_rho_squared_lambda_max():
    model = Quadratic([10.0, 1.0, 0.5, 0.1])
    got = epsilon_sharpness(model, _quadratic_loss, None, rho=0.1, ascent_steps=10)
    assert got == pytest.approx(0.5 * 0.1**2 * 10.0, rel=1e-8)
    assert torch.equal(model.theta.detach(), model.centre)  # put back


def test_epsilon_sharpness_away_from_the_minimum_along_the_top_direction():
    """θ - c = a·q₁ (q₁ the top eigenvector): the best δ is ρ·q₁, an increase of ρλ₁a + ½ρ²λ₁."""
    model = Quadratic([10.0, 1.0, 0.5, 0.1])
    a, rho = 0.3, 0.1
    with torch.no_grad():
        model.theta.add_(a * model.q[:, 0])
    got = epsilon_sharpness(model, _quadratic_loss, None, rho=rho, ascent_steps=20)
    assert got == pytest.approx(rho * 10.0 * a + 0.5 * rho**2 * 10.0, rel=1e-8)


def test_average_sharpness_is_half_rho_squared_mean_eigenvalue_and_ignores_the_slope():
    spectrum = [10.0, 1.0, 0.5, 0.1]
    model = Quadratic(spectrum)
    rho = 0.2
    at_minimum = average_sharpness(model, _quadratic_loss, None, rho=rho, n_samples=4000)
    expected = 0.5 * rho**2 * sum(spectrum) / len(spectrum)
    assert at_minimum == pytest.approx(expected, rel=0.03)  # sampling error ~1% at 4000 pairs
    with torch.no_grad():
        model.theta.add_(torch.tensor([0.5, -0.2, 0.1, 0.3], dtype=torch.float64))
    sloped = average_sharpness(model, _quadratic_loss, None, rho=rho, n_samples=4000)
    assert sloped == pytest.approx(at_minimum, rel=1e-9)  # the antithetic pairs cancel gᵀδ exactly


def test_parameter_distance_is_the_euclidean_norm_over_all_tensors():
    model = nn.Linear(2, 1)
    initial = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        model.weight.add_(torch.tensor([[3.0, 0.0]]))
        model.bias.add_(torch.tensor([4.0]))
    assert parameter_distance(model, initial) == pytest.approx(5.0, rel=1e-6)
    assert parameter_distance(list(model.parameters()), initial) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="2 current tensors but 1 initial"):
        parameter_distance(model, initial[:1])


def test_new_measures_leave_the_model_and_the_global_generator_as_they_were():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1))
    x, y = torch.randn(N, D), torch.randn(N, 1)
    _mse(model, (x, y)).backward()
    weights = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    stats = model[1].running_mean.clone()
    rng_state = torch.get_rng_state()
    top_hessian_eigenvalues(model, _mse, (x, y), k=2, max_iter=5)
    epsilon_sharpness(model, _mse, (x, y), rho=0.05, ascent_steps=3)
    average_sharpness(model, _mse, (x, y), rho=0.05, n_samples=3)
    for p, w, g in zip(model.parameters(), weights, grads):
        assert torch.equal(p, w) and torch.equal(p.grad, g)
    assert torch.equal(model[1].running_mean, stats) and model.training
    assert torch.equal(torch.get_rng_state(), rng_state)


@pytest.mark.parametrize(("measure", "kwargs", "message"), [
    (top_hessian_eigenvalues, {"k": 0}, "k must be an integer >= 1"),
    (top_hessian_eigenvalues, {"k": 9, "max_iter": 100}, r"k=9 exceeds min\(max_iter=100, parameters=8\)"),
    (top_hessian_eigenvalues, {"tol": 0}, "tol must be a number > 0"),
    (epsilon_sharpness, {"rho": 0}, "rho must be a number > 0"),
    (epsilon_sharpness, {"ascent_steps": 0}, "ascent_steps must be an integer >= 1"),
    (average_sharpness, {"n_samples": 0}, "n_samples must be an integer >= 1"),
])
def test_new_measures_reject_bad_arguments(least_squares, measure, kwargs, message):
    model, batch, _ = least_squares
    with pytest.raises(ValueError, match=message):
        measure(model, _mse, batch, **kwargs)
