"""Loss-landscape flatness measures: from Hessian-vector products (the top eigenvalue by power iteration,
the top k by Lanczos, the trace by Hutchinson), from the loss within a ball of radius ρ (ε-sharpness,
the mean increase under random perturbations), and the distance travelled from the initial weights.

Each leaves the model as it found it: weights, gradients, BatchNorm statistics, train/eval mode, and
torch's global random generator (a private generator, seeded by `seed`, draws every random vector)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cmopt._norm import frozen_norm_statistics

__all__ = ["hessian_vector_product", "top_hessian_eigenvalue", "top_hessian_eigenvalues", "hessian_trace",
           "epsilon_sharpness", "average_sharpness", "parameter_distance"]


def hessian_vector_product(
    loss: Tensor, params: Sequence[Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """Return ``H @ v`` for the Hessian ``H`` of scalar ``loss`` w.r.t. ``params``."""
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return _hvp(grads, params, vectors)


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """Dominant (largest-magnitude) Hessian eigenvalue of ``loss_fn(model, batch)``.

    Power iteration with a Rayleigh-quotient estimate, as in PyHessian; stops when
    ``|λ_k - λ_{k-1}| <= tol * |λ_k|`` or after ``max_iter`` iterations. The result
    may be negative if the Hessian's largest-magnitude eigenvalue is negative.
    """
    _check_int("top_hessian_eigenvalue", "max_iter", max_iter)
    _check_positive("top_hessian_eigenvalue", "tol", tol)
    params = _trainable_params(model)
    generator = _generator(params, seed)
    v = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    v = _scale(v, 1.0 / _norm(v))
    with frozen_norm_statistics(model):
        grads = _gradient(model, loss_fn, batch, params)
        eigenvalue = None
        for _ in range(max_iter):
            hv = _hvp(grads, params, v)
            previous, eigenvalue = eigenvalue, _dot(v, hv)
            hv_norm = _norm(hv)
            if hv_norm == 0.0:
                return 0.0
            v = _scale(hv, 1.0 / hv_norm)
            if previous is not None and abs(eigenvalue - previous) <= tol * abs(eigenvalue):
                break
    return eigenvalue


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    *,
    n_samples: int = 100,
    seed: int = 0,
) -> float:
    """Hutchinson estimate of the Hessian trace of ``loss_fn(model, batch)``.

    Returns the mean of ``vᵀHv`` over ``n_samples`` Rademacher vectors ``v``.
    """
    _check_int("hessian_trace", "n_samples", n_samples)
    params = _trainable_params(model)
    generator = _generator(params, seed)
    total = 0.0
    with frozen_norm_statistics(model):
        grads = _gradient(model, loss_fn, batch, params)
        for _ in range(n_samples):
            v = [_rademacher(p, generator) for p in params]
            total += _dot(v, _hvp(grads, params, v))
    return total / n_samples


def top_hessian_eigenvalues(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    *,
    k: int = 5,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """The ``k`` Hessian eigenvalues of largest magnitude of ``loss_fn(model, batch)``, largest first.

    Lanczos with full reorthogonalisation (in float64 dot products) from a seeded random vector; the
    Ritz values of the tridiagonal matrix estimate the extreme eigenvalues. Stops when each of the k
    Ritz pairs has residual ``||H y - θ y|| <= tol * |θ|`` or after ``max_iter`` Hessian-vector products
    (exact once ``max_iter`` reaches the number of parameters). Keeps ``max_iter`` vectors of the
    parameters' size. ``|λ_1 / λ_k|`` is the reviewers' ratio of the top to the k-th eigenvalue.
    """
    owner = "top_hessian_eigenvalues"
    _check_int(owner, "k", k)
    _check_int(owner, "max_iter", max_iter)
    _check_positive(owner, "tol", tol)
    params = _trainable_params(model)
    size = sum(p.numel() for p in params)
    if k > min(size, max_iter):
        raise ValueError(f"{owner}: k={k} exceeds min(max_iter={max_iter}, parameters={size}); pass k <= "
                         f"{min(size, max_iter)} or a larger max_iter.")
    generator = _generator(params, seed)
    v = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    basis, alphas, betas = [_scale(v, 1.0 / _norm(v))], [], []
    with frozen_norm_statistics(model):
        grads = _gradient(model, loss_fn, batch, params)
        for j in range(min(size, max_iter)):
            w = _hvp(grads, params, basis[j])
            alphas.append(_dot(w, basis[j]))
            for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
                for u in basis:
                    w = _axpy(-_dot(w, u), u, w)
            beta = _norm(w)
            values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
            top = torch.argsort(values.abs(), descending=True)[:k]
            residuals = beta * vectors[-1, top].abs()  # ||H y - θ y|| of each Ritz pair
            if len(alphas) >= k and bool((residuals <= tol * values[top].abs()).all()):
                break
            if beta <= 1e-12 * max(abs(a) for a in alphas):  # an invariant subspace: these are exact
                break
            betas.append(beta)
            basis.append(_scale(w, 1.0 / beta))
    return [float(x) for x in values[top]]


def epsilon_sharpness(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    *,
    rho: float = 0.05,
    ascent_steps: int = 10,
    seed: int = 0,
) -> float:
    """ε-sharpness (Keskar et al., 2017, in an L2 ball): max over ||δ|| <= ρ of L(θ + δ) - L(θ).

    Estimated from below by ascent on the sphere ||δ|| = ρ: δ₀ = ρ·u for a seeded random unit u, then
    ``ascent_steps`` times δ <- ρ·∇L(θ + δ)/||∇L(θ + δ)||; returns the largest increase among δ = 0 and
    the points visited. On a quadratic at its minimum this is power iteration: ½ρ²λ_max in the limit.
    """
    owner = "epsilon_sharpness"
    _check_positive(owner, "rho", rho)
    _check_int(owner, "ascent_steps", ascent_steps)
    params = _trainable_params(model)
    generator = _generator(params, seed)
    u = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    delta = _scale(u, rho / _norm(u))
    with frozen_norm_statistics(model), _restored(params) as origin:
        base = _loss_value(model, loss_fn, batch)
        best = 0.0
        for step in range(ascent_steps + 1):
            _place(params, origin, delta)
            with torch.enable_grad():
                loss = _scalar(loss_fn(model, batch))
                best = max(best, float(loss.detach()) - base)
                if step == ascent_steps:
                    break
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            norm = _norm(grads)
            if norm == 0.0:  # a stationary point of the perturbed loss: no ascent direction
                break
            delta = _scale(grads, rho / norm)
    return best


def average_sharpness(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    *,
    rho: float = 0.05,
    n_samples: int = 10,
    seed: int = 0,
) -> float:
    """The mean of L(θ + δ) - L(θ) over δ drawn uniformly from the sphere ||δ|| = ρ (the radius of
    `epsilon_sharpness`), in ``n_samples`` antithetic pairs (δ, -δ), so the first-order term cancels
    exactly. On a quadratic with Hessian H over n parameters its expectation is ½ρ²·tr(H)/n."""
    owner = "average_sharpness"
    _check_positive(owner, "rho", rho)
    _check_int(owner, "n_samples", n_samples)
    params = _trainable_params(model)
    generator = _generator(params, seed)
    total = 0.0
    with frozen_norm_statistics(model), _restored(params) as origin:
        base = _loss_value(model, loss_fn, batch)
        for _ in range(n_samples):
            u = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
            u = _scale(u, rho / _norm(u))
            for sign in (1.0, -1.0):
                _place(params, origin, _scale(u, sign))
                total += _loss_value(model, loss_fn, batch) - base
    return total / (2 * n_samples)


def parameter_distance(current: nn.Module | Iterable[Tensor], initial: Iterable[Tensor]) -> float:
    """||θ - θ₀||₂ over all tensors (summed in float64): the distance travelled from `initial`, e.g.
    ``[p.detach().clone() for p in model.parameters()]`` taken before training."""
    now = list(current.parameters()) if isinstance(current, nn.Module) else list(current)
    then = list(initial)
    if len(now) != len(then):
        raise ValueError(f"parameter_distance: {len(now)} current tensors but {len(then)} initial ones; pass "
                         f"the initial copy of the same parameters.")
    return math.sqrt(math.fsum(float((a.detach().double() - b.detach().double().to(a.device)).pow(2).sum())
                               for a, b in zip(now, then)))


def _check_positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}: {name} must be a number > 0, got {value!r}.")


def _check_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}.")


def _trainable_params(model: nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters with requires_grad=True.")
    return params


def _generator(params: list[Tensor], seed: int) -> torch.Generator:
    # A private generator keeps results reproducible without touching the global RNG.
    return torch.Generator(device=params[0].device).manual_seed(seed)


def _gradient(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], batch: Any, params: list[Tensor]
) -> tuple[Tensor | None, ...]:
    with torch.enable_grad():
        loss = loss_fn(model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}.")
        # Keep the first-order graph so every HVP reuses one gradient computation.
        return torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)


def _hvp(
    grads: Sequence[Tensor | None], params: list[Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    if len(vectors) != len(params):
        raise ValueError(f"expected {len(params)} vectors, got {len(vectors)}")
    with torch.enable_grad():
        terms = [(g * v).sum() for g, v in zip(grads, vectors) if g is not None and g.requires_grad]
        if not terms:  # loss is at most linear in params, so the Hessian is zero
            return [torch.zeros_like(p) for p in params]
        hv = torch.autograd.grad(sum(terms), params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv)]


def _rademacher(param: Tensor, generator: torch.Generator) -> Tensor:
    bits = torch.randint(0, 2, param.shape, generator=generator, device=param.device)
    return (bits * 2 - 1).to(param.dtype)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return math.fsum(float((x * y).sum()) for x, y in zip(a, b))


def _norm(vectors: Sequence[Tensor]) -> float:
    return math.sqrt(_dot(vectors, vectors))


def _scale(vectors: Sequence[Tensor], factor: float) -> list[Tensor]:
    return [v * factor for v in vectors]


def _axpy(a: float, x: Sequence[Tensor], y: Sequence[Tensor]) -> list[Tensor]:
    return [yi + a * xi for xi, yi in zip(x, y)]


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return t


def _scalar(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}.")
    return loss.reshape(())


def _loss_value(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], batch: Any) -> float:
    with torch.no_grad():
        return float(_scalar(loss_fn(model, batch)))


@contextlib.contextmanager
def _restored(params: list[Tensor]):
    """Perturbations inside move the parameters from a saved copy; they are put back exactly after."""
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def _place(params: list[Tensor], origin: list[Tensor], delta: Sequence[Tensor]) -> None:
    """θ <- θ₀ + δ, θ₀ the copy `_restored` yields."""
    with torch.no_grad():
        for p, o, d in zip(params, origin, delta):
            p.copy_(o + d)
