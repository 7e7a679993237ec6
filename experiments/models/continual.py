"""Continual-learning models by name, and the task-incremental logit mask.

    model = build_continual_model("reduced_resnet18", num_classes=50, image_shape=(3, 32, 32))
    mask = task_class_mask(benchmark.task_classes, benchmark.num_classes)
    logits = mask_logits(model(images), task_ids, mask)   # task-incremental: only the item's task's classes

reduced_resnet18 is the ResNet-18 of GEM / A-GEM (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2019): two
3x3 convolutions per basic block, two blocks per stage, nf=20 filters widening 20-40-80-160, a 3x3 stem
without max-pool; global average pooling makes it take 32x32 and 64x64 images alike. mlp is a small
fully connected network (GEM's MNIST one: two hidden layers of 100 ReLU units).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from experiments.options import UserError, check_options



def build_continual_model(name: str, num_classes: int, image_shape: Sequence[int] = (3, 32, 32),
                          **options) -> nn.Module:
    """The model called `name` (one of CONTINUAL_MODEL_NAMES) with `num_classes` outputs for images of
    `image_shape` (C, H, W). `options` are the model's own: see its builder below."""
    if name not in BUILDERS:
        raise UserError(f"Unknown model {name!r}. Valid names: {', '.join(CONTINUAL_MODEL_NAMES)}.")
    builder = BUILDERS[name]
    check_options("Model", name, builder, options, given_apart=("name", "num_classes", "image_shape"))
    return builder(name, num_classes, tuple(image_shape), **options)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # a 1x1 projection where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ReducedResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, nf: int = 20):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, nf, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        stages, in_planes = [], nf
        for planes, stride in ((nf, 1), (2 * nf, 2), (4 * nf, 2), (8 * nf, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(8 * nf, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def reduced_resnet18(name: str, num_classes: int, image_shape: tuple[int, ...], nf: int = 20) -> nn.Module:
    return ReducedResNet18(num_classes, in_channels=image_shape[0], nf=nf)


def mlp(name: str, num_classes: int, image_shape: tuple[int, ...],
        hidden_sizes: Sequence[int] = (100, 100)) -> nn.Module:
    """Flattened image -> Linear-ReLU per hidden size -> linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(torch.tensor(image_shape).prod())
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def task_class_mask(task_classes: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """(num_tasks, num_classes) booleans: row t is True at task t's classes."""
    mask = torch.zeros(len(task_classes), num_classes, dtype=torch.bool)
    for t, classes in enumerate(task_classes):
        mask[t, list(classes)] = True
    return mask


def mask_logits(logits: torch.Tensor, task_ids: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """`logits` (B, num_classes) with every class outside item b's task (`class_mask[task_ids[b]]`) at -inf.

    Used in training and evaluation alike (task-incremental, multi-head): softmax, cross-entropy and argmax
    then see the item's own task's classes only, and masked logits get no gradient. A label outside its
    task's classes gives an infinite loss, which the engine stops on. Class-incremental runs skip this.
    """
    keep = class_mask.to(logits.device)[task_ids]
    return logits.masked_fill(~keep, float("-inf"))


BUILDERS = {"reduced_resnet18": reduced_resnet18, "mlp": mlp}
CONTINUAL_MODEL_NAMES = tuple(BUILDERS)
