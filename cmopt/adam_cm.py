"""Adam with critical momenta (Adam+CM), Malviya et al., TMLR 2024."""

from __future__ import annotations

import torch

from cmopt._adam import CriticalAdam, adam_update, adam_update_one, lr_product, lr_scalar
from cmopt.buffer import CriticalBuffer


class AdamCM(CriticalAdam):
    """Adam whose update direction is the momentum plus the mean of a buffer of critical momenta.

    By default (variant="paper") reproduces the authors' released arithmetic (docs/optimizers.md):
    decoupled weight decay; the first step stores the raw gradient and moves nothing; the second
    moment is built from the aggregated direction d = m + mean(buffer). capacity=0 is exactly
    torch.optim.AdamW.

    Args:
        capacity: C, the number of critical momenta kept per parameter group (default 5).
        decay: λ, the factor applied to every held priority each step (default 0.7).
        priority: what ranks a candidate: "grad_norm" (the paper's), "candidate_norm" (the momentum's
            norm), "random" (drawn from the step count) or "fifo" (the most recent C).
        variant: "paper" (the released arithmetic) or "debiased" (ours, not the paper's: the buffer
            stores bias-corrected momenta from the first step on, d = m̂ + mean(buffer), no first-step
            stall and no early blow-up of the step; docs/optimizers.md).
        buffer_dtype: store the buffer and its running sum in this dtype (e.g. torch.bfloat16).
        foreach: multi-tensor kernels (True) or a tensor-by-tensor loop (False); default: True
            on accelerators, False on the CPU, where the loop is faster.
        capturable: keep every decision on the device (no host sync; CUDA-graph and compile friendly).
        priority_group: under ZeroRedundancyOptimizer, the process group to sum the priority over.
    """

    buffer_key = "critical_momenta"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 capacity=5, decay=0.7, priority="grad_norm", variant="paper", buffer_dtype=None, foreach=None,
                 capturable=False, priority_group=None):
        super().__init__(params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable,
                         priority_group, priority, variant=variant)

    def _update(self, group, tensors, indices, buffer, first):
        beta1, beta2 = group["betas"]
        adam_cm(tensors.pick("params", indices), tensors.pick("grads", indices), tensors.local("exp_avg", indices),
                tensors.local("exp_avg_sq", indices), tensors.pick("steps", indices), buffer, first=first,
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                foreach=tensors.foreach, capturable=group["capturable"], debiased=group["variant"] == "debiased")


def adam_cm(params, grads, exp_avgs, exp_avg_sqs, steps, buffer: CriticalBuffer | None, *, first: bool, lr,
            beta1: float, beta2: float, eps: float, weight_decay: float, foreach: bool, capturable: bool,
            debiased: bool = False) -> None:
    """One Adam+CM step on tensors that are all on their first step or all past it (docs/optimizers.md):

        p <- p·(1 - lr·wd);  first step: offer g, move nothing.  Later:
        m <- β1·m + (1-β1)·g;  d = m + mean(B);  v <- β2·v + (1-β2)·d²;  p <- p - lr·m̂(d)/(sqrt(v̂) + ε);  offer m.

    `buffer` is None with C = 0, and then this is AdamW (d = m, v from g²). `steps` are the new t.
    `debiased` (variant="debiased", ours) is `adam_cm_debiased`.
    """
    if debiased:
        return adam_cm_debiased(params, grads, exp_avgs, exp_avg_sqs, steps, buffer, lr=lr, beta1=beta1, beta2=beta2,
                                eps=eps, weight_decay=weight_decay, foreach=foreach, capturable=capturable)
    hyper = dict(lr=lr_scalar(lr, capturable), beta1=beta1, beta2=beta2, eps=eps, capturable=capturable)
    decay_factor = lr_product(lr, weight_decay, capturable) if weight_decay != 0 else None
    if not foreach:
        for i, (p, g, m, v, t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
            if weight_decay != 0:
                p.mul_(decay_factor)
            if first and buffer is not None:  # released-code quirk: the first step only stores g
                buffer.insert([g], at=i)
                continue
            m.lerp_(g, 1 - beta1)
            if buffer is None:
                adam_update_one(p, m, v, g, t, **hyper)  # no buffer: exactly AdamW
            else:
                (d,) = buffer.add_mean([m], at=i)  # d = m + mean(B)
                adam_update_one(p, d, v, d, t, **hyper)  # released-code quirk: v tracks d², not g²
            if buffer is not None:
                buffer.insert([m], at=i)
        return
    if weight_decay != 0:
        torch._foreach_mul_(params, decay_factor)
    if first and buffer is not None:
        buffer.insert(grads)
        return
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    if buffer is None:
        adam_update(params, exp_avgs, exp_avg_sqs, grads, steps, **hyper)
    else:
        directions = buffer.add_mean(exp_avgs)
        adam_update(params, directions, exp_avg_sqs, directions, steps, **hyper)
    if buffer is not None:
        buffer.insert(exp_avgs)


def adam_cm_debiased(params, grads, exp_avgs, exp_avg_sqs, steps, buffer: CriticalBuffer | None, *, lr, beta1: float,
                     beta2: float, eps: float, weight_decay: float, foreach: bool, capturable: bool) -> None:
    """The debiased variant (ours, not the paper's; docs/optimizers.md), the same on every step, the first included:

        p <- p·(1 - lr·wd);  m <- β1·m + (1-β1)·g;  m̂ = m/(1-β1^t);  d = m̂ + mean(B);
        v <- β2·v + (1-β2)·d²;  p <- p - lr·d/(sqrt(v̂) + ε);  offer m̂.

    m̂ is already bias-corrected, so Adam's update runs with β1 = 0 (its first-moment correction is 1).
    """
    hyper = dict(lr=lr_scalar(lr, capturable), beta1=0.0, beta2=beta2, eps=eps, capturable=capturable)
    decay_factor = lr_product(lr, weight_decay, capturable) if weight_decay != 0 else None
    corrections = [1 - (torch.pow(beta1, t) if capturable else beta1**t) for t in steps]
    if not foreach:
        for i, (p, g, m, v, t, c) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps, corrections)):
            if weight_decay != 0:
                p.mul_(decay_factor)
            m.lerp_(g, 1 - beta1)
            m_hat = m / c
            (d,) = [m_hat] if buffer is None else buffer.add_mean([m_hat], at=i)
            adam_update_one(p, d, v, d, t, **hyper)
            if buffer is not None:
                buffer.insert([m_hat], at=i)
        return
    if weight_decay != 0:
        torch._foreach_mul_(params, decay_factor)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    m_hats = torch._foreach_div(exp_avgs, corrections)
    directions = m_hats if buffer is None else buffer.add_mean(m_hats)
    adam_update(params, directions, exp_avg_sqs, directions, steps, **hyper)
    if buffer is not None:
        buffer.insert(m_hats)
