"""The posterior mode (MAP) of a potential: the KD solution, used to warm-start SGLD (SPEC §3)."""

from __future__ import annotations

import torch

from pyro_bkd.batches import EpochBatches
from pyro_bkd.infer.potential import BKDPotential


def find_map(
    potential: BKDPotential,
    theta: torch.Tensor,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Minimise ``U_B(theta) / N`` (the mean KD loss plus weight decay) with Adam.

    ``theta [D]`` is the starting point; returns the last iterate ``[D]``, detached.
    """
    n = potential.num_examples
    generators = None if generator is None else [generator]
    batches = EpochBatches(n, batch_size, 1, generators=generators, device=theta.device)
    theta = theta.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        idx = batches.next()
        optimiser.zero_grad(set_to_none=True)
        (-potential.log_joint(theta, None if idx is None else idx[0]) / n).backward()
        optimiser.step()
    return theta.detach()
