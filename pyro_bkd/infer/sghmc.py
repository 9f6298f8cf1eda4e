"""Stochastic gradient HMC (Chen, Fox & Guestrin 2014) with a diagonal preconditioner.

With velocity ``v``, friction ``a`` (per step), learning rate ``eta = h^2`` and ``G`` the
diagonal preconditioner (inverse mass) fixed after warm-up:

``v' = (1 - a) v - eta G grad U_B(theta) + sqrt(2 a eta T G - eta^2 G B G) xi``,
``theta' = theta + v'``,

where ``B`` is the (diagonal) covariance of the minibatch gradient noise: the minibatch
already injects ``eta^2 G B G`` of variance, so the injected noise is reduced by that much
(clamped at zero) and the chain is not heated (without it, on a digits MLP at ``lam = 144``,
the posterior mean moved 0.17 away from the exact one). With full-batch gradients ``B = 0``.
This is the Euler-symplectic discretisation of underdamped Langevin dynamics with time step
``h`` and friction ``gamma = a / h``; it is stable along a direction of curvature ``lambda``
of ``G^(1/2) H G^(1/2)`` for ``h < 2 / sqrt(lambda)``, and the step is
``h = step_factor / sqrt(lambda_max)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

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
from pyro_bkd.infer.streams import RandomSource, standard_normal


def sghmc_update(
    theta: torch.Tensor,
    velocity: torch.Tensor,
    grad: torch.Tensor,
    noise: torch.Tensor,
    learning_rate: float | torch.Tensor,
    friction: float,
    metric: torch.Tensor,
    gradient_noise: torch.Tensor | None = None,
    posterior_temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGHMC step (module docstring); returns ``(theta', v')``. ``gradient_noise`` is
    the diagonal of ``B`` (``None``: exact gradients)."""
    eta = per_chain(learning_rate, theta)
    variance = 2.0 * friction * eta * posterior_temperature * metric
    if gradient_noise is not None:
        variance = (variance - (eta * metric).square() * gradient_noise).clamp_min(0.0)
    velocity = (1.0 - friction) * velocity - eta * metric * grad + variance.sqrt() * noise
    return theta + velocity, velocity


@dataclass(frozen=True)
class SGHMCStep(Algorithm):
    """SGHMC (module docstring).

    Args:
        friction: ``a`` in ``(0, 1]``: the share of the velocity lost per step (``a = 1`` is
            SGLD with step ``eps = 2 eta``). 0.01 mixed best of 0.005/0.01/0.05 on the demo's
            posterior (``benchmarks/bench_mixing.py``).
        step_factor: ``h = step_factor / sqrt(lambda_max)`` (stable below 2). 0.7 mixed as
            well as 1.0 there; 1.5 diverged in warm-up (the curvature varies over the
            typical set), so the default keeps a margin.
        correct_noise: with minibatches, estimate ``B`` in warm-up and subtract it (the
            default; ``False`` only to see how much the minibatch noise heats the chain).
        gradient_noise: the diagonal of ``B`` ``[C, D]``, set in warm-up from pairs of
            independent minibatch gradients (:class:`~pyro_bkd.infer.warmup.Warmup`);
            ``None`` for exact gradients.
    """

    friction: float = 0.01
    step_factor: float = 0.7
    correct_noise: bool = True
    gradient_noise: torch.Tensor | None = None
    name: ClassVar[str] = "sghmc"

    def __post_init__(self) -> None:
        friction = _checks.positive_float("friction", self.friction)
        if friction > 1:
            raise InputError(f"friction must be in (0, 1], got {self.friction!r}")
        step = _checks.positive_float("step_factor", self.step_factor)
        if step >= 2:
            raise InputError(f"step_factor must be < 2 (the stability limit), got {step!r}")

    def init(self, theta: torch.Tensor, value_and_grad: ValueAndGrad) -> ChainState:
        state = super().init(theta, value_and_grad)
        return state.with_(momentum=torch.zeros_like(theta))

    def step(
        self,
        state: ChainState,
        value_and_grad: ValueAndGrad,
        step_size: float | torch.Tensor,
        metric: torch.Tensor,
        rng: RandomSource,
        posterior_temperature: float = 1.0,
    ) -> tuple[ChainState, StepInfo]:
        velocity = state.momentum if state.momentum is not None else torch.zeros_like(state.theta)
        noise = standard_normal(state.theta, rng)
        theta, velocity = sghmc_update(
            state.theta,
            velocity,
            state.grad,
            noise,
            step_size,
            self.friction,
            metric,
            self.gradient_noise,
            posterior_temperature,
        )
        potential, grad = value_and_grad(theta)
        accept = torch.ones_like(potential)
        new = ChainState(theta=theta, potential=potential, grad=grad, momentum=velocity)
        return new, StepInfo(accept, 1)

    def step_from_noise(self, scaled_noise: torch.Tensor) -> torch.Tensor:
        """The largest ``eta`` per chain whose minibatch noise ``eta^2 G B G`` uses at most
        half of the injected variance ``2 a eta G`` in every coordinate:
        ``eta <= a / max_j (G_j B_j)`` (``scaled_noise = G B``, ``[C, D]``). Beyond it the
        correction cannot subtract the minibatch noise and the chain runs hot."""
        return self.friction / scaled_noise.amax(-1).clamp_min(1e-30)

    def step_from_curvature(self, curvature: float) -> float:
        """The learning rate ``eta = h^2 = step_factor^2 / lambda_max``."""
        return (self.step_factor / math.sqrt(curvature)) ** 2
