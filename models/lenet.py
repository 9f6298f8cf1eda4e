"""LeNet-5 for 1x28x28 (MNIST-style) or 3x32x32 (CIFAR-style) images."""

from __future__ import annotations

from torch import Tensor, nn


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

    Modern variant with ReLU and max pooling. The first convolution pads by 2, so a 28x28 input
    follows the original 32x32 layout exactly; the second pooling is adaptive (to 5x5), so
    32x32 inputs work as well.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
