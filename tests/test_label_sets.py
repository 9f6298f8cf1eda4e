"""Label-set coverage (the BKD paper's metric): definition, standard error, protocol, checks.

Statistical tests draw labels ``y_n ~ Categorical(p*(x_n))`` with fixed seeds. For a predictive
``qbar = p*`` (calibrated), the expected coverage given the inputs is the mean set mass
``m = (1/N) sum_n sum_{k in C_n} p*_k``, and the coverage is a mean of ``N`` independent
Bernoulli variables, so its Monte Carlo sd is at most ``sqrt(m (1 - m) / N)``; the tests allow
4 such sds (a false alarm rate below 1e-4).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from pyro_bkd import metrics, plots, uq
from pyro_bkd._checks import InputError


def _truth(num_obs: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``p* [N, K]`` (Dirichlet(0.5)) and labels drawn from it."""
    rng = np.random.default_rng(seed)
    p_true = rng.dirichlet(np.full(num_classes, 0.5), size=num_obs)
    cumulative = p_true.cumsum(axis=1)
    y = (rng.random((num_obs, 1)) > cumulative).sum(axis=1)
    return p_true, np.minimum(y, num_classes - 1)


def _sharpen(p: np.ndarray, power: float) -> np.ndarray:
    q = p**power
    return q / q.sum(axis=1, keepdims=True)


def test_single_draw_set_is_the_smallest_top_set_by_hand() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.05, 0.9, 0.05], [0.2, 0.5, 0.3]])[None, None]
    y = np.array([1, 0, 2])
    mask = metrics.label_sets(probs, 0.85)
    # 0.6 + 0.3 >= 0.85; 0.9 alone; 0.5 + 0.3 < 0.85 so all three.
    assert mask.tolist() == [[True, True, False], [False, True, False], [True, True, True]]
    row = metrics.label_set_coverage(probs, y, 0.85)
    assert row.coverage == pytest.approx(2 / 3)
    assert row.se == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 3))
    assert row.mean_size == pytest.approx((2 + 1 + 3) / 3)
    assert row.mean_mass == pytest.approx((0.9 + 0.9 + 1.0) / 3)
    assert row.num_obs == 3


def test_many_draws_use_the_posterior_credible_sets() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(2, 30, 50))
    y = rng.integers(0, 4, size=50)
    mask = uq.credible_sets(probs, 0.9)
    row = metrics.label_set_coverage(probs, y, 0.9)
    assert row.coverage == pytest.approx(mask[np.arange(50), y].mean())
    assert row.mean_size == pytest.approx(mask.sum(1).mean())
    assert row.mean_mass >= 0.9 - 1e-12  # every set holds predictive mass >= level


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_calibrated_predictions_cover_their_own_mass(level: float) -> None:
    p_true, y = _truth(4000, 6, seed=11)
    row = metrics.label_set_coverage(p_true[None, None], y, level)
    sd = math.sqrt(row.mean_mass * (1 - row.mean_mass) / row.num_obs)
    assert abs(row.coverage - row.mean_mass) <= 4 * sd, row
    assert row.coverage >= level - 4 * sd


def test_overconfident_predictions_undercover_detectably() -> None:
    """Sharpening p* (power 3) makes the sets too small: coverage falls short of both the
    sets' own mass and the nominal level by far more than 4 Monte Carlo sds."""
    p_true, y = _truth(4000, 6, seed=12)
    row = metrics.label_set_coverage(_sharpen(p_true, 3.0)[None, None], y, 0.95)
    sd = math.sqrt(0.95 * 0.05 / row.num_obs)
    assert row.coverage < 0.95 - 4 * sd
    assert row.coverage < row.mean_mass - 4 * sd


def test_coverage_by_size_is_nested_and_ends_at_the_full_set() -> None:
    p_true, y = _truth(1000, 4, seed=5)
    probs = p_true[None, None]
    rows = metrics.coverage_by_size(probs, y, [100, 400, 1000], 0.9, seed=2)
    full = metrics.label_set_coverage(probs, y, 0.9)
    assert rows[-1].coverage == pytest.approx(full.coverage)
    assert rows[-1].mean_size == pytest.approx(full.mean_size)
    order = np.random.default_rng(2).permutation(1000)
    mask = metrics.label_sets(probs, 0.9)
    first = mask[order[:100], y[order[:100]]].mean()
    assert rows[0].coverage == pytest.approx(first)
    assert [row.num_obs for row in rows] == [100, 400, 1000]
    for row in rows:
        assert row.se == pytest.approx(math.sqrt(row.coverage * (1 - row.coverage) / row.num_obs))


def test_summarize_reports_every_level() -> None:
    p_true, y = _truth(300, 5, seed=7)
    rng = np.random.default_rng(8)
    gamma = rng.gamma(50 * p_true + 0.1, size=(2, 10, 300, 5))
    probs = gamma / gamma.sum(-1, keepdims=True)
    summary = metrics.summarize(probs, y)
    json.dumps(summary, allow_nan=False)
    for level in metrics.LABEL_SET_LEVELS:
        key = metrics.level_key(level)
        row = metrics.label_set_coverage(probs, y, level)
        assert summary[f"set_coverage_{key}"] == row.coverage
        assert summary[f"set_coverage_{key}_se"] == row.se
        assert summary[f"set_size_{key}"] == row.mean_size
    unlabelled = metrics.summarize(probs)
    assert all(unlabelled[key] is None for key in metrics.label_set_keys())
    assert metrics.label_set_keys()[:3] == ["set_coverage_90", "set_coverage_90_se", "set_size_90"]


def test_bad_input_raises_input_error_naming_the_argument() -> None:
    p_true, y = _truth(20, 3, seed=1)
    probs = p_true[None, None]
    with pytest.raises(InputError, match="level"):
        metrics.label_set_coverage(probs, y, 1.0)
    with pytest.raises(InputError, match="levels"):
        metrics.label_set_coverages(probs, y, [0.9, 0.0])
    with pytest.raises(InputError, match=r"^y must"):
        metrics.label_set_coverage(probs, y[:-1], 0.9)
    with pytest.raises(InputError, match=r"^y must"):
        metrics.label_set_coverage(probs, y + 3, 0.9)
    with pytest.raises(InputError, match=r"^y must"):
        metrics.label_set_coverage(probs, y.astype(float), 0.9)
    with pytest.raises(InputError, match=r"^probs must"):
        metrics.label_set_coverage(p_true, y, 0.9)
    with pytest.raises(InputError, match="sizes"):
        metrics.coverage_by_size(probs, y, [10, 21], 0.9)
    with pytest.raises(InputError, match="sizes"):
        metrics.coverage_by_size(probs, y, [], 0.9)
    with pytest.raises(InputError, match="share"):
        metrics.binomial_se(1.5, 10)
    with pytest.raises(InputError, match="num_obs"):
        metrics.binomial_se(0.5, 0)


def test_coverage_plots_render(tmp_path: Path) -> None:
    p_true, y = _truth(500, 4, seed=9)
    rows = {
        "calibrated": metrics.coverage_by_size(p_true[None, None], y, [100, 250, 500]),
        "overconfident": metrics.coverage_by_size(
            _sharpen(p_true, 3.0)[None, None], y, [100, 250, 500]
        ),
    }
    figure = plots.coverage_vs_size(rows)
    assert isinstance(figure, Figure) and figure.axes[0].get_xscale() == "log"
    assert len(figure.axes[0].get_legend().get_texts()) == 3  # two methods and the nominal
    figure.savefig(tmp_path / "size.png")
    assert (tmp_path / "size.png").stat().st_size > 1000
    strength = plots.coverage_vs_strength(
        [0.0, 6.9, 24.0, 144.0], {"a": ([0.9, 0.92, 0.95, 0.97], [0.01] * 4)}, nominal=0.95
    )
    assert strength.axes[0].get_xscale() == "symlog"
    strength.savefig(tmp_path / "strength.png")
    mixed = {
        "a": rows["calibrated"],
        "b": metrics.coverage_by_size(p_true[None, None], y, [100], 0.9),
    }
    with pytest.raises(InputError, match="one level"):
        plots.coverage_vs_size(mixed)
    with pytest.raises(InputError, match="must have shape"):
        plots.coverage_vs_strength([1.0, 2.0], {"a": [0.9]})
