"""Model builders, one module per runner's kind of model; `shard_units` names each model's FSDP blocks."""

from __future__ import annotations

from torch import nn

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")  # torchvision's ResNets and the reduced ResNet-18


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks trainer.strategy=fsdp shards one by one (the root holds the rest): the model's own
    `shard_units()` when it defines one; a ResNet's four stages; the residual blocks of a model keeping
    them in `blocks` (timm's EfficientNet stages, the Wide ResNet); none otherwise."""
    if hasattr(model, "shard_units"):
        return list(model.shard_units())
    if all(hasattr(model, name) for name in STAGE_NAMES):
        return [getattr(model, name) for name in STAGE_NAMES]
    if isinstance(getattr(model, "blocks", None), nn.Sequential):
        return list(model.blocks)
    return []
