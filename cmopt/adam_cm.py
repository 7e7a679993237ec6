"""Adam with critical momenta (Adam+CM), Malviya et al., TMLR 2024."""

from __future__ import annotations

import torch

from cmopt._adam import CriticalAdam, adam_apply


class AdamCM(CriticalAdam):
    """Adam whose update direction is the momentum plus the mean of a buffer of critical momenta.

    Reproduces the authors' released arithmetic (spec/optimizers.md): decoupled weight decay; the
    first step stores the raw gradient and moves nothing; the second moment is built from the
    aggregated direction d = m + mean(buffer). capacity=0 is exactly torch.optim.AdamW.

    Args:
        capacity: C, the number of critical momenta kept per parameter group (default 5).
        decay: λ, the factor applied to every held priority each step (default 0.7).
        buffer_dtype: store the buffer and its running sum in this dtype (e.g. torch.bfloat16).
        foreach: multi-tensor kernels (True) or a tensor-by-tensor loop (False); default: True
            on accelerators, False on the CPU, where the loop is faster.
        capturable: keep every decision on the device (no host sync; CUDA-graph and compile friendly).
    """

    buffer_key = "critical_momenta"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 capacity=5, decay=0.7, buffer_dtype=None, foreach=None, capturable=False):
        super().__init__(params, lr, betas, eps, weight_decay, capacity, decay, buffer_dtype, foreach, capturable)

    def _update(self, group, ops, params, grads, states, *, first, plus_mean):
        lr, weight_decay = group["lr"], group["weight_decay"]
        if weight_decay != 0:
            # Compiled: lr as a tensor here, else torch.compile keeps the traced lr (a scheduler's change is lost).
            factor = 1 - (torch.ones((), dtype=torch.float64) * lr if group["capturable"] else lr) * weight_decay
            ops.mul_(params, factor)
        if first and plus_mean is not None:
            # Released-code quirk: the first step only stores g; d = 0 leaves m, v and p unchanged.
            self._advance(states, group["capturable"])
            return grads
        exp_avgs = [s["exp_avg"] for s in states]
        ops.lerp_(exp_avgs, grads, 1 - group["betas"][0])  # m <- β1·m + (1-β1)·g
        if plus_mean is not None:
            directions = plus_mean(exp_avgs)  # d = m + mean(B)
            squared = directions  # released-code quirk: the second moment tracks d², not g²
        else:
            directions, squared = exp_avgs, grads  # no buffer: exactly AdamW
        steps = self._advance(states, group["capturable"])
        adam_apply(ops, group, params, directions, [s["exp_avg_sq"] for s in states], squared, steps)
        return exp_avgs  # the candidate: m
