"""What Adam+CM and Adam+CG share: Adam's hyperparameters, the two moments, and Adam's update, in the
same operation order as torch.optim.Adam (so that capacity 0 is torch's Adam/AdamW to the bit)."""

from __future__ import annotations

import torch

from cmopt.critical import CriticalOptimizer


class CriticalAdam(CriticalOptimizer):
    def __init__(self, params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable,
                 priority_group, priority, **extra):
        betas = tuple(betas) if isinstance(betas, list) else betas  # a list from a config file
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, capacity=capacity, decay=decay,
                        priority=priority, buffer_dtype=buffer_dtype, foreach=foreach, capturable=capturable, **extra)
        super().__init__(params, defaults, priority_group)

    def _init_tensor_state(self, group, param, state):
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def lr_scalar(lr, capturable: bool):
    """A learning rate as the arithmetic takes it (torch.optim accepts a one-element tensor too): a
    float, or a 0-d tensor on the capturable path when the lr is a tensor."""
    if isinstance(lr, torch.Tensor):
        return lr.reshape(()) if capturable else float(lr)
    return lr


def lr_product(lr, wd: float, capturable: bool):
    """1 - lr·wd, the decoupled weight-decay factor. Capturable: a tensor, else a compiled step would keep
    the lr it traced (a scheduler's change lost)."""
    lr = lr_scalar(lr, capturable)
    return 1 - (torch.ones((), dtype=torch.float64) * lr if capturable else lr) * wd


def adam_update_one(p, numerator, v, squared, t, *, lr, beta1, beta2, eps, capturable) -> None:
    """v <- β2·v + (1-β2)·x²;  p <- p - lr/(1-β1^t) · n / (sqrt(v)/sqrt(1-β2^t) + ε), for one tensor."""
    v.mul_(beta2).addcmul_(squared, squared, value=1 - beta2)
    if capturable:  # bias corrections from the device step tensor: no host read
        step_size = -lr / (1 - torch.pow(beta1, t))
        p.add_(step_size * numerator / (v.sqrt() / (1 - torch.pow(beta2, t)).sqrt()).add_(eps))
        return
    denom = v.sqrt()
    denom.div_((1 - beta2**t) ** 0.5)
    denom.add_(eps)
    p.addcdiv_(numerator, denom, value=(lr / (1 - beta1**t)) * -1)


def adam_update(params, numerators, exp_avg_sqs, squared, steps, *, lr, beta1, beta2, eps, capturable) -> None:
    """`adam_update_one` over tensor lists with multi-tensor kernels."""
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, squared, squared, 1 - beta2)
    if capturable:
        for p, n, v, t in zip(params, numerators, exp_avg_sqs, steps):
            step_size = -lr / (1 - torch.pow(beta1, t))
            p.add_(step_size * n / (v.sqrt() / (1 - torch.pow(beta2, t)).sqrt()).add_(eps))
        return
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [(1 - beta2**t) ** 0.5 for t in steps])
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, numerators, denoms, [(lr / (1 - beta1**t)) * -1 for t in steps])
