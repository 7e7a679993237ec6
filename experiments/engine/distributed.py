"""Where this process runs: device, rank and world size; torchrun's process group when launched by it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from experiments.options import UserError


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the process's index on its own machine
    owns_group: bool = False  # setup() started the process group (so teardown() ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> Placement:
    """Join torchrun's process group if launched by it (gloo on CPU, nccl on CUDA) and pick the device.

    `device` None means CUDA when present (cuda:LOCAL_RANK under torchrun), else the CPU. Under
    submitit (hydra/launcher=slurm with several tasks), the ranks come from its SLURM environment.
    """
    if "RANK" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        _export_submitit_ranks()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"  # one GPU per process
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={device!r}, but this machine has no usable CUDA GPU. "
                         "Use trainer.device=cpu, or trainer.device=null to pick CUDA only when present.")
    starts = world_size > 1 and not dist.is_initialized()  # a caller's own process group is used as it is
    placement = Placement(torch.device(device), rank, world_size, local_rank, owns_group=starts)
    if placement.device.type == "cuda":
        torch.cuda.set_device(placement.device)
    if starts:
        dist.init_process_group("nccl" if placement.device.type == "cuda" else "gloo",
                                device_id=placement.device if placement.device.type == "cuda" else None)
    return placement


def _export_submitit_ranks() -> None:
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        # Keep every GPU visible: the device is chosen as cuda:LOCAL_RANK below.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


@contextlib.contextmanager
def local_main_first(placement: Placement):
    """The first process of each machine runs the block first (e.g. downloads a dataset), the others after it.

    The first process reaches the barrier even when its block fails, so the others run the block too and
    fail with the same message instead of waiting forever.
    """
    first = placement.local_rank == 0
    if placement.distributed and not first:
        dist.barrier()
    try:
        yield
    finally:
        if placement.distributed and first:
            dist.barrier()


def teardown(placement: Placement) -> None:
    if placement.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def sum_across_processes(values: dict[str, torch.Tensor], placement: Placement) -> dict[str, torch.Tensor]:
    """Every process's tensors (of any shapes) summed in one all-reduce; the values themselves without torchrun."""
    if not values or not placement.distributed:
        return values
    names = sorted(values)
    tensors = [torch.as_tensor(values[n]).detach().to(placement.device, torch.float64) for n in names]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    return {n: part.view(t.shape) for n, t, part in zip(names, tensors, flat.split([t.numel() for t in tensors]))}


def gather_objects(obj, placement: Placement) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not placement.distributed:
        return [obj]
    gathered = [None] * placement.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
