"""Shared test fixtures: exact targets whose answer is known."""

from __future__ import annotations

import torch

from pyro_bkd.infer.layout import FlatLayout
from pyro_bkd.infer.potential import Potential


class GaussianPotential(Potential):
    """Conjugate Gaussian with a data plate: ``theta_j ~ N(0, 1)``, ``y_ij ~ N(theta_j, s_j^2)``
    for ``i = 1..N``. Posterior: independent ``N(m_j, 1 / P_j)`` with ``P_j = 1 + N / s_j^2``
    and ``m_j = (sum_i y_ij / s_j^2) / P_j``. Minibatches rescale the data term by ``N/m``."""

    transforms: dict = {}  # noqa: RUF012

    def __init__(self, y: torch.Tensor, scales: torch.Tensor) -> None:
        self.y, self.scales = y, scales
        self.num_examples = y.shape[0]
        self.layout = FlatLayout.of({"theta": torch.zeros(y.shape[1])})

    @property
    def precision(self) -> torch.Tensor:
        return 1.0 + self.num_examples / self.scales.square()

    @property
    def mean(self) -> torch.Tensor:
        return (self.y.sum(0) / self.scales.square()) / self.precision

    def initial_theta(self) -> torch.Tensor:
        return torch.zeros(self.layout.dim)

    def log_joint(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.y if idx is None else self.y[idx]
        data = -0.5 * ((rows - theta) / self.scales).square().sum()
        return data * (self.num_examples / rows.shape[0]) - 0.5 * theta.square().sum()


def gaussian_potential(n: int = 100, scales: tuple[float, ...] = (1.0, 10.0), seed: int = 1):
    """A :class:`GaussianPotential` whose coordinates differ 50-fold in posterior precision."""
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(scales)
    y = 1.5 + s * torch.randn(n, len(scales), generator=g)
    return GaussianPotential(y, s)
