"""Named argument checks shared by every optimizer: each error names the value, its range and a fix."""

from __future__ import annotations

import numbers

import torch

from cmopt.buffer import PRIORITY_RULES


def _number(owner: str, name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{owner}: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}.")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}.")
    return float(value)


def non_negative(owner: str, name: str, value) -> None:
    if not _number(owner, name, value) >= 0.0:
        raise ValueError(f"{owner}: {name} must be >= 0, got {value}. Pass a non-negative value.")


def in_unit_interval(owner: str, name: str, value, *, closed_right: bool) -> None:
    x = _number(owner, name, value)
    ok = 0.0 <= x <= 1.0 if closed_right else 0.0 <= x < 1.0
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{owner}: {name} must lie in {interval}, got {value}.")


def betas(owner: str, value) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2) in [0, 1), got {value!r}.")
    for i, beta in enumerate(value):
        in_unit_interval(owner, f"betas[{i}]", beta, closed_right=False)


def capacity(owner: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"{owner}: capacity must be a non-negative integer (the number C of critical entries kept; "
            f"0 disables the buffer), got {value!r}."
        )


def buffer_dtype(owner: str, value) -> None:
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ValueError(
            f"{owner}: buffer_dtype must be None (the parameter's dtype) or a floating torch.dtype such as "
            f"torch.bfloat16, got {value!r}."
        )


def one_of(choices: tuple[str, ...], meaning: str):
    """A check that the value is one of `choices` (strings), naming them and what the option chooses."""
    def check(owner: str, name: str, value) -> None:
        if value not in choices:
            raise ValueError(
                f"{owner}: {name}={value!r} is not one of {', '.join(choices)} ({meaning}). "
                f"Pass e.g. {name}={choices[0]!r} (the default)."
            )
    return check


def dense(owner: str, index: int, grad: torch.Tensor) -> None:
    if grad.is_sparse:
        raise RuntimeError(
            f"{owner}: parameter {index} of its group has a sparse gradient, which is not supported. "
            f"Use dense gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam for that parameter."
        )


def _unit(closed_right: bool):
    return lambda owner, name, value: in_unit_interval(owner, name, value, closed_right=closed_right)


# Hyperparameter name -> check(owner, name, value), for the constructor and for added groups alike.
HYPERPARAMETERS = {
    "lr": non_negative,
    "eps": non_negative,
    "weight_decay": non_negative,
    "momentum": non_negative,
    "rho": non_negative,
    "dampening": _unit(closed_right=True),
    "decay": _unit(closed_right=True),
    "betas": lambda owner, name, value: betas(owner, value),
    "capacity": lambda owner, name, value: capacity(owner, value),
    "buffer_dtype": lambda owner, name, value: buffer_dtype(owner, value),
    "priority": one_of(PRIORITY_RULES, "what ranks a candidate for the critical buffer"),
    "variant": one_of(("paper", "debiased"), "Adam+CM's arithmetic: the released code's, or ours without its early blow-up"),
}


def hyperparameters(owner: str, values: dict) -> None:
    for name, value in values.items():
        if name in HYPERPARAMETERS:
            HYPERPARAMETERS[name](owner, name, value)
