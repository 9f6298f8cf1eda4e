"""Adaptation objects of the SGLD kernels: step-size schedules and the pSGLD preconditioner.

Each is a small object with ``init``/``step``/``value`` style methods (Pyro's
``adaptation.py`` split), composed into the kernels instead of branches inside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pyro_bkd import _checks


class StepSchedule:
    """A step size ``eps_j`` as a function of the step index ``j = 0, 1, ...``."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantStep(StepSchedule):
    """``eps_j = a``."""

    a: float

    def __post_init__(self) -> None:
        _checks.positive_float("step_size", self.a)

    def __call__(self, step: int) -> float:
        return self.a


@dataclass(frozen=True)
class PolynomialDecay(StepSchedule):
    """``eps_j = a (b + j)^(-gamma)`` with ``gamma in (0.5, 1]`` (Welling & Teh 2011).

    These steps satisfy ``sum eps_j = inf`` and ``sum eps_j^2 < inf``, the conditions
    under which SGLD converges to the exact posterior.
    """

    a: float
    b: float = 1.0
    gamma: float = 0.55

    def __post_init__(self) -> None:
        _checks.positive_float("a", self.a)
        _checks.positive_float("b", self.b)
        if not 0.5 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0.5, 1], got {self.gamma!r}")

    def __call__(self, step: int) -> float:
        return self.a * (self.b + step) ** (-self.gamma)


@dataclass(frozen=True)
class CallableStep(StepSchedule):
    """Any user function ``j -> eps_j`` (checked to give a positive finite number)."""

    fn: Callable[[int], float]

    def __call__(self, step: int) -> float:
        value = float(self.fn(step))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"step_size({step}) must be a positive finite number, got {value}")
        return value


def as_schedule(step_size: float | StepSchedule | Callable[[int], float]) -> StepSchedule:
    """Accept a number (constant step), a :class:`StepSchedule` or a callable of the step."""
    if isinstance(step_size, StepSchedule):
        return step_size
    if callable(step_size):
        return CallableStep(step_size)
    return ConstantStep(_checks.positive_float("step_size", step_size))


@dataclass(frozen=True)
class RMSPropPreconditioner:
    """Diagonal pSGLD preconditioner of Li et al. (2016).

    ``v <- alpha v + (1 - alpha) g^2`` and ``G = 1 / (delta + sqrt(v))``. The kernels adapt
    ``v`` during warm-up only and then freeze it: with a constant ``G`` the correction term
    ``Gamma(theta) = sum_j d G_ij / d theta_j`` is exactly zero, so freezing removes the bias
    that Li et al. accept when they drop ``Gamma`` while ``G`` keeps moving.
    """

    alpha: float = 0.99
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha!r}")
        _checks.positive_float("delta", self.delta)

    def init(self, grad: torch.Tensor) -> torch.Tensor:
        """The first second-moment estimate ``v = g^2``."""
        return grad.square()

    def update(self, v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``alpha v + (1 - alpha) g^2``."""
        return torch.lerp(grad.square(), v, self.alpha)

    def value(self, v: torch.Tensor) -> torch.Tensor:
        """``G = 1 / (delta + sqrt(v))``."""
        return (v.sqrt() + self.delta).reciprocal()

    def adapt(
        self,
        v: torch.Tensor | None,
        gain: torch.Tensor | None,
        grad: torch.Tensor,
        adapting: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the gain's life: ``v`` starts at the first ``g^2``, moves while
        ``adapting`` (warm-up) and then stays; ``G`` follows ``v`` and is frozen with it."""
        if v is None:
            v = self.init(grad)
        elif adapting:
            v = self.update(v, grad)
        if gain is None or adapting:
            gain = self.value(v)
        return v, gain
