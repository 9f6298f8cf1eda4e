"""Each algorithm against an exact answer, through the driver that users run.

Targets: a conjugate Gaussian whose two coordinates differ 50-fold in posterior precision
(``tests/conftest.py``), where each update rule's stationary law is known in closed form;
Pyro's NUTS on a small BKD model; simulation-based calibration. Tolerances are Monte Carlo
standard errors from the bulk ESS of the draws (4 SE: a false alarm in about 1 of 16,000
comparisons of a correct sampler).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import gaussian_potential

from pyro_bkd.convergence import ess_bulk
from pyro_bkd.infer.adaptation import DualAveraging
from pyro_bkd.infer.driver import sample_potential


def _mean_and_var_errors(draws: torch.Tensor, mean: torch.Tensor, var: torch.Tensor):
    """``(|mean error| / SE, |var error| / SE)`` per coordinate for draws ``[C, S, D]``;
    SE from the bulk ESS: ``sd / sqrt(ESS)`` for the mean, ``var sqrt(2 / ESS)`` for the
    variance (Gaussian fourth moment)."""
    x = draws.double().numpy()
    ess = ess_bulk(x)
    flat = x.reshape(-1, x.shape[-1])
    m, v = flat.mean(0), flat.var(0, ddof=1)
    se_mean = np.sqrt(v / ess)
    se_var = v * np.sqrt(2.0 / ess)
    return np.abs(m - mean.numpy()) / se_mean, np.abs(v - var.numpy()) / se_var


def _draws(result) -> torch.Tensor:
    return result.weights["theta"]


def test_hmc_is_exact_for_any_adapted_step():
    """Metropolis-corrected HMC: the draws follow the posterior ``N(m, 1/P)`` exactly,
    whatever step size and metric warm-up chose."""
    target = gaussian_potential()
    result = sample_potential(
        target,
        method="hmc",
        num_samples=1000,
        warmup_steps=300,
        thin=1,
        num_chains=4,
        algorithm_options={"num_steps": 8},
        progress=False,
        seed=0,
    )
    mean_err, var_err = _mean_and_var_errors(_draws(result), target.mean, 1 / target.precision)
    assert (mean_err < 4).all() and (var_err < 4).all()


def test_dual_averaging_finds_the_step_of_the_target_acceptance():
    """Dual averaging on a known acceptance curve ``a(eps) = exp(-eps^2)``: the averaged step
    ``final()`` reaches the step whose acceptance is the target, ``sqrt(-log 0.8)``, within
    5% after 2,000 updates, from a start 100 times too small. (The HMC test above checks the
    draws, whatever step warm-up picks.)"""
    tuner = DualAveraging(target=0.8)
    tuner.restart(0.005)
    step = 0.005
    for _ in range(2000):
        step = tuner.update(math.exp(-(step**2)))
    assert tuner.final() == pytest.approx(math.sqrt(-math.log(0.8)), rel=0.05)


def test_sgld_matches_the_exact_law_of_its_discretisation():
    """Full-batch SGLD with a fixed step is the AR(1) chain ``theta' = theta - (eps/2) P
    (theta - m) + sqrt(eps) xi`` per coordinate, stationary law ``N(m, 1 / (P (1 - eps P /
    4)))``. With ``eps P_max = 1`` the stiff coordinate's variance is 33% above the
    posterior's: the test sees the bias and the sampler reproduces it."""
    target = gaussian_potential()
    precision = target.precision
    eps = 1.0 / float(precision.max())
    result = sample_potential(
        target,
        method="sgld",
        step_size=eps,
        num_samples=1500,
        warmup_steps=200,
        thin=4,
        num_chains=4,
        progress=False,
        seed=1,
    )
    exact_var = 1 / (precision * (1 - eps * precision / 4))
    mean_err, var_err = _mean_and_var_errors(_draws(result), target.mean, exact_var)
    assert (mean_err < 4).all() and (var_err < 4).all()
    _, biased = _mean_and_var_errors(_draws(result), target.mean, 1 / precision)
    assert biased[0] > 4  # the O(eps) bias is visible in the stiff coordinate


def test_psgld_frozen_gain_matches_the_exact_law_of_its_discretisation():
    """After warm-up pSGLD's gain ``G`` is frozen (one per chain and coordinate, reported as
    ``result.metric``), so each chain is SGLD with step ``h = eps G``: stationary law
    ``N(m, 1 / (P (1 - h P / 4)))`` exactly. The gain is floored at the prior's ``sigma``;
    the step ``eps`` (one per chain) is set from the curvature of ``G^(1/2) H G^(1/2)``."""
    target = gaussian_potential()
    precision = target.precision
    result = sample_potential(
        target,
        method="psgld",
        num_samples=1500,
        warmup_steps=300,
        thin=4,
        num_chains=4,
        progress=False,
        seed=2,
    )
    gain = result.metric  # [C, D]
    assert (gain <= 1.0 + 1e-6).all()
    h = result.sample_stats["step_size"][:, :1] * gain
    assert ((h * precision) < 2).all(), "the frozen gain should give a stable step"
    for chain in range(4):
        exact_var = 1 / (precision * (1 - h[chain] * precision / 4))
        draws = _draws(result)[chain : chain + 1]
        mean_err, var_err = _mean_and_var_errors(draws, target.mean, exact_var)
        assert (mean_err < 4).all() and (var_err < 4).all()


def _sghmc_stationary_variance(precision: float, eta: float, friction: float, g: float):
    """Exact stationary variance of ``theta`` for SGHMC on ``N(m, 1/P)``: the chain
    ``s' = A s + b xi`` with ``s = (theta - m, v)``, ``A = [[1 - eta g P, 1 - a], [-eta g P,
    1 - a]]``, ``b = sqrt(2 a eta g) (1, 1)``, solves ``S = A S A' + b b'``."""
    a_matrix = np.array(
        [[1 - eta * g * precision, 1 - friction], [-eta * g * precision, 1 - friction]]
    )
    noise = 2 * friction * eta * g * np.ones((2, 2))
    return scipy.linalg.solve_discrete_lyapunov(a_matrix, noise)[0, 0]


def test_sghmc_full_batch_matches_the_exact_law_of_its_discretisation():
    target = gaussian_potential()
    precision = target.precision.double().numpy()
    result = sample_potential(
        target,
        method="sghmc",
        num_samples=1500,
        warmup_steps=400,
        thin=5,
        num_chains=4,
        algorithm_options={"friction": 0.2},
        progress=False,
        seed=3,
    )
    steps = result.sample_stats["step_size"][:, 0].double().numpy()  # eta per chain
    for chain in range(4):
        g = result.metric[chain].double().numpy()
        exact_var = torch.tensor(
            [_sghmc_stationary_variance(precision[j], steps[chain], 0.2, g[j]) for j in range(2)]
        )
        draws = _draws(result)[chain : chain + 1]
        mean_err, var_err = _mean_and_var_errors(draws, target.mean, exact_var)
        assert (mean_err < 4).all() and (var_err < 4).all()


@pytest.mark.parametrize("correct", [True, False])
def test_sghmc_noise_correction_keeps_a_minibatch_chain_at_the_posterior(correct):
    """Minibatches of 10 of 100: the gradient noise ``B`` is about 900 in the stiff
    coordinate. Measured in warm-up and subtracted (with the step capped so that it fits in
    half the injected variance), the draws' variance is within 10% + 4 SE of the posterior's
    (the rest is the discretisation's O(h^2)). Without the correction the chain is hot by a
    factor of about 10: the same check fails, so the test has power."""
    target = gaussian_potential()
    result = sample_potential(
        target,
        method="sghmc",
        batch_size=10,
        num_samples=1000,
        warmup_steps=1000,
        thin=10,
        num_chains=4,
        algorithm_options={"friction": 0.2, "correct_noise": correct},
        progress=False,
        seed=4,
    )
    draws = _draws(result).double()
    var = draws.reshape(-1, 2).var(0)
    exact = 1 / target.precision.double()
    within = (var - exact).abs() < 0.1 * exact + 4 * exact * math.sqrt(2 / 100)
    if correct:
        assert within.all(), var / exact
    else:
        assert not within.all()
