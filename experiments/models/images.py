"""Image-classification models by name: `build_image_model("resnet18", num_classes=10)`.

resnet18/resnet34 are the CIFAR form of torchvision's ResNet (3x3 stride-1 stem, no max-pool); wrn28_10 is
Wide ResNet 28-10; efficientnet_b0 and resnet50 come from timm (for ImageNet); small_cnn has no BatchNorm,
so it suits smoke tests and exact data-parallel comparisons.
"""

from __future__ import annotations

import timm
import torchvision
from torch import nn

from experiments.models.wide_resnet import WideResNet
from experiments.options import UserError, check_options



def build_image_model(name: str, num_classes: int, **options) -> nn.Module:
    """The model called `name` (one of IMAGE_MODEL_NAMES) with `num_classes` outputs.

    `options` are the model's own: see its builder below.
    """
    if name not in BUILDERS:
        raise UserError(f"Unknown model {name!r}. Valid names: {', '.join(IMAGE_MODEL_NAMES)}.")
    builder = BUILDERS[name]
    check_options("Model", name, builder, options, given_apart=("name", "num_classes"))
    return builder(name, num_classes, **options)


def cifar_resnet(name: str, num_classes: int) -> nn.Module:
    """torchvision's ResNet with the 7x7 stride-2 stem and max-pool replaced for 32x32 inputs."""
    model = getattr(torchvision.models, name)(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def wrn28_10(name: str, num_classes: int, dropout: float = 0.0) -> nn.Module:
    return WideResNet(depth=28, width=10, num_classes=num_classes, dropout=dropout)


def timm_model(name: str, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0,
               drop_path_rate: float = 0.0) -> nn.Module:
    """timm's model of that name; pretrained=True needs the network (weights from the Hugging Face Hub)."""
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate)


class SmallCNN(nn.Sequential):
    def shard_units(self) -> list[nn.Module]:
        """Each convolution its own fully_shard unit under trainer.strategy=fsdp (the head stays with the root)."""
        return [m for m in self if isinstance(m, nn.Conv2d)]


def small_cnn(name: str, num_classes: int, width: int = 32) -> nn.Module:
    """Three conv-ReLU stages (width, 2x, 4x channels), a linear head; no BatchNorm, no dropout."""
    return SmallCNN(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


BUILDERS = {
    "resnet18": cifar_resnet, "resnet34": cifar_resnet, "wrn28_10": wrn28_10,
    "efficientnet_b0": timm_model, "resnet50": timm_model, "small_cnn": small_cnn,
}
IMAGE_MODEL_NAMES = tuple(BUILDERS)
