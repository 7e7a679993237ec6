"""SGD with heavy-ball momentum and critical momenta (SGD+CM), beyond the released code."""

from __future__ import annotations

import torch

from cmopt.critical import CriticalOptimizer


class SGDCM(CriticalOptimizer):
    """buf <- μ·buf + (1-dampening)·g;  d = buf + mean(buffer);  p <- p - lr·d; the buffer stores buf.

    Coupled weight decay as in torch.optim.SGD, whose arithmetic this equals with capacity=0.
    With momentum=0 the direction is the (weight-decayed) gradient itself.
    """

    buffer_key = "critical_momenta"

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, *,
                 capacity=5, decay=0.7, buffer_dtype=None, foreach=None, capturable=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        capacity=capacity, decay=decay, buffer_dtype=buffer_dtype, foreach=foreach,
                        capturable=capturable)
        super().__init__(params, defaults)

    def _init_tensor_state(self, group, param, state):
        pass  # the momentum buffer starts as a copy of the first gradient, as in torch.optim.SGD

    def _update(self, group, ops, params, grads, states, *, first, plus_mean):
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grads = ops.add(grads, params, alpha=weight_decay)
        if momentum == 0:
            buffers = grads
        elif first:
            buffers = [torch.clone(g).detach() for g in grads]
            for state, buf in zip(states, buffers):
                state["momentum_buffer"] = buf
        else:
            buffers = [s["momentum_buffer"] for s in states]
            ops.mul_(buffers, momentum)
            ops.add_(buffers, grads, alpha=1 - group["dampening"])
        directions = buffers if first or plus_mean is None else plus_mean(buffers)  # d = buf + mean(B)
        self._advance(states, group["capturable"])
        if group["capturable"]:  # lr as a tensor: torch.compile would recompile for every new alpha
            lr = torch.ones((), dtype=torch.float64) * group["lr"]
            for p, d in zip(params, directions):
                p.sub_(d * lr)
        else:
            ops.add_(params, directions, alpha=-group["lr"])  # p <- p - lr·d
        return buffers  # the candidate: the momentum buffer
