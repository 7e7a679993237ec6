"""Loss-landscape flatness measures from Hessian-vector products."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cmopt._norm import frozen_norm_statistics

__all__ = ["hessian_vector_product", "top_hessian_eigenvalue", "hessian_trace"]


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
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"top_hessian_eigenvalue: tol must be a number > 0, got {tol!r}.")
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
