"""Tensor-list arithmetic with two strategies: multi-tensor (torch._foreach_*) and a plain per-tensor loop.

Each optimizer writes its arithmetic once against these functions; `foreach` picks the strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensors = Sequence[torch.Tensor]
Scalars = float | Sequence[float]


def _at(value, i):
    return value[i] if isinstance(value, (list, tuple)) else value


class Ops:
    def __init__(self, foreach: bool):
        self.foreach = foreach

    def norms(self, xs: Tensors) -> list[torch.Tensor]:
        if self.foreach:
            return list(torch._foreach_norm(xs))
        return [torch.linalg.vector_norm(x) for x in xs]

    def mul_(self, xs: Tensors, scalar: Scalars) -> None:
        if self.foreach:
            torch._foreach_mul_(xs, scalar)
        else:
            for i, x in enumerate(xs):
                x.mul_(_at(scalar, i))

    def lerp_(self, xs: Tensors, ys: Tensors, weight: float) -> None:
        if self.foreach:
            torch._foreach_lerp_(xs, ys, weight)
        else:
            for x, y in zip(xs, ys):
                x.lerp_(y, weight)

    def add_(self, xs: Tensors, ys: Tensors, alpha: float = 1.0) -> None:
        if self.foreach:
            torch._foreach_add_(xs, ys, alpha=alpha)
        else:
            for x, y in zip(xs, ys):
                x.add_(y, alpha=alpha)

    def add(self, xs: Tensors, ys: Tensors, alpha: float = 1.0) -> list[torch.Tensor]:
        if self.foreach:
            return list(torch._foreach_add(xs, ys, alpha=alpha))
        return [torch.add(x, y, alpha=alpha) for x, y in zip(xs, ys)]

    def add_scalar_(self, xs: Tensors, scalar: float) -> None:
        if self.foreach:
            torch._foreach_add_(xs, scalar)
        else:
            for x in xs:
                x.add_(scalar)

    def sub_(self, xs: Tensors, ys: Tensors) -> None:
        if self.foreach:
            torch._foreach_sub_(xs, ys)
        else:
            for x, y in zip(xs, ys):
                x.sub_(y)

    def div_(self, xs: Tensors, divisor: Scalars) -> None:
        if self.foreach:
            torch._foreach_div_(xs, divisor)
        else:
            for i, x in enumerate(xs):
                x.div_(_at(divisor, i))

    def sqrt(self, xs: Tensors) -> list[torch.Tensor]:
        if self.foreach:
            return list(torch._foreach_sqrt(xs))
        return [x.sqrt() for x in xs]

    def addcmul_(self, xs: Tensors, ys: Tensors, zs: Tensors, value: float) -> None:
        if self.foreach:
            torch._foreach_addcmul_(xs, ys, zs, value)
        else:
            for x, y, z in zip(xs, ys, zs):
                x.addcmul_(y, z, value=value)

    def addcdiv_(self, xs: Tensors, ys: Tensors, zs: Tensors, values: Scalars) -> None:
        if self.foreach:
            torch._foreach_addcdiv_(xs, ys, zs, values)
        else:
            for i, (x, y, z) in enumerate(zip(xs, ys, zs)):
                x.addcdiv_(y, z, value=_at(values, i))

    def copy_(self, xs: Tensors, ys: Tensors) -> None:
        if self.foreach:
            torch._foreach_copy_(xs, ys)
        else:
            for x, y in zip(xs, ys):
                x.copy_(y)
