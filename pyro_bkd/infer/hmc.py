"""Metropolis-corrected Hamiltonian Monte Carlo on full-batch gradients: exact for any step.

Per chain and iteration: momentum ``p ~ N(0, G^-1)`` (``G`` the diagonal inverse mass, the
metric), ``L`` leapfrog steps of size ``eps`` on ``H(theta, p) = U(theta) + p' G p / 2``,
then accept the end point with probability ``min(1, exp(H_0 - H_L))``. ``L`` is drawn
uniformly from ``[ceil(num_steps / 2), num_steps]`` each iteration, from the run's shared
stream, so all chains integrate equally long in every process (jitter breaks the periodic
orbits a fixed length can fall into); momenta and accept tests come from each chain's
stream. The step size is tuned in warm-up by dual averaging towards ``target_accept``
(:class:`~pyro_bkd.infer.adaptation.DualAveraging`) and ``G`` is the variance of the warm-up
draws (Stan's windowed adaptation), both then frozen, so each chain is a reversible,
``pi``-invariant Markov chain: the reference sampler for students whose full-batch gradient
is affordable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from pyro_bkd import _checks
from pyro_bkd._checks import InputError
from pyro_bkd.infer.base import (
    Algorithm,
    ChainState,
    StepInfo,
    ValueAndGrad,
    per_chain,
)
from pyro_bkd.infer.streams import RandomSource, random_int, standard_normal, uniform


def leapfrog(
    state: ChainState,
    momentum: torch.Tensor,
    value_and_grad: ValueAndGrad,
    step_size: float | torch.Tensor,
    metric: torch.Tensor,
    num_steps: int,
) -> tuple[ChainState, torch.Tensor]:
    """``num_steps`` leapfrog steps from ``(state.theta, momentum)``; returns the end state
    and momentum. ``U`` and its gradient at the end are those of the last evaluation."""
    eps = per_chain(step_size, state.theta)
    theta, potential, grad = state.theta, state.potential, state.grad
    p = momentum - 0.5 * eps * grad
    for i in range(num_steps):
        theta = theta + eps * metric * p
        potential, grad = value_and_grad(theta)
        p = p - (0.5 if i == num_steps - 1 else 1.0) * eps * grad
    return ChainState(theta=theta, potential=potential, grad=grad), p


def kinetic_energy(momentum: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    """``p' G p / 2`` per chain, ``[C]``."""
    return 0.5 * (momentum.square() * metric).sum(-1)


@dataclass(frozen=True)
class HMCStep(Algorithm):
    """HMC with a Metropolis test (module docstring).

    Args:
        num_steps: the most leapfrog steps per iteration (``L`` is drawn from
            ``[ceil(num_steps / 2), num_steps]``).
        target_accept: the mean acceptance probability that warm-up aims at.
    """

    num_steps: int = 64
    target_accept: float = 0.8
    name: ClassVar[str] = "hmc"
    full_batch: ClassVar[bool] = True
    step_size_rule: ClassVar[Literal["curvature", "acceptance"]] = "acceptance"

    def __post_init__(self) -> None:
        _checks.positive_int("num_steps", self.num_steps)
        if not 0.0 < self.target_accept < 1.0:
            raise InputError(f"target_accept must be in (0, 1), got {self.target_accept!r}")

    def step(
        self,
        state: ChainState,
        value_and_grad: ValueAndGrad,
        step_size: float | torch.Tensor,
        metric: torch.Tensor,
        rng: RandomSource,
        posterior_temperature: float = 1.0,
    ) -> tuple[ChainState, StepInfo]:
        """One HMC iteration. A posterior temperature ``T`` targets ``pi^(1/T)``: the
        energy is ``U / T`` (momenta stay standard)."""
        length = random_int((self.num_steps + 1) // 2, self.num_steps + 1, rng)
        if posterior_temperature != 1.0:
            base = value_and_grad

            def value_and_grad(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                potential, grad = base(theta)
                return potential / posterior_temperature, grad / posterior_temperature

            state = state.with_(
                potential=state.potential / posterior_temperature,
                grad=state.grad / posterior_temperature,
            )
        momentum = standard_normal(state.theta, rng) / metric.sqrt()
        proposal, end_momentum = leapfrog(
            state, momentum, value_and_grad, step_size, metric, length
        )
        energy_change = (proposal.potential + kinetic_energy(end_momentum, metric)) - (
            state.potential + kinetic_energy(momentum, metric)
        )
        log_accept = (-energy_change).nan_to_num(nan=-torch.inf).clamp(max=0.0)
        accept_prob = log_accept.exp()
        accepted = uniform(accept_prob, rng) < accept_prob
        new = proposal.select(accepted, state)
        if posterior_temperature != 1.0:
            new = new.with_(
                potential=new.potential * posterior_temperature,
                grad=new.grad * posterior_temperature,
            )
        return new, StepInfo(accept_prob, length)

    def step_from_curvature(self, curvature: float) -> float:
        """A first guess before dual averaging: ``eps = 1 / sqrt(lambda_max)`` (half the
        leapfrog stability limit ``2 / sqrt(lambda_max)``)."""
        return curvature**-0.5
