"""CIFAR-style VGG networks with batch normalisation, as used in RepDistiller / CRD."""

from __future__ import annotations

from pyro_bkd.models.resnet import init_weights
from torch import Tensor, nn


def _stage(in_planes: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for planes in widths:
        layers += [
            nn.Conv2d(in_planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
        ]
        in_planes = planes
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, 2015) for 32x32 inputs, with batch norm after each conv.

    Five stages of 3x3 convolutions; 2x2 max pooling after the first three, global average
    pooling after the last, then one linear layer (no large fully connected head).
    """

    def __init__(
        self, stages: tuple[tuple[int, ...], ...], in_channels: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_planes = in_channels
        for i, widths in enumerate(stages):
            layers.append(_stage(in_planes, widths))
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            in_planes = widths[-1]
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def vgg8(in_channels: int = 3, num_classes: int = 10) -> VGG:
    """VGG-8: one conv per stage, widths 64-128-256-512-512."""
    return VGG(((64,), (128,), (256,), (512,), (512,)), in_channels, num_classes)


def vgg13(in_channels: int = 3, num_classes: int = 10) -> VGG:
    """VGG-13: two convs per stage, widths 64-128-256-512-512."""
    return VGG(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)), in_channels, num_classes)
