"""How the model's parameters and gradients are spread over the processes: `trainer.strategy`.

- `ddp`: every process holds the whole model and optimizer state; gradients are all-reduced
  (DistributedDataParallel under torchrun, the plain model in one process).
- `fsdp`: FSDP2 `fully_shard` on the blocks the Task names (`Task.shard_units`: a ResNet's stages,
  an LSTM's layers, a transformer's blocks) and on the root; each process holds a shard of every
  parameter, gradient and optimizer state (cmopt's critical buffers included); gradients are
  reduce-scattered. With `trainer.precision=bf16` on GPUs, parameters are gathered in bf16 and
  gradients reduced in fp32 (MixedPrecisionPolicy).

Both offer the same small interface to the engine: the module training passes go through, gradient
clipping by the global norm, the model's full state dict (for best_model.pt and flatness's unsharded
copy), and sums over the parameters' shards (the update size's squared norm). SAM's two passes go
through `cmopt.sam_step` under either, which perturbs as the SAM paper does: each process with its own
gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from experiments.engine import distributed
from experiments.engine.distributed import Placement


class Strategy:
    """The interface; `build(name, ...)` picks the implementation."""

    name = ""
    shards_parameters = False  # True: no process holds the full weights outside a forward or backward pass

    def __init__(self, placement: Placement):
        self.placement = placement

    def wrap(self, model: nn.Module, shard_units: Sequence[nn.Module], bf16: bool) -> nn.Module:
        """The module training passes go through (`model` itself keeps the parameters)."""
        raise NotImplementedError

    def clip_gradients(self, model: nn.Module, max_norm: float) -> None:
        """Scale the gradients so that their global L2 norm is at most `max_norm`."""
        clip_grad_norm_(model.parameters(), max_norm)

    def sum_over_shards(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sums over the parts of the parameters this process holds (e.g. squared norms) as sums over the
        whole parameters: under ddp every process holds them whole, so the local sums are the values."""
        return values

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's whole state dict, on every process (sharded tensors gathered), on the CPU."""
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class DataParallel(Strategy):
    name = "ddp"

    def wrap(self, model, shard_units, bf16):
        if not self.placement.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.placement.device.index] if self.placement.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


class FullySharded(Strategy):
    """FSDP2. SAM perturbs as under DDP (`cmopt.sam_step`): a sharded parameter is one tensor shared by all
    processes, so each process perturbs its own unsharded copy instead. During a SAM step every process
    holds the full weights and its full local gradient (as under DDP): the first pass's gradient is not
    reduce-scattered (FSDP2's no_sync, set_requires_gradient_sync(False)), the gathered weights stay
    unsharded through both passes, the second pass reduce-scatters into the sharded gradients, and
    resharding drops the perturbed copies, so the base optimizer steps the shards from p."""

    name = "fsdp"
    shards_parameters = True

    def wrap(self, model, shard_units, bf16):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.placement.device.type, (self.placement.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
            else MixedPrecisionPolicy()
        for unit in shard_units:
            fully_shard(unit, mesh=mesh, mp_policy=policy)
        return fully_shard(model, mesh=mesh, mp_policy=policy)

    def clip_gradients(self, model, max_norm):
        # clip_grad_norm_ takes DTensor gradients: per-shard norms reduced over the mesh, one global norm.
        total = clip_grad_norm_(model.parameters(), max_norm)
        if hasattr(total, "full_tensor"):
            total.full_tensor()

    def sum_over_shards(self, values):
        return distributed.sum_across_processes(values, self.placement)

    def full_state_dict(self, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                     broadcast_from_rank0=False))


STRATEGIES = {s.name: s for s in (DataParallel, FullySharded)}


def build(name: str, placement: Placement) -> Strategy:
    return STRATEGIES[name](placement)
