"""Adam with critical gradients (Adam+CG), McRae et al. 2021, as released with Adam+CM."""

from __future__ import annotations

from cmopt._adam import CriticalAdam, adam_apply


class AdamCG(CriticalAdam):
    """Adam on g̃ = g + mean(buffer of critical gradients); the buffer stores raw gradients.

    Weight decay is coupled (added to g̃), as in the released code. capacity=0 is exactly
    torch.optim.Adam. Arguments as for AdamCM; defaults C=10, λ=0.7 (the released defaults).
    """

    buffer_key = "critical_gradients"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 capacity=10, decay=0.7, buffer_dtype=None, foreach=None, capturable=False):
        super().__init__(params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable)

    def _update(self, group, ops, params, grads, states, *, first, plus_mean):
        weight_decay = group["weight_decay"]
        aggregated = grads if first or plus_mean is None else plus_mean(grads)  # g̃ = g + mean(B)
        if weight_decay != 0:
            aggregated = ops.add(aggregated, params, alpha=weight_decay)
        steps = self._advance(states, group["capturable"])
        exp_avgs = [s["exp_avg"] for s in states]
        ops.lerp_(exp_avgs, aggregated, 1 - group["betas"][0])
        adam_apply(ops, group, params, exp_avgs, [s["exp_avg_sq"] for s in states], aggregated, steps)
        return grads  # the candidate: the raw gradient
