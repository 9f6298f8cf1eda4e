"""pyro_bkd.infer.map.find_map: Adam on U / N reaches the known mode of a Gaussian target."""

from __future__ import annotations

import torch
from conftest import gaussian_potential

from pyro_bkd.infer.map import find_map


def test_full_batch_find_map_reaches_the_posterior_mode() -> None:
    potential = gaussian_potential(n=50, scales=(1.0, 3.0))
    start = torch.zeros(potential.layout.dim)
    theta = find_map(potential, start, steps=3000, lr=0.05)
    torch.testing.assert_close(theta, potential.mean, rtol=0, atol=1e-3)
    assert not theta.requires_grad
    assert torch.equal(start, torch.zeros(potential.layout.dim))  # the start is not modified


def test_minibatch_find_map_ends_near_the_mode_and_is_reproducible() -> None:
    potential = gaussian_potential(n=64, scales=(1.0, 2.0))
    start = torch.full((potential.layout.dim,), 5.0)

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return find_map(potential, start, steps=2000, lr=0.01, batch_size=16, generator=generator)

    theta = run()
    assert torch.equal(theta, run())
    assert (theta - potential.mean).abs().max() < 0.3
    assert (start - potential.mean).abs().max() > 3  # it did move
