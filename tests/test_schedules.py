"""pyro_bkd.infer.schedules: each schedule's values at given steps, and its checks."""

from __future__ import annotations

import math

import pytest

from pyro_bkd._checks import InputError
from pyro_bkd.infer.schedules import (
    CallableStep,
    ConstantStep,
    CyclicalStep,
    PolynomialDecay,
    as_schedule,
)


def test_constant_step_is_the_same_at_every_step() -> None:
    schedule = ConstantStep(0.25)
    assert [schedule(j) for j in (0, 1, 10**6)] == [0.25, 0.25, 0.25]


def test_polynomial_decay_is_a_times_b_plus_j_to_the_minus_gamma() -> None:
    schedule = PolynomialDecay(a=2.0, b=3.0, gamma=1.0)
    assert schedule(0) == pytest.approx(2.0 / 3.0, rel=1e-15)
    assert schedule(7) == pytest.approx(2.0 / 10.0, rel=1e-15)
    default = PolynomialDecay(a=1.0)
    assert default(15) == pytest.approx(16.0**-0.55, rel=1e-15)
    with pytest.raises(InputError, match="gamma"):
        PolynomialDecay(a=1.0, gamma=0.5)  # sum eps^2 would diverge


def test_cyclical_step_starts_each_cycle_at_a_and_halves_at_mid_cycle() -> None:
    schedule = CyclicalStep(a=0.4, cycle=10)
    assert schedule(0) == pytest.approx(0.4) and schedule(10) == pytest.approx(0.4)
    assert schedule(5) == pytest.approx(0.2)
    assert schedule(9) == pytest.approx(0.2 * (math.cos(0.9 * math.pi) + 1.0))
    values = [schedule(j) for j in range(10)]
    assert values == sorted(values, reverse=True)  # decreasing within a cycle
    assert min(values) > 0


def test_as_schedule_wraps_numbers_and_callables_and_checks_them() -> None:
    assert as_schedule(0.1) == ConstantStep(0.1)
    cyclical = CyclicalStep(a=1.0, cycle=4)
    assert as_schedule(cyclical) is cyclical
    wrapped = as_schedule(lambda j: 1.0 / (j + 1))
    assert isinstance(wrapped, CallableStep) and wrapped(3) == 0.25
    with pytest.raises(InputError, match="positive finite"):
        as_schedule(lambda j: -1.0)(0)
    with pytest.raises(InputError):
        as_schedule(0.0)
