"""Adam with critical gradients (Adam+CG), McRae et al. 2021, as released with Adam+CM."""

from __future__ import annotations

import torch

from cmopt._adam import CriticalAdam, adam_update, adam_update_one, lr_scalar
from cmopt.buffer import CriticalBuffer


class AdamCG(CriticalAdam):
    """Adam on g̃ = g + mean(buffer of critical gradients); the buffer stores raw gradients.

    Weight decay is coupled (added to g̃), as in the released code. capacity=0 is exactly
    torch.optim.Adam. Arguments as for AdamCM; defaults C=10, λ=0.7 (the released defaults).
    """

    buffer_key = "critical_gradients"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 capacity=10, decay=0.7, priority="grad_norm", buffer_dtype=None, foreach=None, capturable=False,
                 priority_group=None):
        super().__init__(params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable,
                         priority_group, priority)

    def _update(self, group, tensors, indices, buffer, first):
        beta1, beta2 = group["betas"]
        adam_cg(tensors.pick("params", indices), tensors.pick("grads", indices), tensors.local("exp_avg", indices),
                tensors.local("exp_avg_sq", indices), tensors.pick("steps", indices), buffer, first=first,
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                foreach=tensors.foreach, capturable=group["capturable"])


def adam_cg(params, grads, exp_avgs, exp_avg_sqs, steps, buffer: CriticalBuffer | None, *, first: bool, lr,
            beta1: float, beta2: float, eps: float, weight_decay: float, foreach: bool, capturable: bool) -> None:
    """One Adam+CG step on tensors that are all on their first step or all past it (docs/optimizers.md):

        g̃ = g (first step) or g + mean(B);  g̃ <- g̃ + wd·p;  m <- β1·m + (1-β1)·g̃;  v <- β2·v + (1-β2)·g̃²;
        p <- p - lr·m̂/(sqrt(v̂) + ε);  offer g.

    `buffer` is None with C = 0, and then this is Adam. `steps` are the new t.
    """
    hyper = dict(lr=lr_scalar(lr, capturable), beta1=beta1, beta2=beta2, eps=eps, capturable=capturable)
    if not foreach:
        for i, (p, g, m, v, t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
            (aggregated,) = [g] if first or buffer is None else buffer.add_mean([g], at=i)
            if weight_decay != 0:
                aggregated = aggregated.add(p, alpha=weight_decay)
            m.lerp_(aggregated, 1 - beta1)
            adam_update_one(p, m, v, aggregated, t, **hyper)
            if buffer is not None:
                buffer.insert([g], at=i)
        return
    aggregated = grads if first or buffer is None else buffer.add_mean(grads)
    if weight_decay != 0:
        aggregated = torch._foreach_add(aggregated, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, aggregated, 1 - beta1)
    adam_update(params, exp_avgs, exp_avg_sqs, aggregated, steps, **hyper)
    if buffer is not None:
        buffer.insert(grads)
