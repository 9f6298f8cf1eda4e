"""SGLD and pSGLD: the overdamped Langevin update (SPEC §4), one gradient per step.

``theta' = theta - (eps/2) G grad U(theta) + sqrt(eps T G) xi``, ``xi ~ N(0, I)``, with a
diagonal preconditioner ``G`` (Welling & Teh 2011 with ``G = I``; Li et al. 2016 with an
RMSprop gain). ``G`` is adapted in warm-up only and frozen afterwards, so the correction term
``Gamma(theta) = sum_j dG_ij/dtheta_j`` that Li et al. drop is exactly zero while sampling.
The step size comes from the curvature: the Euler step is stable along a direction of
curvature ``lambda`` of ``G^(1/2) H G^(1/2)`` for ``eps < 4 / lambda`` and its stationary
variance there is ``1 / (lambda (1 - eps lambda / 4))`` times the exact one, so
``eps = 1 / lambda_max`` inflates the stiffest variance by ``4/3`` and the others less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from pyro_bkd.infer.base import (
    Algorithm,
    ChainState,
    StepInfo,
    ValueAndGrad,
    per_chain,
)
from pyro_bkd.infer.streams import RandomSource, standard_normal


def langevin_update(
    theta: torch.Tensor,
    grad: torch.Tensor,
    noise: torch.Tensor,
    step_size: float | torch.Tensor,
    metric: torch.Tensor | None,
    posterior_temperature: float = 1.0,
) -> torch.Tensor:
    """``theta - (eps/2) G grad + sqrt(eps T G) xi`` for diagonal ``G = metric`` (``None``:
    ``G = I``, and with one float step two fused passes over the weights)."""
    if metric is None and not isinstance(step_size, torch.Tensor):
        return torch.add(theta, grad, alpha=-0.5 * step_size).add_(
            noise, alpha=math.sqrt(step_size * posterior_temperature)
        )
    eps = per_chain(step_size, theta)
    if metric is None:
        return theta - 0.5 * eps * grad + (eps * posterior_temperature).sqrt() * noise
    return theta - 0.5 * eps * metric * grad + (eps * posterior_temperature * metric).sqrt() * noise


@dataclass(frozen=True)
class SGLDStep(Algorithm):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011), ``G = I`` by default.

    Args:
        step_factor: ``eps = step_factor / lambda_max`` (see the module docstring).
    """

    step_factor: float = 1.0
    name: ClassVar[str] = "sgld"
    metric_rule: ClassVar[Literal["identity", "variance", "gradient"]] = "identity"

    def step(
        self,
        state: ChainState,
        value_and_grad: ValueAndGrad,
        step_size: float | torch.Tensor,
        metric: torch.Tensor | None,
        rng: RandomSource,
        posterior_temperature: float = 1.0,
    ) -> tuple[ChainState, StepInfo]:
        noise = standard_normal(state.theta, rng)
        theta = langevin_update(
            state.theta, state.grad, noise, step_size, metric, posterior_temperature
        )
        potential, grad = value_and_grad(theta)
        accept = torch.ones_like(potential)
        return ChainState(theta=theta, potential=potential, grad=grad), StepInfo(accept, 1)

    def step_from_curvature(self, curvature: float) -> float:
        return self.step_factor / curvature


@dataclass(frozen=True)
class PSGLDStep(SGLDStep):
    """Preconditioned SGLD (Li et al. 2016) with its RMSprop gain ``G = 1 / sqrt(v)``.

    ``v`` is the mean of the squared ``N``-scaled gradients over each warm-up window (not an
    exponential average of one minibatch at a time, whose ``1 / (1e-5 + sqrt(v))`` reached
    1e5 in coordinates with a near-zero gradient and made every run diverge), floored at the
    prior precision ``1 / sigma^2``: ``G <= sigma``, no coordinate moves more freely than
    the weight prior allows (:class:`~pyro_bkd.infer.adaptation.GradientMetric`).
    """

    name: ClassVar[str] = "psgld"
    metric_rule: ClassVar[Literal["identity", "variance", "gradient"]] = "gradient"
