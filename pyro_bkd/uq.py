"""Uncertainty quantification from posterior predictive class probabilities (SPEC §5).

Every function takes the draws ``q^(s)(x_n)`` as ``probs`` of shape ``[chain, draw, N, K]``
(a ``torch.Tensor``, a ``numpy`` array, or the ``predictions`` group / an
``InferenceData`` holding ``probs``; see :func:`as_probs`). Draws are pooled over chains and
draws: ``s = 1..S`` with ``S = chain * draw``. Results are ``numpy`` arrays in float64 (or float
scalars). Large inputs keep their dtype (float32 stays float32); sums over draws accumulate in
float64.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.special import xlogy

#: Tolerance on ``|sum_k q_k - 1|`` for a draw to count as a probability vector, raised to
#: ``K * eps`` of the dtype for half precision: far above the rounding of a softmax (about
#: ``K * eps``), far below the error of passing logits or unnormalised scores.
ROW_SUM_TOLERANCE = 1e-3

#: Elements per chunk of the functions that process inputs in chunks to bound memory.
CHUNK_ELEMENTS = 2**20


class Interval(NamedTuple):
    """Per-(input, class) credible interval ``[lower, upper]``, each ``[N, K]``."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def width(self) -> np.ndarray:
        """``upper - lower``, ``[N, K]``."""
        return self.upper - self.lower


class EntropyDecomposition(NamedTuple):
    """Predictive entropy split, each ``[N]``, in nats: ``total = aleatoric + epistemic``."""

    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


class RankingCurve(NamedTuple):
    """Accuracy of the most certain ``fraction`` of inputs ranked by ``MD`` (both ``[F]``)."""

    fraction: np.ndarray
    accuracy: np.ndarray


# --------------------------------------------------------------------------- coercion and checks


def as_probs(probs: Any, name: str = "probs") -> np.ndarray:
    """Return the draws ``q^(s)(x_n)`` as a checked ``numpy`` array ``[chain, draw, N, K]``.

    Accepts a ``torch.Tensor`` (detached, moved to the CPU), an array-like, an
    ``xarray.DataArray`` with dims ``chain, draw`` first (transposed if needed), a dataset
    holding ``probs`` (the ``predictions`` group) or an ``InferenceData``/``DataTree``
    with such a group (see :func:`probs_group`). Floating arrays keep their dtype (no copy when
    possible).

    Raises:
        ValueError: not 4-D, an empty axis, ``K < 2``, a non-finite or negative value, or a
            draw whose classes do not sum to 1 within :data:`ROW_SUM_TOLERANCE`.

    ``bfloat16`` tensors become float32 (NumPy has no bfloat16).
    """
    selected = _select_probs(probs)
    bfloat16 = isinstance(selected, torch.Tensor) and selected.dtype == torch.bfloat16
    array = to_numpy(selected)
    if array.ndim != 4:
        raise ValueError(f"{name} must be 4-D [chain, draw, N, K], got shape {tuple(array.shape)}")
    if min(array.shape) == 0 or array.shape[-1] < 2:
        raise ValueError(
            f"{name} must have non-empty axes and K >= 2 classes, got shape {tuple(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; the draws hold NaN or inf")
    if (array < 0).any():
        raise ValueError(f"{name} must be probabilities >= 0; got negative values")
    eps = torch.finfo(torch.bfloat16).eps if bfloat16 else np.finfo(array.dtype).eps
    worst = float(np.abs(array.sum(-1, dtype=np.float64) - 1.0).max())
    if worst > max(ROW_SUM_TOLERANCE, array.shape[-1] * eps):
        raise ValueError(
            f"{name} must sum to 1 over classes (last axis); worst |sum - 1| = {worst:.3g}"
        )
    return array


def as_labels(y: Any, num_obs: int, num_classes: int, name: str = "y") -> np.ndarray:
    """Return labels ``y`` as an int64 array ``[N]`` after checking shape and range."""
    array = to_numpy(y)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    if array.shape != (num_obs,):
        raise ValueError(
            f"{name} must have shape ({num_obs},) to match the N of probs, got {tuple(array.shape)}"
        )
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} must hold labels in [0, {num_classes}), "
            f"got values in [{array.min()}, {array.max()}]"
        )
    return array.astype(np.int64)


def as_class_probs(p: Any, num_obs: int, num_classes: int, name: str = "p_true") -> np.ndarray:
    """Return a ``[N, K]`` matrix of class probabilities (``p*`` or a teacher's) as float64."""
    array = to_numpy(p).astype(np.float64)
    if array.shape != (num_obs, num_classes):
        raise ValueError(
            f"{name} must have shape ({num_obs}, {num_classes}) to match probs [.., N, K], "
            f"got {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; it holds NaN or inf")
    return array


def check_level(level: float, name: str = "level") -> float:
    """Return ``level`` as a float after checking ``0 < level < 1``."""
    if isinstance(level, bool) or not isinstance(level, int | float | np.floating):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(level).__name__}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {level!r}")
    return float(level)


def probs_group(obj: Any) -> Any:
    """The group holding ``probs`` of an ``InferenceData``/``DataTree``: ``predictions``, or
    ``posterior_predictive`` for objects built in the previous layout; any other object is
    returned as it is.

    Raises:
        ValueError: an ``InferenceData``/``DataTree`` with ``probs`` in neither group.
    """
    if not hasattr(obj, "groups") and not hasattr(obj, "children"):
        return obj
    for name in ("predictions", "posterior_predictive"):
        group = getattr(obj, name, None)
        if group is not None and "probs" in group.data_vars:
            return group
    raise ValueError("probs: the InferenceData has no 'predictions' group holding 'probs'")


def _select_probs(obj: Any) -> Any:
    obj = probs_group(obj)
    if hasattr(obj, "data_vars"):
        if "probs" not in obj.data_vars:
            raise ValueError("probs: the dataset has no variable 'probs'")
        obj = obj["probs"]
    if hasattr(obj, "dims") and hasattr(obj, "transpose") and {"chain", "draw"} <= set(obj.dims):
        obj = obj.transpose("chain", "draw", ...)
    return obj


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return np.asarray(value)


def _pooled(probs: Any) -> np.ndarray:
    """Checked draws with chains and draws merged: ``[S, N, K]`` (a view)."""
    array = as_probs(probs)
    return array.reshape(-1, *array.shape[2:])


# --------------------------------------------------------------------------- point estimates


def posterior_mean(probs: Any) -> np.ndarray:
    """Posterior-mean class probabilities ``qbar(x_n) = (1/S) sum_s q^(s)(x_n)``, ``[N, K]``.

    This is also the posterior predictive distribution of the label at ``x_n``.
    """
    return _pooled(probs).mean(axis=0, dtype=np.float64)


def kde_mode(probs: Any, grid_size: int = 512) -> np.ndarray:
    """Per-class KDE mode of ``q_k^(s)(x_n)``, renormalised over classes to sum 1, ``[N, K]``.

    For each ``(n, k)`` the draws ``{q_k^(s)(x_n)}_s`` get a Gaussian kernel density with
    Scott's bandwidth ``h = sd * S^(-1/5)`` (``sd`` with ``ddof=1``, as
    ``scipy.stats.gaussian_kde``), evaluated on ``grid_size`` equally spaced points spanning
    ``[min_s q, max_s q]`` (a Gaussian mixture's modes lie in that hull). The draws are linearly
    binned onto the grid and convolved with the kernel by FFT, so the cost is
    ``O(S + grid_size log grid_size)`` per ``(n, k)``; the mode is located to within one grid
    step ``(max - min) / (grid_size - 1)``. All-equal draws have that value as their mode.
    The vector of modes ``m`` is renormalised, ``m / sum_k m_k`` (the authors' code); a row whose
    modes are all 0 falls back to the posterior mean.
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 3:
        raise ValueError(f"grid_size must be an int >= 3, got {grid_size!r}")
    pooled = _pooled(probs)
    num_draws, num_obs, num_classes = pooled.shape
    rows = pooled.reshape(num_draws, -1)
    chunk = max(1, CHUNK_ELEMENTS // max(num_draws, 2 * grid_size))
    modes = np.concatenate(
        [
            _kde_mode_rows(rows[:, start : start + chunk].T.astype(np.float64), grid_size)
            for start in range(0, rows.shape[1], chunk)
        ]
    ).reshape(num_obs, num_classes)
    total = modes.sum(axis=1, keepdims=True)
    mean = pooled.mean(axis=0, dtype=np.float64)
    return np.where(total > 0, modes / np.where(total > 0, total, 1.0), mean)


def _kde_mode_rows(draws: np.ndarray, grid_size: int) -> np.ndarray:
    """KDE modes of each row of ``draws`` ``[R, S]`` (binned Gaussian KDE, see :func:`kde_mode`)."""
    num_rows, num_draws = draws.shape
    low, high = draws.min(axis=1), draws.max(axis=1)
    spread = draws.std(axis=1, ddof=1) if num_draws > 1 else np.zeros(num_rows)
    bandwidth = spread * num_draws ** (-1.0 / 5.0)
    flat = (high <= low) | (bandwidth <= 0)
    step = np.where(flat, 1.0, (high - low) / (grid_size - 1))
    position = (draws - low[:, None]) / step[:, None]
    left = np.clip(np.floor(position), 0, grid_size - 2).astype(np.int64)
    right_weight = position - left
    index = left + grid_size * np.arange(num_rows)[:, None]
    counts = np.bincount(
        index.ravel(), weights=(1.0 - right_weight).ravel(), minlength=num_rows * grid_size
    ) + np.bincount(index.ravel() + 1, weights=right_weight.ravel(), minlength=num_rows * grid_size)
    counts = counts.reshape(num_rows, grid_size)
    # Circular convolution of length 2G equals the linear one on the G grid points (no wrap).
    length = 2 * grid_size
    offset = np.minimum(np.arange(length), length - np.arange(length))
    scaled = offset[None, :] * (step / np.where(flat, 1.0, bandwidth))[:, None]
    kernel = np.exp(-0.5 * scaled**2)
    spectrum = np.fft.rfft(counts, n=length) * np.fft.rfft(kernel, n=length)
    density = np.fft.irfft(spectrum, n=length)[:, :grid_size]
    return np.where(flat, low, low + density.argmax(axis=1) * step)


# --------------------------------------------------------------------------- intervals and sets


def equal_tailed_interval(probs: Any, level: float = 0.95) -> Interval:
    """Equal-tailed credible interval of each ``q_k(x_n)``: the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the pooled draws (linear interpolation, ``numpy.quantile``)."""
    level = check_level(level)
    bounds = np.quantile(_pooled(probs), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return Interval(bounds[0].astype(np.float64), bounds[1].astype(np.float64))


def hdi(probs: Any, level: float = 0.95) -> Interval:
    """Highest-density interval of each ``q_k(x_n)``: the narrowest window of sorted draws.

    With sorted draws ``v_(1) <= ... <= v_(S)`` and ``j = floor(level * S)``, the interval is
    ``[v_(i), v_(i+j)]`` for the ``i`` minimising ``v_(i+j) - v_(i)`` (first minimiser on ties),
    the rule of ``arviz.hdi`` (unimodal). The window holds ``j + 1 > level * S`` draws, so at
    least a ``level`` share of the draws, for any level in (0, 1).
    """
    level = check_level(level)
    ordered = np.sort(_pooled(probs), axis=0)
    num_draws = ordered.shape[0]
    span = math.floor(level * num_draws)
    widths = np.subtract(ordered[span:], ordered[: num_draws - span], dtype=np.float64)
    start = widths.argmin(axis=0)[None]
    lower = np.take_along_axis(ordered, start, axis=0)[0]
    upper = np.take_along_axis(ordered, start + span, axis=0)[0]
    return Interval(lower.astype(np.float64), upper.astype(np.float64))


def credible_sets(probs: Any, level: float = 0.95) -> np.ndarray:
    """Credible sets of labels by the deviance threshold, a boolean mask ``[N, K]``.

    For input ``x`` the threshold ``u(x)`` is the largest ``u`` whose per-draw sets
    ``A_s(u) = {k : q_k^(s)(x) >= u}`` (equivalently deviance ``-2 log q_k^(s) <= -2 log u``)
    hold posterior-average mass ``m(u) = (1/S) sum_s sum_{k in A_s(u)} q_k^(s) >= level``
    (``level = 1 - a``). ``m`` is a non-increasing step function that jumps only at the values
    ``q_k^(s)``, so the bisection of SPEC §5 is solved exactly: sort the ``S*K`` values in
    decreasing order, accumulate their mass ``/ S`` and take the value at the first crossing
    of ``level``. If rounding keeps the total mass below ``level`` (level within ~1e-7 of 1), ``u``
    is the smallest value and the set holds every class.

    The returned set is the union ``{k : max_s q_k^(s)(x) >= u(x)}`` of the per-draw sets, so
    its posterior predictive mass ``sum_{k in set} qbar_k(x) >= m(u) >= level``.
    """
    level = check_level(level)
    pooled = _pooled(probs)
    num_draws, num_obs, num_classes = pooled.shape
    chunk = max(1, CHUNK_ELEMENTS // (num_draws * num_classes))
    return np.concatenate(
        [
            _credible_rows(pooled[:, start : start + chunk], level)
            for start in range(0, num_obs, chunk)
        ]
    )


def _credible_rows(pooled: np.ndarray, level: float) -> np.ndarray:
    """:func:`credible_sets` of the inputs of ``pooled`` ``[S, n, K]`` (one chunk)."""
    num_draws, num_obs, _ = pooled.shape
    values = np.moveaxis(pooled, 1, 0).reshape(num_obs, -1)
    descending = -np.sort(-values, axis=1)
    mass = np.cumsum(descending, axis=1, dtype=np.float64) / num_draws
    crossing = np.minimum((mass < level).sum(axis=1), values.shape[1] - 1)
    threshold = descending[np.arange(num_obs), crossing]
    return pooled.max(axis=0) >= threshold[:, None]


def interval_coverage(interval: Interval, p_true: Any) -> float:
    """Share of ``(n, k)`` pairs with ``lower_nk <= p*_k(x_n) <= upper_nk`` (bounds included)."""
    p_true = as_class_probs(p_true, *interval.lower.shape)
    inside = (interval.lower <= p_true) & (p_true <= interval.upper)
    return float(inside.mean())


def mean_interval_width(interval: Interval) -> float:
    """Average of ``upper - lower`` over all ``(n, k)`` pairs."""
    return float(interval.width.mean())


# --------------------------------------------------------------------------- uncertainty scores


def mean_deviance(probs: Any) -> np.ndarray:
    """Mean deviance ``MD(x_n) = (1/S) sum_s [-2 sum_k q_k^(s) log q_k^(s)]``, ``[N]``.

    Terms with ``q = 0`` count 0 (``0 log 0 = 0``). ``MD = 2 * aleatoric`` of
    :func:`entropy_decomposition`; a one-hot draw has deviance 0.
    """
    pooled = _pooled(probs)
    return -2.0 * xlogy(pooled, pooled).sum(axis=-1).mean(axis=0, dtype=np.float64)


def entropy_decomposition(probs: Any) -> EntropyDecomposition:
    """Split the predictive entropy into aleatoric and epistemic parts (nats), each ``[N]``.

    ``total = H(qbar)`` with ``qbar = (1/S) sum_s q^(s)``; ``aleatoric = (1/S) sum_s H(q^(s))``
    (expected entropy); ``epistemic = total - aleatoric``, the mutual information between the
    label and the weights, ``>= 0`` by Jensen (clipped at 0 to remove round-off).
    ``H(q) = -sum_k q_k log q_k`` with ``0 log 0 = 0``.
    """
    pooled = _pooled(probs)
    mean = pooled.mean(axis=0, dtype=np.float64)
    total = -xlogy(mean, mean).sum(axis=-1)
    aleatoric = -xlogy(pooled, pooled).sum(axis=-1).mean(axis=0, dtype=np.float64)
    return EntropyDecomposition(total, aleatoric, np.clip(total - aleatoric, 0.0, None))


def ranking_curve(probs: Any, y: Any, fractions: Any = None) -> RankingCurve:
    """Accuracy of the most certain inputs by mean deviance, for each retained fraction.

    Inputs are sorted by ``MD`` ascending (stable: ties keep input order); for a fraction ``f``
    the first ``max(1, round(f * N))`` inputs are kept and the accuracy of the posterior-mean
    prediction ``argmax_k qbar_k`` on them is reported. Default fractions ``0.1, 0.2, ..., 1.0``.
    A useful uncertainty score gives a curve that falls as ``f`` grows.
    """
    pooled = _pooled(probs)
    labels = as_labels(y, pooled.shape[1], pooled.shape[2])
    grid = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, float)
    if grid.ndim != 1 or grid.size == 0 or (grid <= 0).any() or (grid > 1).any():
        raise ValueError(f"fractions must be a 1-D sequence in (0, 1], got {fractions!r}")
    order = np.argsort(mean_deviance(pooled[None]), kind="stable")
    correct = (pooled.mean(axis=0, dtype=np.float64).argmax(axis=1) == labels)[order]
    kept = np.maximum(1, np.rint(grid * labels.size).astype(np.int64))
    accuracy = np.cumsum(correct)[kept - 1] / kept
    return RankingCurve(grid, accuracy)
