"""Dispersed chain starts: R-hat means something only for chains that began apart.

``theta_c = center + spread * xi_c / sqrt(d)``, ``xi_c ~ N(0, I)``, with ``d`` the diagonal of
the Hessian of ``U`` at ``center`` (Hutchinson's estimate ``mean_j v_j * (H v_j)`` over
Rademacher probes ``v_j``), floored at the prior precision ``1 / sigma^2``: draws from a
diagonal Laplace approximation. Chain 0 starts at ``center`` itself, so one chain always
begins at the warm start (e.g. the KD solution).
"""

from __future__ import annotations

import torch

from pyro_bkd.infer.potential import Potential

#: Rademacher probes of the Hutchinson diagonal.
PROBES = 16
#: Halvings of a start's offset that bring it back towards the typical set.
MAX_HALVINGS = 20


def laplace_diagonal(
    potential: Potential,
    center: torch.Tensor,
    generator: torch.Generator,
    probes: int = PROBES,
    prior_variance: float = 1.0,
    max_rows: int = 512,
) -> torch.Tensor:
    """Hutchinson's estimate of ``diag H(center)`` ``[D]``, floored at the prior precision
    ``1 / prior_variance``."""
    n = potential.num_examples
    idx = None
    if n is not None and n > max_rows:
        idx = torch.randperm(n, device=generator.device, generator=generator)[:max_rows]
        idx = idx.to(center.device)
    theta = center.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(-potential.log_joint(theta, idx), theta, create_graph=True)
    total = torch.zeros_like(center)
    for _ in range(probes):
        v = torch.randint(0, 2, center.shape, generator=generator, device=generator.device)
        v = (2.0 * v - 1.0).to(center)
        (hv,) = torch.autograd.grad(grad, theta, v, retain_graph=True)
        total += v * hv
    return (total / probes).detach().clamp_min(1.0 / prior_variance)


def dispersed(
    potential: Potential,
    center: torch.Tensor,
    num_chains: int,
    spread: float,
    generator: torch.Generator,
    prior_variance: float = 1.0,
) -> torch.Tensor:
    """``[C, D]`` starts around ``center [D]`` (module docstring); ``spread = 0`` copies it.

    A diagonal Laplace draw ignores correlations, so in a posterior with strongly coupled
    weights it can land far outside the typical set (measured: ``U`` up to 1e4 above the
    mode for a 2-D MLP student), where warm-up first spends its windows on the way back. A
    posterior draw has ``U - U(mode) ~ chi^2_D / 2``, about ``D / 2``; so each chain's offset
    is halved (at most :data:`MAX_HALVINGS` times) until ``U(theta_c) - U(center) <= D``."""
    theta = center.detach().expand(num_chains, -1).clone()
    if spread == 0 or num_chains == 1:
        return theta
    scale = laplace_diagonal(potential, center, generator, prior_variance=prior_variance).rsqrt()
    noise = torch.randn(theta[1:].shape, generator=generator, device=generator.device)
    offsets = spread * scale * noise.to(theta)
    with torch.no_grad():
        limit = float(-potential.log_joint(center)) + center.shape[-1]
        for chain, offset in enumerate(offsets, start=1):
            for _ in range(MAX_HALVINGS):
                if float(-potential.log_joint(center + offset)) <= limit:
                    break
                offset = offset / 2
            theta[chain] += offset
    return theta
