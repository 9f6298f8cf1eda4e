"""The vectorised R-hat and bulk ESS (:mod:`pyro_bkd.convergence`) against ArviZ itself.

ArviZ (``az.rhat(method="rank")``, ``az.ess(method="bulk")`` on an ``xarray.Dataset``, as
:mod:`pyro_bkd.metrics` called them before) is the independent reference, entry by entry.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr

from pyro_bkd import convergence, metrics

# Relative tolerance against ArviZ. The vectorised code runs the same algorithm in float64
# (same ranks, same Blom back-transform and ndtri, same FFT lengths and Geyer truncation), so
# the only possible difference is the order of floating-point summations (a few ulps, ~1e-15
# relative); 1e-10 leaves a wide margin for that while any algorithmic slip (a wrong split,
# rank, lag or truncation point) changes the value by far more.
RTOL = 1e-10

CHAINS = (1, 2, 4)
DRAWS = (4, 5, 7, 50, 201, 1000)


def _reference(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's rank R-hat and bulk ESS of every entry of ``draws`` ``[chain, draw, *shape]``."""
    dims = ("chain", "draw", *(f"d{i}" for i in range(draws.ndim - 2)))
    dataset = xr.Dataset({"x": (dims, draws)})
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = az.rhat(dataset, method="rank")["x"].to_numpy()
        ess = az.ess(dataset, method="bulk")["x"].to_numpy()
    return rhat, ess


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0.0, equal_nan=True)


def _ar1(rng: np.random.Generator, chains: int, draws: int, entries: int, rho: float):
    """AR(1) chains with unit stationary variance, ``[chain, draw, entry]``."""
    x = np.empty((chains, draws, entries))
    x[:, 0] = rng.normal(size=(chains, entries))
    noise = np.sqrt(1.0 - rho**2) * rng.normal(size=(chains, draws, entries))
    for i in range(1, draws):
        x[:, i] = rho * x[:, i - 1] + noise[:, i]
    return x


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _mixed_draws(rng: np.random.Generator, chains: int, draws: int) -> np.ndarray:
    """``[chain, draw, entry]``: entries of every hard case side by side."""
    shift = np.arange(chains)[:, None, None]
    probs = _softmax(
        12.0 * rng.normal(size=(chains, 1, 2, 3)) + rng.normal(size=(chains, draws, 2, 3))
    )
    parts = [
        rng.normal(size=(chains, draws, 3)),  # iid
        _ar1(rng, chains, draws, 3, 0.95),  # strong autocorrelation: Geyer truncation matters
        _ar1(rng, chains, draws, 2, -0.7),  # antithetic: negative odd lags, the tau floor
        rng.normal(size=(chains, draws, 2)) + 0.8 * shift,  # chains disagree: R-hat >> 1
        _ar1(rng, chains, draws, 2, 0.95) + 3.0 * shift,
        np.round(rng.normal(size=(chains, draws, 3)), 2),  # ties
        np.round(rng.normal(scale=0.01, size=(chains, draws, 2)), 2),  # heavy ties
        rng.integers(0, 2, size=(chains, draws, 2)).astype(float),  # two values only
        np.full((chains, draws, 2), 0.25),  # constant
        probs.reshape(chains, draws, -1),  # probabilities near 0 and 1
    ]
    between = np.zeros((chains, draws, 1))  # constant within chains, different across
    between[:] = shift[..., :1]
    parts.append(between)
    return np.concatenate(parts, axis=2)


@pytest.mark.parametrize("chains", CHAINS)
@pytest.mark.parametrize("draws", DRAWS)
def test_matches_arviz(chains: int, draws: int) -> None:
    rng = np.random.default_rng(1000 * chains + draws)
    x = _mixed_draws(rng, chains, draws)
    rhat, ess = _reference(x)
    _assert_same(convergence.rank_rhat(x), rhat)
    _assert_same(convergence.ess_bulk(x), ess)
    both = convergence.rank_rhat_and_ess_bulk(x)
    _assert_same(both[0], rhat)
    _assert_same(both[1], ess)
    if chains > 1:
        assert np.nanmax(rhat) > 1.5  # the disagreeing chains are caught


def test_metrics_match_arviz_on_probs() -> None:
    """``metrics.rhat``/``ess_bulk`` of ``[chain, draw, N, K]`` probabilities, also float32."""
    rng = np.random.default_rng(7)
    logits = 8.0 * rng.normal(size=(3, 1, 6, 4)) + rng.normal(size=(3, 60, 6, 4))
    probs = _softmax(logits)
    probs[:, :, 0] = probs[0, 0, 0]  # one input with draws constant over chains and draws
    for array in (probs, probs.astype(np.float32)):
        rhat, ess = _reference(array)
        _assert_same(metrics.rhat(array), rhat)
        _assert_same(metrics.ess_bulk(array), ess)
        assert metrics.max_rhat(array) == pytest.approx(np.nanmax(rhat), rel=RTOL)
        assert metrics.min_ess_bulk(array) == pytest.approx(np.nanmin(ess), rel=RTOL)
        summary = metrics.summarize(array)
        assert summary["max_rhat"] == metrics.max_rhat(array)
        assert summary["min_ess_bulk"] == metrics.min_ess_bulk(array)
    assert np.isnan(metrics.rhat(probs)[0]).all()
    assert (metrics.ess_bulk(probs)[0] == 3 * 60).all()


def test_small_shapes_and_odd_draws() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 5))
    assert np.isnan(convergence.rank_rhat(x)).all() and np.isnan(convergence.ess_bulk(x)).all()
    assert np.isnan(convergence.rank_rhat(rng.normal(size=(1, 50, 5)))).all()
    assert np.isfinite(convergence.ess_bulk(rng.normal(size=(1, 50, 5)))).all()
    # A constant entry's ESS counts the split draws: the middle draw of an odd count is dropped.
    assert (convergence.ess_bulk(np.ones((3, 9, 2))) == 3 * 8).all()
    assert convergence.rank_rhat(np.ones((3, 9))).shape == ()
    nan_entry = rng.normal(size=(2, 20, 3))
    nan_entry[0, 5, 1] = np.nan
    rhat, ess = _reference(nan_entry)
    _assert_same(convergence.rank_rhat(nan_entry), rhat)
    _assert_same(convergence.ess_bulk(nan_entry), ess)


def test_blocks_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([_ar1(rng, 2, 40, 7, 0.9), np.round(rng.normal(size=(2, 40, 4)), 1)], 2)
    whole = convergence.rank_rhat_and_ess_bulk(x)
    monkeypatch.setattr(convergence, "BLOCK_VALUES", 3 * 80)  # 3 entries a block
    blocked = convergence.rank_rhat_and_ess_bulk(x)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])


def test_large_input_runs() -> None:
    """[4, 200, 2000, 10] (20,000 entries, several blocks) runs; spot-checked against ArviZ."""
    rng = np.random.default_rng(11)
    logits = 4.0 * rng.normal(size=(1, 1, 2000, 10)) + rng.normal(size=(4, 200, 2000, 10))
    probs = _softmax(logits)
    rhat = metrics.rhat(probs)
    ess = metrics.ess_bulk(probs)
    assert rhat.shape == ess.shape == (2000, 10)
    assert np.isfinite(rhat).all() and np.isfinite(ess).all()
    picked = rng.choice(2000, size=8, replace=False)
    reference = _reference(probs[:, :, picked])
    _assert_same(rhat[picked], reference[0])
    _assert_same(ess[picked], reference[1])
