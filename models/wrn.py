"""Wide residual networks WRN-d-k for CIFAR-sized images."""

from __future__ import annotations

import torch.nn.functional as F
from pyro_bkd.models.resnet import init_weights
from torch import Tensor, nn


class WideBlock(nn.Module):
    """Pre-activation block (BN-ReLU-conv twice); a 1x1 convolution of the activated input
    is the shortcut when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(act)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016, "Wide residual networks"), without dropout.

    ``(depth - 4) / 6`` blocks in each of three stages of widths 16k, 32k, 64k.
    """

    def __init__(self, depth: int, widen: int, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2), strict=True):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(WideBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(self.pool(out).flatten(1))


def wrn_16_2(in_channels: int = 3, num_classes: int = 10) -> WideResNet:
    """WRN-16-2: 2 blocks per stage, widths 32-64-128."""
    return WideResNet(16, 2, in_channels, num_classes)


def wrn_40_2(in_channels: int = 3, num_classes: int = 10) -> WideResNet:
    """WRN-40-2: 6 blocks per stage, widths 32-64-128."""
    return WideResNet(40, 2, in_channels, num_classes)
