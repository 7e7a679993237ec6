"""Sharded parameters (DTensor, as FSDP2 and tensor parallelism make them) and partitioned ones (ZeRO).

Every elementwise update runs on the local shard (`local`), which is exactly the full tensor's
update restricted to the shard. Only two quantities span shards: a tensor's norm (the critical
priority, SAM's perturbation norm) and, under ZeRO, the sum of norms over tensors other processes
hold. Both are accumulated in float64 and reduced with one all-reduce per parameter group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

try:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # a torch built without distributed support
    dist, DTensor, Shard = None, (), ()


def is_sharded(t: torch.Tensor) -> bool:
    return DTensor != () and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of `t` this process holds (complex tensors as real views, as torch.optim does)."""
    t = t.to_local() if is_sharded(t) else t
    return torch.view_as_real(t) if t.is_complex() else t


def placed_like(param: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A local tensor made by the update (e.g. SGD's first momentum buffer) as state placed like `param`,
    the inverse of `local`."""
    if param.is_complex():
        t = torch.view_as_complex(t)
    if not is_sharded(param):
        return t
    return DTensor.from_local(t, param.device_mesh, param.placements, run_check=False, shape=param.shape,
                              stride=param.stride())


def rows_like(param: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Zeros of shape (n, *param.shape), placed like `param`: a DTensor parameter sharded on dim d gets
    rows sharded on dim d + 1, so each process holds the rows of its own shard."""
    if not is_sharded(param):
        return torch.zeros((n, *param.shape), dtype=dtype, device=param.device)
    placements = [Shard(p.dim + 1) if p.is_shard() else p for p in param.placements]
    shard = torch.zeros((n, *param.to_local().shape), dtype=dtype, device=param.to_local().device)
    shape = (n, *param.shape)
    return DTensor.from_local(shard, param.device_mesh, placements, run_check=False, shape=shape,
                              stride=torch.empty(shape, device="meta").stride())


def norms(grads: Sequence[torch.Tensor], foreach: bool, values: Sequence[torch.Tensor] | None = None
          ) -> list[torch.Tensor]:
    """The L2 norm of each full tensor as a float64 device scalar: one all-reduce per mesh over the
    local squared norms of the sharded ones (a local norm is the full norm for the others).
    `values`: local tensors to take the norms of instead, placed like `grads` (e.g. SAM's |p|·g)."""
    local_grads = [local(g) for g in grads] if values is None else list(values)
    if not local_grads:
        return []
    if foreach:
        found = list(torch._foreach_norm(local_grads))
    else:
        found = [torch.linalg.vector_norm(g) for g in local_grads]
    found = [n.to(torch.float64) for n in found]
    by_mesh: dict[tuple, list[int]] = {}
    for i, g in enumerate(grads):
        if is_sharded(g):
            dims = tuple(d for d, p in enumerate(g.placements) if p.is_shard())
            if dims:
                by_mesh.setdefault((g.device_mesh, dims), []).append(i)
    for (mesh, dims), indices in by_mesh.items():
        squares = torch.stack([found[i] for i in indices]).square()
        for d in dims:
            dist.all_reduce(squares, group=mesh.get_group(d))
        for i, total in zip(indices, squares.sqrt().unbind()):
            found[i] = total
    return found

