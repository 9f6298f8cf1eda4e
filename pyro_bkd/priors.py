"""Weight priors of the BKD student: an isotropic Normal with a cheap log density, or flat."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import ImproperUniform, TorchDistribution, constraints


class IsotropicNormal(TorchDistribution):
    """``theta ~ Normal(0, sigma^2 I)`` over a whole weight tensor (one event).

    ``log p(theta) = -||theta||^2 / (2 sigma^2) - (D/2) log(2 pi sigma^2)`` with ``D`` the
    number of entries. It equals ``Normal(0, sigma).expand(shape).to_event(len(shape))``
    but scores with one reduction instead of an element-wise density over every
    weight, the dominant cost of a Pyro trace of a neural network.
    """

    arg_constraints: ClassVar[dict] = {}
    has_rsample = True

    def __init__(
        self,
        scale: float,
        event_shape: torch.Size | tuple[int, ...],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        batch_shape: torch.Size | tuple[int, ...] = (),
    ) -> None:
        self.scale = float(scale)
        self.dtype = dtype
        self.device = torch.device(device)
        event_shape = torch.Size(event_shape)
        self._dim = event_shape.numel()
        self._log_norm = -0.5 * self._dim * math.log(2 * math.pi * self.scale**2)
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        """The real numbers, with the whole weight tensor as one event."""
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(self, batch_shape: torch.Size, _instance=None) -> IsotropicNormal:
        return IsotropicNormal(
            self.scale,
            self.event_shape,
            dtype=self.dtype,
            device=self.device,
            batch_shape=batch_shape,
        )

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(
            self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device
        )

    @property
    def variance(self) -> torch.Tensor:
        return torch.full(
            self.batch_shape + self.event_shape, self.scale**2, dtype=self.dtype, device=self.device
        )

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.scale * torch.randn(shape, dtype=self.dtype, device=self.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event_dims = tuple(range(-len(self.event_shape), 0))
        square_norm = value.square().sum(event_dims) if event_dims else value.square()
        return self._log_norm - 0.5 * square_norm / self.scale**2


def weight_prior(
    prior_scale: float | None, parameter: torch.Tensor
) -> IsotropicNormal | ImproperUniform:
    """The prior of one student weight tensor: ``Normal(0, sigma^2 I)`` or flat (``sigma=None``)."""
    if prior_scale is None:
        return ImproperUniform(constraints.real, (), parameter.shape)
    return IsotropicNormal(
        prior_scale, parameter.shape, dtype=parameter.dtype, device=parameter.device
    )
