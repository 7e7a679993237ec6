"""The Adam update shared by Adam+CM and Adam+CG, in the same operation order as torch.optim.Adam."""

from __future__ import annotations

import torch

from cmopt._ops import Ops
from cmopt.critical import CriticalOptimizer


class CriticalAdam(CriticalOptimizer):
    """What Adam+CM and Adam+CG share: Adam's hyperparameters and the two moments."""

    def __init__(self, params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable):
        betas = tuple(betas) if isinstance(betas, list) else betas  # a list from a config file
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, capacity=capacity, decay=decay,
                        buffer_dtype=buffer_dtype, foreach=foreach, capturable=capturable)
        super().__init__(params, defaults)

    def _init_tensor_state(self, group, param, state):
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def adam_apply(ops: Ops, group: dict, params, numerators, exp_avg_sqs, squared, steps) -> None:
    """v <- β2·v + (1-β2)·x²;  p <- p - lr/(1-β1^t) · n / (sqrt(v)/sqrt(1-β2^t) + ε).

    `numerators` is n (Adam: m; Adam+CM: the aggregated direction d), `squared` is x.
    """
    lr, eps = group["lr"], group["eps"]
    beta1, beta2 = group["betas"]
    ops.mul_(exp_avg_sqs, beta2)
    ops.addcmul_(exp_avg_sqs, squared, squared, 1 - beta2)
    if group["capturable"]:
        # Bias corrections from device step tensors: no host read, so the step can be captured.
        for p, n, v, t in zip(params, numerators, exp_avg_sqs, steps):
            step_size = -lr / (1 - torch.pow(beta1, t))
            denom = (v.sqrt() / (1 - torch.pow(beta2, t)).sqrt()).add_(eps)
            p.add_(step_size * n / denom)
        return
    step_sizes = [(lr / (1 - beta1**t)) * -1 for t in steps]
    bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in steps]
    denoms = ops.sqrt(exp_avg_sqs)
    ops.div_(denoms, bias_correction2_sqrt)
    ops.add_scalar_(denoms, eps)
    ops.addcdiv_(params, numerators, denoms, step_sizes)
