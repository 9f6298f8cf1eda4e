"""Update rules (the integrators), on flat weight vectors ``theta [..., D]``.

Pure functions of tensors; the potential's gradient and the Gaussian noise ``xi`` come in
from outside so each rule is testable alone (BlackJAX's estimator/integrator split).
"""

from __future__ import annotations

import math

import torch


def sgld_step(
    theta: torch.Tensor,
    grad: torch.Tensor,
    noise: torch.Tensor,
    step_size: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Welling & Teh (2011): ``theta - (eps/2) grad U + sqrt(eps T) xi``, ``xi ~ N(0, I)``."""
    return torch.add(theta, grad, alpha=-0.5 * step_size).add_(
        noise, alpha=math.sqrt(step_size * temperature)
    )


def psgld_step(
    theta: torch.Tensor,
    grad: torch.Tensor,
    noise: torch.Tensor,
    step_size: float,
    preconditioner: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Li et al. (2016) without ``Gamma``: ``theta - (eps/2) G grad U + sqrt(eps T G) xi``."""
    drift = preconditioner * grad
    diffusion = preconditioner.sqrt().mul_(noise)
    return torch.add(theta, drift, alpha=-0.5 * step_size).add_(
        diffusion, alpha=math.sqrt(step_size * temperature)
    )
