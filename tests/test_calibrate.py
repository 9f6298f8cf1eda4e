"""Choosing the teacher strength / posterior temperature on a validation split.

Labels are drawn from known ``p*`` with fixed seeds. A candidate's predictive is ``p*``
tempered, ``q proportional to p*^(1/v)``: ``v = 1`` is calibrated, ``v < 1`` over-confident
(sets too small), ``v > 1`` under-confident (sets too large). With ``N`` validation inputs a
coverage has Monte Carlo sd ``<= sqrt(c (1 - c) / N)``; at ``N = 3000`` and ``c`` near 0.95
that is 0.004, so the admissibility threshold ``0.95 - 1.645 * 0.004 = 0.9434`` separates the
calibrated candidate (expected coverage >= 0.95) from the over-confident ones, whose expected
coverage (computed below from ``p*``, not assumed) lies more than 4 sds below it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_bkd import BKDModel, DistillationData, metrics, models, sample
from pyro_bkd._checks import InputError
from pyro_bkd.calibrate import choose_from_draws, choose_strength, score_candidates
from pyro_bkd.data.synthetic import synthetic

LEVEL = 0.95


def _truth(num_obs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p_true = rng.dirichlet(np.full(6, 0.4), size=num_obs)
    y = (rng.random((num_obs, 1)) > p_true.cumsum(axis=1)).sum(axis=1)
    return p_true, np.minimum(y, 5)


def _tempered(p: np.ndarray, v: float) -> np.ndarray:
    q = p ** (1.0 / v)
    return (q / q.sum(axis=1, keepdims=True))[None, None]


def _expected_coverage(p_true: np.ndarray, v: float) -> float:
    """``E[coverage | x] = mean_n sum_{k in C_n} p*_k`` of the tempered predictive's sets."""
    mask = metrics.label_sets(_tempered(p_true, v), LEVEL)
    return float((mask * p_true).sum(axis=1).mean())


def test_the_calibrated_temperature_is_chosen_and_holds_on_held_out_data() -> None:
    p_val, y_val = _truth(3000, seed=21)
    candidates = (0.4, 0.6, 1.0, 2.0)
    sd = math.sqrt(LEVEL * (1 - LEVEL) / 3000)
    threshold = LEVEL - 1.645 * sd
    for v in (0.4, 0.6):  # the design: over-confident candidates fall far below threshold
        assert _expected_coverage(p_val, v) < threshold - 4 * sd
    choice = choose_from_draws(
        {v: _tempered(p_val, v) for v in candidates},
        y_val,
        LEVEL,
        parameter="posterior_temperature",
    )
    assert choice.threshold == pytest.approx(threshold)
    assert [s.admissible for s in choice.scores] == [False, False, True, True]
    assert choice.value == 1.0 and not choice.fallback  # smaller sets than v = 2
    assert choice.score(1.0).mean_size < choice.score(2.0).mean_size
    # Held out: fresh inputs and labels; the chosen predictive covers its own mass.
    p_test, y_test = _truth(3000, seed=22)
    held_out = metrics.label_set_coverage(_tempered(p_test, choice.value), y_test, LEVEL)
    sd_test = math.sqrt(held_out.mean_mass * (1 - held_out.mean_mass) / 3000)
    assert abs(held_out.coverage - held_out.mean_mass) <= 4 * sd_test
    assert held_out.coverage >= LEVEL - 4 * sd_test


def test_no_admissible_candidate_falls_back_to_the_highest_coverage() -> None:
    p_val, y_val = _truth(3000, seed=23)
    choice = choose_from_draws({v: _tempered(p_val, v) for v in (0.3, 0.5)}, y_val, LEVEL)
    assert choice.fallback and choice.value == 0.5
    assert not any(s.admissible for s in choice.scores)


def test_unconverged_candidates_are_excluded_on_request() -> None:
    p_val, y_val = _truth(3000, seed=24)
    draws = {v: _tempered(p_val, v) for v in (1.0, 2.0)}
    verdicts = {1.0: "not converged", 2.0: "converged"}
    lenient = choose_from_draws(draws, y_val, LEVEL, verdicts=verdicts)
    strict = choose_from_draws(draws, y_val, LEVEL, verdicts=verdicts, require_converged=True)
    assert lenient.value == 1.0 and strict.value == 2.0
    assert strict.score(1.0).verdict == "not converged" and not strict.score(1.0).admissible


def test_choose_strength_fits_real_bkd_posteriors() -> None:
    """End to end on a small synthetic problem: ``fit`` runs ``pyro_bkd.sample`` for each lam;
    the verdicts of the chains are recorded, the scores are those of the validation draws."""
    data = synthetic("linear-5class", 330, seed=3)
    torch.manual_seed(0)
    student = models.build("mlp", 5, in_features=5, hidden=(4,))
    logits = torch.log(data.p_train.clamp_min(1e-6))
    train = DistillationData(data.x_train, data.y_train, logits)
    results = {}

    def fit(lam: float):
        model = BKDModel(student, temperature=4.0, strength=lam, prior_scale=1.0)
        results[lam] = sample(
            model,
            train,
            num_samples=10,
            warmup_steps=20,
            thin=2,
            num_chains=2,
            x_test=data.x_val,
            map_steps=30,
            seed=0,
            progress=False,
        )
        return results[lam]

    with pytest.warns(Warning):  # short chains: the ConvergenceWarning
        choice = choose_strength(fit, [0.0, 144.0], data.y_val, LEVEL)
    assert choice.value in (0.0, 144.0) and choice.parameter == "strength"
    for lam, result in results.items():
        score = choice.score(lam)
        assert score.verdict == result.convergence.status
        row = metrics.label_set_coverage(result.probs, data.y_val, LEVEL)
        assert score.coverage == row.coverage and score.mean_size == row.mean_size
    assert choice.num_val == data.y_val.numel()


def test_bad_input_is_named() -> None:
    p_val, y_val = _truth(50, seed=1)
    draws = {1.0: _tempered(p_val, 1.0)}
    with pytest.raises(InputError, match="parameter"):
        choose_from_draws(draws, y_val, parameter="lam")
    with pytest.raises(InputError, match="probs_by_value"):
        score_candidates({}, y_val)
    with pytest.raises(InputError, match="level"):
        choose_from_draws(draws, y_val, 1.5)
    with pytest.raises(InputError, match="z"):
        choose_from_draws(draws, y_val, z=-1.0)
    with pytest.raises(InputError, match=r"^y must"):
        choose_from_draws(draws, y_val[:10])
    with pytest.raises(InputError, match="candidates"):
        choose_strength(lambda v: draws[1.0], [], y_val)
    with pytest.raises(InputError, match="candidates"):
        choose_strength(lambda v: draws[1.0], [1.0, 1.0], y_val)
    with pytest.raises(InputError, match="not a candidate"):
        choose_from_draws(draws, y_val).score(3.0)
