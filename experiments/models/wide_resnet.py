"""Wide ResNet (Zagoruyko & Komodakis, 2016) for 32x32 images: pre-activation blocks, widths 16k, 32k, 64k."""

from __future__ import annotations

import torch
from torch import nn
from experiments.options import UserError


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, dropout, BN-ReLU-conv3x3, plus the input (via a 1x1 conv where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(self.dropout(out))))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """WRN-depth-width: (depth - 4) / 6 blocks in each of three groups; strides 1, 2, 2."""

    def __init__(self, depth: int, width: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise UserError(f"Wide ResNet depth must be 6n + 4 (e.g. 16, 22, 28, 40), got {depth}.")
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        layers = []
        for group, (stride, out_channels) in enumerate(zip((1, 2, 2), widths[1:])):
            for block in range(blocks_per_group):
                in_channels = widths[group] if block == 0 else out_channels
                layers.append(WideBasicBlock(in_channels, out_channels, stride if block == 0 else 1, dropout))
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))
