"""Tests of the uncertainty outputs (SPEC §5): each function against hand-computed answers and
direct loop implementations on small draws, plus the metrics of ``metrics.json``."""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import gaussian_kde

from pyro_bkd import metrics, uq


def _draws(chains: int, draws: int, num_obs: int, num_classes: int, seed: int) -> np.ndarray:
    """Dirichlet draws ``[chain, draw, N, K]``; each input has its own concentration."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.5, 5.0, size=(num_obs, num_classes))
    gamma = rng.gamma(alpha, size=(chains, draws, num_obs, num_classes))
    return gamma / gamma.sum(axis=-1, keepdims=True)


def _stack(*rows: list[list[float]]) -> np.ndarray:
    """Hand-made draws: each argument is one draw ``[N, K]``; one chain."""
    return np.asarray(rows, dtype=np.float64)[None]


def _entropy(q: np.ndarray) -> float:
    return -sum(p * math.log(p) for p in q if p > 0)


# --------------------------------------------------------------------------- coercion and checks


def test_as_probs_accepts_tensor_array_and_arviz_objects() -> None:
    probs = _draws(2, 3, 4, 3, seed=0)
    dataset = xr.Dataset({"probs": (("chain", "draw", "obs", "label"), probs)})
    idata = az.InferenceData(predictions=dataset)
    previous_layout = az.InferenceData(posterior_predictive=dataset)
    transposed = dataset["probs"].transpose("obs", "label", "chain", "draw")
    for value in (probs, torch.from_numpy(probs), dataset, idata, previous_layout, transposed):
        np.testing.assert_array_equal(uq.as_probs(value), probs)
    assert uq.as_probs(probs.astype(np.float32)).dtype == np.float32
    half = torch.softmax(torch.randn(1, 2, 3, 50, generator=torch.Generator().manual_seed(0)), -1)
    assert uq.as_probs(half.bfloat16()).dtype == np.float32
    assert uq.as_probs(half.half()).dtype == np.float16


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        (np.full((2, 3, 2), 0.5), "4-D"),
        (np.full((1, 1, 2, 1), 1.0), "K >= 2"),
        (np.array([[[[np.nan, 1.0]]]]), "finite"),
        (np.array([[[[-0.5, 1.5]]]]), ">= 0"),
        (np.array([[[[0.5, 0.6]]]]), "sum to 1"),
    ],
)
def test_as_probs_rejects_bad_draws(probs: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uq.as_probs(probs)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_interval_level_outside_unit_interval(level: float) -> None:
    probs = _draws(1, 5, 2, 2, seed=0)
    for function in (uq.hdi, uq.equal_tailed_interval, uq.credible_sets):
        with pytest.raises(ValueError, match="level must be in"):
            function(probs, level)


def test_mismatched_labels_and_true_probabilities() -> None:
    probs = _draws(1, 5, 4, 3, seed=0)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        uq.ranking_curve(probs, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        metrics.accuracy(probs, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="y must hold integer"):
        metrics.nll(probs, np.zeros(4))
    with pytest.raises(ValueError, match=r"p_true must have shape \(4, 3\)"):
        uq.interval_coverage(uq.hdi(probs), np.full((4, 2), 0.5))


# --------------------------------------------------------------------------- point estimates


def test_posterior_mean_of_two_draws() -> None:
    probs = _stack([[0.2, 0.8]], [[0.6, 0.4]])
    np.testing.assert_allclose(uq.posterior_mean(probs), [[0.4, 0.6]])


def test_kde_mode_all_equal_draws_is_that_value() -> None:
    probs = np.broadcast_to(np.array([0.3, 0.7]), (2, 4, 1, 2))
    np.testing.assert_allclose(uq.kde_mode(probs), [[0.3, 0.7]])


def test_kde_mode_finds_the_main_mode_not_the_mean() -> None:
    """40 draws near 0.2 and 10 near 0.8 (class 0): the KDE mode sits near 0.2, the mean 0.32."""
    rng = np.random.default_rng(0)
    first = np.concatenate([rng.normal(0.2, 0.01, 40), rng.normal(0.8, 0.01, 10)])
    probs = np.stack([first, 1 - first], axis=-1)[None, :, None, :]
    raw = uq._kde_mode_rows(probs[0, :, 0, :].T.astype(float), 512)
    assert abs(raw[0] - 0.2) < 0.01 and abs(raw[1] - 0.8) < 0.01
    np.testing.assert_allclose(uq.kde_mode(probs), [raw / raw.sum()])


def test_kde_mode_matches_scipy_gaussian_kde() -> None:
    """Against ``scipy.stats.gaussian_kde`` maximised on a 20001-point grid. The binned KDE
    locates each raw mode on a 512-point grid over ``[min, max]``, so it is within one grid
    step ``(max - min) / 511`` (measured: at most 0.5 step); renormalised vectors then agree to
    a few 1e-3."""
    probs = _draws(2, 100, 6, 3, seed=1)
    pooled = probs.reshape(-1, 6, 3)
    reference = np.zeros((6, 3))
    for n in range(6):
        for k in range(3):
            x = pooled[:, n, k]
            grid = np.linspace(x.min(), x.max(), 20001)
            reference[n, k] = grid[gaussian_kde(x)(grid).argmax()]
    raw = uq._kde_mode_rows(pooled.reshape(200, -1).T.astype(float), 512).reshape(6, 3)
    step = (pooled.max(0) - pooled.min(0)) / 511
    assert (np.abs(raw - reference) <= step).all()
    np.testing.assert_allclose(
        uq.kde_mode(probs), reference / reference.sum(1, keepdims=True), atol=3e-3
    )


def test_kde_mode_falls_back_to_mean_when_every_mode_is_zero() -> None:
    """Draws (1,0,0), (0,1,0), (0,0,1): each class has two draws at 0, so every mode is 0."""
    probs = _stack([[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(uq.kde_mode(probs), [[1 / 3, 1 / 3, 1 / 3]])


# --------------------------------------------------------------------------- intervals and sets


def test_hdi_of_a_known_sample() -> None:
    """Sorted class-0 draws 0, .10, .11, .12, .13, .90 at level 0.5: windows of
    floor(0.5 * 6) + 1 = 4 draws have widths .12, .03, .79, so the HDI is [.10, .13]; class 1
    (= 1 - class 0) mirrors it: [.87, .90]."""
    first = np.array([0.9, 0.0, 0.12, 0.1, 0.13, 0.11])
    probs = np.stack([first, 1 - first], axis=-1)[None, :, None, :]
    interval = uq.hdi(probs, level=0.5)
    np.testing.assert_allclose(interval.lower, [[0.10, 0.87]])
    np.testing.assert_allclose(interval.upper, [[0.13, 0.90]])


@pytest.mark.parametrize("level", [0.3, 0.5, 0.8, 0.95, 0.99])
def test_hdi_equals_arviz_and_holds_the_level(level: float) -> None:
    probs = _draws(2, 60, 3, 4, seed=2)
    interval = uq.hdi(probs, level)
    pooled = probs.reshape(-1, 3, 4)
    for n in range(3):
        for k in range(4):
            expected = az.hdi(pooled[:, n, k], hdi_prob=level)
            assert (interval.lower[n, k], interval.upper[n, k]) == tuple(expected)
    inside = (pooled >= interval.lower) & (pooled <= interval.upper)
    assert (inside.mean(axis=0) >= level).all()


def test_equal_tailed_interval_against_numpy_quantiles() -> None:
    probs = _draws(3, 40, 2, 3, seed=3)
    interval = uq.equal_tailed_interval(probs, level=0.9)
    pooled = probs.reshape(-1, 2, 3)
    for n in range(2):
        for k in range(3):
            low, high = np.quantile(pooled[:, n, k], [0.05, 0.95])
            assert interval.lower[n, k] == pytest.approx(low, abs=1e-15)
            assert interval.upper[n, k] == pytest.approx(high, abs=1e-15)
    np.testing.assert_allclose(interval.width, interval.upper - interval.lower)


def test_credible_sets_by_hand() -> None:
    """One draw (0.6, 0.3, 0.1): mass .6 then .9, so level .5 keeps {0} and .8 keeps {0, 1}.
    Two draws (.7, .2, .1), (.1, .7, .2) at level .6: sorted values .7, .7 give mass
    .35, .70, so u = .7; per-draw sets {0} and {1}, union {0, 1}."""
    one = _stack([[0.6, 0.3, 0.1]])
    assert uq.credible_sets(one, 0.5).tolist() == [[True, False, False]]
    assert uq.credible_sets(one, 0.8).tolist() == [[True, True, False]]
    two = _stack([[0.7, 0.2, 0.1]], [[0.1, 0.7, 0.2]])
    assert uq.credible_sets(two, 0.6).tolist() == [[True, True, False]]


def _bisection_sets(probs: np.ndarray, level: float) -> np.ndarray:
    """SPEC §5 literally: bisection on u in [0, 1] keeping m(lo) >= level, loops over n."""
    pooled = probs.reshape(-1, *probs.shape[2:])
    masks = []
    for n in range(pooled.shape[1]):
        q = pooled[:, n, :]
        low, high = 0.0, 1.0
        for _ in range(100):
            middle = (low + high) / 2
            mass = np.mean([row[row >= middle].sum() for row in q])
            low, high = (middle, high) if mass >= level else (low, middle)
        masks.append((q >= low).any(axis=0))
    return np.array(masks)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_credible_sets_match_bisection_and_hold_the_mass(level: float) -> None:
    probs = _draws(2, 30, 8, 5, seed=4)
    mask = uq.credible_sets(probs, level)
    np.testing.assert_array_equal(mask, _bisection_sets(probs, level))
    predictive_mass = (uq.posterior_mean(probs) * mask).sum(axis=1)
    assert (predictive_mass >= level - 1e-12).all()


def test_chunked_functions_agree_with_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    probs = _draws(2, 20, 7, 3, seed=9)
    whole = uq.kde_mode(probs), uq.credible_sets(probs, 0.9)
    monkeypatch.setattr(uq, "CHUNK_ELEMENTS", 100)  # chunks of 1-2 inputs or (n, k) entries
    np.testing.assert_array_equal(uq.kde_mode(probs), whole[0])
    np.testing.assert_array_equal(uq.credible_sets(probs, 0.9), whole[1])


def test_coverage_and_mean_width_by_hand() -> None:
    interval = uq.Interval(np.array([[0.1, 0.2], [0.0, 0.5]]), np.array([[0.3, 0.4], [0.2, 0.9]]))
    p_true = np.array([[0.3, 0.5], [0.25, 0.5]])  # inside (bound), outside, outside, inside
    assert uq.interval_coverage(interval, p_true) == 0.5
    assert uq.mean_interval_width(interval) == pytest.approx((0.2 + 0.2 + 0.2 + 0.4) / 4)


# --------------------------------------------------------------------------- uncertainty scores


def test_mean_deviance_by_hand() -> None:
    """A one-hot draw has deviance 0; (.5, .5) has -2 * 2 * .5 log .5 = 2 log 2."""
    probs = _stack([[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(uq.mean_deviance(probs), [0.0, 2 * math.log(2)], atol=1e-15)


def test_mean_deviance_and_entropy_split_against_loops() -> None:
    probs = _draws(2, 7, 5, 4, seed=5)
    probs[0, 0, 0] = [0.0, 0.0, 0.25, 0.75]  # exact zeros: 0 log 0 = 0
    pooled = probs.reshape(-1, 5, 4)
    deviance = [np.mean([2 * _entropy(q) for q in pooled[:, n]]) for n in range(5)]
    np.testing.assert_allclose(uq.mean_deviance(probs), deviance, rtol=1e-12)
    split = uq.entropy_decomposition(probs)
    total = [_entropy(pooled[:, n].mean(axis=0)) for n in range(5)]
    np.testing.assert_allclose(split.total, total, rtol=1e-12)
    np.testing.assert_allclose(split.aleatoric, np.array(deviance) / 2, rtol=1e-12)
    np.testing.assert_allclose(split.epistemic, split.total - split.aleatoric, atol=1e-15)
    assert (split.epistemic >= 0).all()


def test_entropy_split_of_disagreeing_one_hot_draws() -> None:
    """Draws (1, 0) and (0, 1): no aleatoric uncertainty, all of log 2 is epistemic."""
    split = uq.entropy_decomposition(_stack([[1.0, 0.0]], [[0.0, 1.0]]))
    assert split.aleatoric[0] == 0.0
    assert split.epistemic[0] == pytest.approx(math.log(2))


def test_ranking_curve_by_hand() -> None:
    """MD rises from input 0 to 3; inputs 0 and 2 are right, 1 and 3 wrong."""
    probs = _stack([[0.99, 0.01], [0.9, 0.1], [0.7, 0.3], [0.55, 0.45]])
    curve = uq.ranking_curve(probs, np.array([0, 1, 0, 1]), fractions=[0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.accuracy, [1.0, 0.5, 2 / 3, 0.5])
    default = uq.ranking_curve(probs, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(default.fraction, np.linspace(0.1, 1.0, 10))
    with pytest.raises(ValueError, match="fractions"):
        uq.ranking_curve(probs, np.array([0, 1, 0, 1]), fractions=[0.0, 0.5])


# --------------------------------------------------------------------------- metrics


def test_scores_against_loops() -> None:
    probs = _draws(2, 5, 6, 3, seed=6)
    y = np.array([0, 1, 2, 0, 1, 2])
    mean = probs.reshape(-1, 6, 3).mean(axis=0)
    assert metrics.accuracy(probs, y) == np.mean([mean[n].argmax() == y[n] for n in range(6)])
    nll = -np.mean([math.log(mean[n, y[n]]) for n in range(6)])
    assert metrics.nll(probs, y) == pytest.approx(nll, rel=1e-12)
    brier = np.mean([sum((mean[n, k] - (k == y[n])) ** 2 for k in range(3)) for n in range(6)])
    assert metrics.brier(probs, y) == pytest.approx(brier, rel=1e-12)


def test_nll_stays_finite_at_zero_probability() -> None:
    assert metrics.nll(_stack([[1.0, 0.0]]), np.array([1])) == pytest.approx(708.4, abs=0.1)


def test_ece_zero_for_a_perfectly_calibrated_toy() -> None:
    """10 inputs at confidence .8 with 8 right and 5 at .6 with 3 right: accuracy equals
    confidence in both bins ((11/15, 12/15] and (8/15, 9/15], edges included on the right)."""
    rows = [[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 5
    y = np.array([0] * 8 + [1] * 2 + [0] * 3 + [1] * 2)
    probs = _stack(rows)
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    bins = metrics.reliability_bins(probs, y)
    assert bins.count.sum() == 15 and bins.count[11] == 10 and bins.count[8] == 5
    assert np.isnan(bins.accuracy[0])


def test_ece_of_an_overconfident_toy() -> None:
    """Confidence .9, half right: |0.5 - 0.9| = 0.4."""
    probs = _stack([[0.9, 0.1]] * 4)
    assert metrics.expected_calibration_error(probs, np.array([0, 0, 1, 1])) == pytest.approx(0.4)


def test_md_auroc() -> None:
    probs = _stack([[0.99, 0.01], [0.9, 0.1], [0.7, 0.3], [0.55, 0.45]])
    assert metrics.md_auroc(probs, np.array([0, 0, 1, 1])) == 1.0
    assert metrics.md_auroc(probs, np.array([1, 1, 0, 0])) == 0.0
    assert math.isnan(metrics.md_auroc(probs, np.array([0, 0, 0, 0])))


def test_convergence_diagnostics_match_arviz() -> None:
    probs = _draws(3, 40, 2, 3, seed=7)
    dataset = az.convert_to_dataset({"probs": probs})
    assert metrics.max_rhat(probs) == pytest.approx(float(az.rhat(dataset)["probs"].max()))
    assert metrics.min_ess_bulk(probs) == pytest.approx(float(az.ess(dataset)["probs"].min()))
    assert math.isnan(metrics.max_rhat(probs[:1]))
    assert metrics.min_ess_bulk(probs[:1]) > 0
    assert np.isnan(metrics.ess_bulk(probs[:, :3])).all()  # ArviZ needs 4 draws
    constant = np.broadcast_to(np.array([0.2, 0.8]), (2, 10, 1, 2))
    assert np.isnan(metrics.rhat(constant)).all()
    assert metrics.min_ess_bulk(constant) == 20  # ArviZ: a constant entry has ESS = draws


def test_summarize_fields_are_json_values() -> None:
    probs = _draws(2, 20, 6, 3, seed=8)
    y = np.array([0, 1, 2, 0, 1, 2])
    p_true = probs[0, 0]
    summary = metrics.summarize(probs, y, p_true, level=0.9, interval="hdi")
    json.dumps(summary, allow_nan=False)
    assert summary["accuracy"] == metrics.accuracy(probs, y)
    assert summary["coverage"] == uq.interval_coverage(uq.hdi(probs, 0.9), p_true)
    assert (summary["num_chains"], summary["num_draws"], summary["num_obs"]) == (2, 20, 6)
    bare = metrics.summarize(probs[:1])
    json.dumps(bare, allow_nan=False)
    for key in ("accuracy", "nll", "brier", "ece", "md_auroc", "coverage", "max_rhat"):
        assert bare[key] is None
    assert isinstance(bare["min_ess_bulk"], float)
    with pytest.raises(ValueError, match="interval must be"):
        metrics.summarize(probs, interval="quantile")
