"""A small two-convolution CNN student for 28x28 grey or 32x32 colour images."""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv(w)-pool-conv(2w)-pool-fc(4w)-fc(K), the classic Keras/PyTorch MNIST example network.

    ``width`` (``w``, default 32) is the channel count of the first convolution. The feature
    map is average-pooled adaptively to 7x7 (an identity for 28x28 inputs), so 32x32 inputs
    give the same classifier.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int):
            raise TypeError(f"width must be an int, got {type(width).__name__}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, 4 * width),
            nn.ReLU(),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
