"""Optimizers by name: `create_optimizer("sam_adam_cm", model, lr=1e-3, rho=0.05)`."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cmopt.adam_cg import AdamCG
from cmopt.adam_cm import AdamCM
from cmopt.sam import SAM
from cmopt.sgd_cm import SGDCM

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adam_cg": AdamCG,
    "adam_cm": AdamCM,
    "sgd_cm": SGDCM,
}
SAM_PREFIX = "sam_"
SAM_ARGUMENTS = ("rho", "adaptive")
OPTIMIZER_NAMES: tuple[str, ...] = (*BASE_OPTIMIZERS, *(SAM_PREFIX + n for n in BASE_OPTIMIZERS))

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


def create_optimizer(name: str, model_or_params: nn.Module | Iterable, *,
                     no_decay_bias_and_norm: bool = False, **hyperparameters: Any) -> torch.optim.Optimizer:
    """Build the optimizer called `name` (one of OPTIMIZER_NAMES) over a model or its parameters.

    `no_decay_bias_and_norm=True` (needs a model) puts biases, normalisation weights and embeddings (an
    nn.Embedding's weight, also where an output layer shares it) in a second group with weight_decay=0. Names starting with "sam_" wrap the rest in SAM and take `rho` and
    `adaptive` besides the base optimizer's own hyperparameters.
    """
    accepted = hyperparameter_names(name)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(f"Optimizer {name!r} does not take {', '.join(unknown)}. It takes: {', '.join(accepted)}.")
    use_sam = name.startswith(SAM_PREFIX)
    base_class = BASE_OPTIMIZERS[name[len(SAM_PREFIX):] if use_sam else name]
    sam_kwargs = {k: hyperparameters.pop(k) for k in SAM_ARGUMENTS if k in hyperparameters} if use_sam else {}
    params = _parameter_groups(model_or_params, no_decay_bias_and_norm)
    if use_sam:
        return SAM(params, base_class, **sam_kwargs, **hyperparameters)
    return base_class(params, **hyperparameters)


def hyperparameter_names(name: str) -> tuple[str, ...]:
    """The keyword arguments `create_optimizer(name, ...)` passes on (besides no_decay_bias_and_norm)."""
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"Unknown optimizer {name!r}. Valid names: {', '.join(OPTIMIZER_NAMES)}.")
    use_sam = name.startswith(SAM_PREFIX)
    base_class = BASE_OPTIMIZERS[name[len(SAM_PREFIX):] if use_sam else name]
    accepted = [p for p in inspect.signature(base_class.__init__).parameters if p not in ("self", "params")]
    return (*accepted, *(SAM_ARGUMENTS if use_sam else ()))


def _parameter_groups(model_or_params, no_decay_bias_and_norm: bool):
    if not no_decay_bias_and_norm:
        return model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    if not isinstance(model_or_params, nn.Module):
        raise ValueError(
            "no_decay_bias_and_norm=True needs the model (an nn.Module) to tell biases and normalisation "
            "weights apart; pass the model instead of its parameters."
        )
    free = {id(p) for module in model_or_params.modules() for name, p in module.named_parameters(recurse=False)
            if name == "bias" or isinstance(module, (*_NORM_LAYERS, nn.Embedding))}  # any module holding a tied one
    decay, no_decay = [], []
    for p in model_or_params.parameters():  # each shared parameter once
        if p.requires_grad:
            (no_decay if id(p) in free else decay).append(p)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
