"""pyro_bkd.priors: IsotropicNormal is Normal(0, sigma) over the whole tensor as one event."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from pyro_bkd.priors import IsotropicNormal, weight_prior


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_log_prob_equals_torch_normal_summed_over_the_event(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    value = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    prior = IsotropicNormal(scale, (4, 3), dtype=torch.float64)
    loc, sd = torch.tensor(0.0, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    expected = Normal(loc, sd).log_prob(value).sum((-2, -1))
    torch.testing.assert_close(prior.log_prob(value), expected, rtol=1e-12, atol=1e-12)
    assert prior.log_prob(value).shape == (5,)


def test_moments_shapes_and_draws_match_the_law() -> None:
    prior = IsotropicNormal(2.0, (3,)).expand(torch.Size([2]))
    assert prior.batch_shape == (2,) and prior.event_shape == (3,)
    assert torch.equal(prior.mean, torch.zeros(2, 3))
    assert torch.equal(prior.variance, torch.full((2, 3), 4.0))
    torch.manual_seed(0)
    draws = prior.rsample((20_000,))
    assert draws.shape == (20_000, 2, 3)
    assert abs(draws.std().item() - 2.0) < 0.03
    assert abs(draws.mean().item()) < 0.03


def test_weight_prior_is_isotropic_normal_or_flat() -> None:
    weight = torch.zeros(4, 2)
    assert isinstance(weight_prior(0.5, weight), IsotropicNormal)
    assert weight_prior(0.5, weight).scale == 0.5
    flat = weight_prior(None, weight)
    assert not isinstance(flat, IsotropicNormal)
    assert flat.log_prob(torch.randn(4, 2)).item() == 0.0
