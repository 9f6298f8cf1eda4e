"""Fixed step-size schedules ``j -> eps_j`` (no adaptation): constant, polynomial decay and
cyclical (Zhang et al. 2020). A schedule given to :func:`pyro_bkd.sample` or a kernel replaces
the step-size adaptation of warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pyro_bkd import _checks
from pyro_bkd._checks import InputError


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
            raise InputError(f"gamma must be in (0.5, 1], got {self.gamma!r}")

    def __call__(self, step: int) -> float:
        return self.a * (self.b + step) ** (-self.gamma)


@dataclass(frozen=True)
class CallableStep(StepSchedule):
    """Any user function ``j -> eps_j`` (checked to give a positive finite number)."""

    fn: Callable[[int], float]

    def __call__(self, step: int) -> float:
        value = float(self.fn(step))
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"step_size({step}) must be a positive finite number, got {value}")
        return value


@dataclass(frozen=True)
class CyclicalStep(StepSchedule):
    """Cyclical SG-MCMC (Zhang et al. 2020): ``eps_j = (a / 2) (cos(pi mod(j, L) / L) + 1)``
    with cycle length ``L = cycle``: large steps explore at the start of each cycle, small
    steps sample at its end (keep the draws of the late part of each cycle)."""

    a: float
    cycle: int

    def __post_init__(self) -> None:
        _checks.positive_float("a", self.a)
        _checks.positive_int("cycle", self.cycle)

    def __call__(self, step: int) -> float:
        phase = (step % self.cycle) / self.cycle
        return max(0.5 * self.a * (math.cos(math.pi * phase) + 1.0), 1e-12 * self.a)


def as_schedule(step_size: float | StepSchedule | Callable[[int], float]) -> StepSchedule:
    """Accept a number (constant step), a :class:`StepSchedule` or a callable of the step."""
    if isinstance(step_size, StepSchedule):
        return step_size
    if callable(step_size):
        return CallableStep(step_size)
    return ConstantStep(_checks.positive_float("step_size", step_size))
