"""CIFAR-style ResNets (He et al., 2016) with the widths and depths of RepDistiller / CRD."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def init_weights(module: nn.Module) -> None:
    """He (fan-out) normal init for convolutions; unit scale, zero shift for batch norm."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class BasicBlock(nn.Module):
    """Post-activation residual block: two 3x3 convolutions, 1x1 projection when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., 2016, "Deep residual learning for image recognition", Sec. 4.2).

    A 3x3 stem, three stages of ``blocks`` basic blocks (strides 1, 2, 2), global average
    pooling and a linear classifier. ``widths`` = (stem, stage 1, stage 2, stage 3).
    """

    def __init__(
        self,
        blocks: int,
        widths: tuple[int, int, int, int],
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        stem, *stage_widths = widths
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        stages: list[nn.Module] = []
        in_planes = stem
        for planes, stride in zip(stage_widths, (1, 2, 2), strict=True):
            strides = [stride] + [1] * (blocks - 1)
            layers = []
            for s in strides:
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.pool(out).flatten(1))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def resnet8(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-8: 1 block per stage, widths 16-32-64."""
    return ResNet(1, _NARROW, in_channels, num_classes)


def resnet20(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-20: 3 blocks per stage, widths 16-32-64."""
    return ResNet(3, _NARROW, in_channels, num_classes)


def resnet32(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-32: 5 blocks per stage, widths 16-32-64."""
    return ResNet(5, _NARROW, in_channels, num_classes)


def resnet56(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-56: 9 blocks per stage, widths 16-32-64."""
    return ResNet(9, _NARROW, in_channels, num_classes)


def resnet110(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-110: 18 blocks per stage, widths 16-32-64."""
    return ResNet(18, _NARROW, in_channels, num_classes)


def resnet8x4(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-8x4 (CRD, Tian et al., 2020): 1 block per stage, 4x wider (64-128-256)."""
    return ResNet(1, _WIDE, in_channels, num_classes)


def resnet32x4(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-32x4 (CRD, Tian et al., 2020): 5 blocks per stage, 4x wider (64-128-256)."""
    return ResNet(5, _WIDE, in_channels, num_classes)
