"""SGD with heavy-ball momentum and critical momenta (SGD+CM), beyond the released code."""

from __future__ import annotations

import torch

from cmopt import _sharding
from cmopt._adam import lr_scalar
from cmopt.buffer import CriticalBuffer
from cmopt.critical import CriticalOptimizer


class SGDCM(CriticalOptimizer):
    """buf <- μ·buf + (1-dampening)·g;  d = buf + mean(buffer);  p <- p - lr·d; the buffer stores buf.

    Coupled weight decay as in torch.optim.SGD, whose arithmetic this equals with capacity=0.
    With momentum=0 the direction is the (weight-decayed) gradient itself.
    """

    buffer_key = "critical_momenta"

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, *,
                 capacity=5, decay=0.7, priority="grad_norm", buffer_dtype=None, foreach=None, capturable=False,
                 priority_group=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        capacity=capacity, decay=decay, priority=priority, buffer_dtype=buffer_dtype, foreach=foreach,
                        capturable=capturable)
        super().__init__(params, defaults, priority_group)

    def _init_tensor_state(self, group, param, state):
        pass  # the momentum buffer starts as a copy of the first gradient, as in torch.optim.SGD

    def _update(self, group, tensors, indices, buffer, first):
        states = [tensors.states[i] for i in indices]
        if group["momentum"] != 0 and first:  # made here: its first value is the (weight-decayed) gradient
            momenta = None
        else:
            momenta = tensors.local("momentum_buffer", indices) if group["momentum"] != 0 else None
        created = sgd_cm(tensors.pick("params", indices), tensors.pick("grads", indices), momenta, buffer,
                         first=first, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                         weight_decay=group["weight_decay"], foreach=tensors.foreach, capturable=group["capturable"])
        for state, param, buf in zip(states, tensors.pick("full_params", indices), created):
            state["momentum_buffer"] = _sharding.placed_like(param, buf)


def sgd_cm(params, grads, momenta, buffer: CriticalBuffer | None, *, first: bool, lr, momentum: float,
           dampening: float, weight_decay: float, foreach: bool, capturable: bool) -> list[torch.Tensor]:
    """One SGD+CM step on tensors that are all on their first step or all past it (docs/optimizers.md):

        g <- g + wd·p;  buf <- g (first step) or μ·buf + (1-dampening)·g;  d = buf (first step) or
        buf + mean(B);  p <- p - lr·d;  offer buf.

    `momenta` is None on a first step (the buffers made are returned) or with μ = 0 (buf is g).
    `buffer` is None with C = 0, and then this is SGD.
    """
    lr = lr_scalar(lr, capturable)
    if capturable:  # lr as a tensor: torch.compile would recompile for every new alpha
        lr = torch.ones((), dtype=torch.float64) * lr
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay) if foreach else \
            [g.add(p, alpha=weight_decay) for g, p in zip(grads, params)]
    created = []
    if momentum == 0:
        buffers = grads
    elif first:
        buffers = created = [torch.clone(g).detach() for g in grads]
    else:
        buffers = momenta
        if foreach:
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads, alpha=1 - dampening)
        else:
            for buf, g in zip(buffers, grads):
                buf.mul_(momentum).add_(g, alpha=1 - dampening)
    if not foreach:
        for i, (p, buf) in enumerate(zip(params, buffers)):
            (d,) = [buf] if first or buffer is None else buffer.add_mean([buf], at=i)  # d = buf + mean(B)
            if capturable:
                p.sub_(d * lr)
            else:
                p.add_(d, alpha=-lr)
            if buffer is not None:
                buffer.insert([buf], at=i)
        return created
    directions = buffers if first or buffer is None else buffer.add_mean(buffers)
    if capturable:
        for p, d in zip(params, directions):
            p.sub_(d * lr)
    else:
        torch._foreach_add_(params, directions, alpha=-lr)
    if buffer is not None:
        buffer.insert(buffers)
    return created
