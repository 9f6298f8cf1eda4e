"""Vectorised rank-normalised convergence diagnostics: split R-hat and bulk ESS.

:func:`rank_rhat` and :func:`ess_bulk` give, for draws ``[chain, draw, *shape]``, the same
numbers as ``arviz.rhat(method="rank")`` and ``arviz.ess(method="bulk")`` (ArviZ 0.23, Vehtari
et al. 2021) for every entry of ``shape``, but compute them with NumPy over all entries at once
instead of a Python loop per entry. They replicate ArviZ operation by operation in float64:
chains split into first and last halves (the middle draw of an odd count dropped), average
ranks over all split draws of an entry back-transformed with Blom's ``(r - 3/8) / (S + 1/4)``
and ``norm.ppf``, the classical R-hat formula on the bulk and the folded (tail) z-scores, and
the FFT autocovariance with Geyer's initial positive and initial monotone sequences for the
ESS. Reductions keep ArviZ's axis layout, so the results usually agree bit for bit and
otherwise only in the last bits (summation order).

Entries are processed in blocks of at most :data:`BLOCK_VALUES` draws so memory stays bounded.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from scipy import special

#: Largest number of draws (entries x chains x draws) handled in one block.
BLOCK_VALUES = 2**21

#: Largest number of entries handled in one block.
BLOCK_ENTRIES = 4096

#: Fewest draws per chain for either diagnostic and fewest chains for R-hat (as in ArviZ).
MIN_DRAWS = 4
MIN_CHAINS_RHAT = 2

_BLOM_OFFSET = 3 / 8


def rank_rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat of every entry of ``draws`` ``[chain, draw, *shape]``.

    The larger of the bulk and tail (folded) R-hats as in ``arviz.rhat(method="rank")``:
    ``nan`` with fewer than 2 chains or 4 draws; an entry constant over draws is ``nan``
    (``0 / 0``, without a warning). Returns a float64 array of shape ``shape``.
    """
    return rank_rhat_and_ess_bulk(draws, ess=False)[0]


def ess_bulk(draws: np.ndarray) -> np.ndarray:
    """Bulk effective sample size of every entry of ``draws`` ``[chain, draw, *shape]``.

    As ``arviz.ess(method="bulk")``: ``nan`` with fewer than 4 draws (one chain is fine); an
    entry constant over draws gets the number of split draws (``chain * 2 * (draw // 2)``).
    Returns a float64 array of shape ``shape``.
    """
    return rank_rhat_and_ess_bulk(draws, rhat=False)[1]


def rank_rhat_and_ess_bulk(
    draws: np.ndarray, rhat: bool = True, ess: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(rank_rhat(draws), ess_bulk(draws))`` in one pass (the bulk z-scores are shared).

    A diagnostic not asked for (``rhat=False`` or ``ess=False``) is returned as ``nan``.
    """
    array = np.asarray(draws)
    if array.ndim < 2:
        raise ValueError(f"draws must be [chain, draw, ...], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    num_chains, num_draws = array.shape[:2]
    shape = array.shape[2:]
    array = array.reshape(num_chains, num_draws, math.prod(shape))
    rhat = rhat and num_chains >= MIN_CHAINS_RHAT and num_draws >= MIN_DRAWS
    ess = ess and num_chains >= 1 and num_draws >= MIN_DRAWS
    rhat_out = np.full(array.shape[2], np.nan)
    ess_out = np.full(array.shape[2], np.nan)
    if rhat or ess:
        step = max(1, min(BLOCK_ENTRIES, BLOCK_VALUES // (num_chains * num_draws)))
        for start in range(0, array.shape[2], step):
            block = np.moveaxis(array[:, :, start : start + step], 2, 0)
            split = _split_chains(block)
            index, ordered, z_sorted = _sorted_z(split.reshape(split.shape[0], -1))
            z = _scatter(index, z_sorted, split.shape)
            valid = ~np.isnan(ordered[:, -1])  # ArviZ: nan for an entry holding a nan
            if rhat:
                rhat_out[start : start + step] = np.where(
                    valid, _rhat_rank(z, index, ordered), np.nan
                )
            if ess:
                ess_out[start : start + step] = np.where(valid, _ess(z), np.nan)
    return rhat_out.reshape(shape), ess_out.reshape(shape)


def _split_chains(block: np.ndarray) -> np.ndarray:
    """``[entry, chain, draw] -> [entry, 2 chain, draw // 2]``: first halves, then last halves.

    Same order as ArviZ's ``_split_chains`` (``vstack`` of ``ary[:, :half]`` and
    ``ary[:, -half:]``); a contiguous copy.
    """
    half = block.shape[2] // 2
    return np.concatenate([block[:, :, :half], block[:, :, block.shape[2] - half :]], axis=1)


def _sorted_z(flat: np.ndarray, kind: str | None = None) -> tuple[np.ndarray, ...]:
    """Rank-normalise each row of ``flat`` ``[entry, size]`` (ArviZ's ``_z_scale``).

    Returns ``index`` (flat positions into ``flat`` of each row's values in ascending order),
    the sorted values and their z-scores, all ``[entry, size]``. Ties get the average rank as
    ``scipy.stats.rankdata(method="average")`` (half-integers, so exact whatever the sorting
    algorithm ``kind``), back-transformed with ``(r - 3/8) / (size - 3/4 + 1)`` and
    ``norm.ppf`` (``special.ndtri``, which ``norm.ppf`` calls).
    """
    size = flat.shape[1]
    index = np.argsort(flat, axis=1, kind=kind)
    index += np.arange(0, flat.size, size)[:, None]
    ordered = np.take(flat, index)
    scale = size - 2 * _BLOM_OFFSET + 1
    z_sorted = np.empty(flat.shape)
    z_sorted[:] = special.ndtri(((np.arange(size) + 1.0) - _BLOM_OFFSET) / scale)
    # Ties: runs of equal neighbours (row, p) ~ (row, p + 1) in the sorted values; a run of
    # pairs p0 .. p1 is one group at positions p0 .. p1 + 1 sharing the rank (p0 + p1 + 1) / 2 + 1.
    row, pos = np.nonzero(ordered[:, 1:] == ordered[:, :-1])
    if row.size:
        starts = np.ones(row.size, dtype=bool)
        starts[1:] = (row[1:] != row[:-1]) | (pos[1:] != pos[:-1] + 1)
        ends = np.ones_like(starts)
        ends[:-1] = starts[1:]
        rank = (pos[starts] + (pos[ends] + 1)) / 2 + 1.0
        tied_z = special.ndtri((rank - _BLOM_OFFSET) / scale)[np.cumsum(starts) - 1]
        z_sorted[row, pos] = tied_z
        z_sorted[row, pos + 1] = tied_z
    return index, ordered, z_sorted


def _scatter(index: np.ndarray, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Array of ``shape`` holding ``values`` at the flat positions ``index``."""
    out = np.empty(shape)
    out.ravel()[index.ravel()] = values.ravel()
    return out


def _rhat_classic(z: np.ndarray) -> np.ndarray:
    """ArviZ's ``_rhat`` of ``z`` ``[entry, chain, draw]`` (float64), per entry."""
    num_samples = z.shape[2]
    chain_mean = np.mean(z, axis=2)
    chain_var = np.var(z, axis=2, ddof=1)
    between_chain_variance = num_samples * np.var(chain_mean, axis=1, ddof=1)
    within_chain_variance = np.mean(chain_var, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant entries: 0 / 0 -> nan
        return np.sqrt(
            (between_chain_variance / within_chain_variance + num_samples - 1) / num_samples
        )


def _rhat_rank(z: np.ndarray, index: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """ArviZ's ``_rhat_rank`` per entry from the bulk z-scores ``z`` of the split draws
    ``[entry, chain, draw]`` and their sorted values (``index``, ``ordered``, from
    :func:`_sorted_z`)."""
    rhat_bulk = _rhat_classic(z)
    # Tail: z-scores of |x - median(x)| over the split draws of each entry. The median of the
    # (even) count is np.median's mean of the two middle sorted values. The folded values
    # are taken in sorted order with the lower half reversed: two ascending runs, which the
    # stable sort (timsort) merges in linear time; ranks do not depend on that order.
    size = ordered.shape[1]
    half = size // 2
    median = np.mean(ordered[:, (size - 1) // 2 : half + 1], axis=1)
    folded = np.abs(ordered - median[:, None])
    runs = np.concatenate([folded[:, half - 1 :: -1], folded[:, half:]], axis=1)
    positions = np.concatenate([index[:, half - 1 :: -1], index[:, half:]], axis=1)
    fold_index, _, fold_z = _sorted_z(runs, kind="stable")
    rhat_tail = _rhat_classic(_scatter(np.take(positions, fold_index), fold_z, z.shape))
    # Python's max(rhat_bulk, rhat_tail): the tail only when it is strictly larger
    # (so a nan bulk stays nan and a nan tail gives the bulk).
    return np.where(rhat_tail > rhat_bulk, rhat_tail, rhat_bulk)


def _autocov(z: np.ndarray) -> np.ndarray:
    """ArviZ's ``autocov`` along the last axis (FFT, zero-padded to a 5-smooth length)."""
    n = z.shape[-1]
    m = scipy.fft.next_fast_len(2 * n, real=True)  # == scipy.fftpack.next_fast_len(2 * n)
    centred = z - z.mean(axis=-1, keepdims=True)
    spectrum = np.fft.rfft(centred, n=m, axis=-1)
    spectrum *= np.conjugate(spectrum)
    cov = np.fft.irfft(spectrum, n=m, axis=-1)[..., :n]
    cov /= n
    return cov


def _ess(z: np.ndarray) -> np.ndarray:
    """ArviZ's ``_ess`` per entry of the z-scaled split chains ``z`` ``[entry, chain, draw]``."""
    num_entries, n_chain, n_draw = z.shape
    flat = z.reshape(num_entries, -1)
    constant = (flat.max(axis=1) - flat.min(axis=1)) < np.finfo(float).resolution

    acov = _autocov(z)
    chain_mean = z.mean(axis=2)
    # Mean over chains per lag with the chains on the last (contiguous) axis, as ArviZ's
    # ``np.mean(acov[:, t])`` reduces a 1-D array (same summation order).
    mean_acov = np.ascontiguousarray(acov.transpose(0, 2, 1)).mean(axis=2)
    mean_var = mean_acov[:, 0] * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += np.var(chain_mean, axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]

    rho_hat_t = np.zeros((num_entries, n_draw))
    rho_hat_even = np.ones(num_entries)
    rho_hat_t[:, 0] = rho_hat_even
    rho_hat_odd = rho[:, 1].copy()
    rho_hat_t[:, 1] = rho_hat_odd

    # Geyer's initial positive sequence: ArviZ's while loop run for all entries in lockstep,
    # an entry leaving it (its own ``t`` frozen) once its last pair sum is not positive.
    t = np.ones(num_entries, dtype=np.intp)
    active = np.ones(num_entries, dtype=bool)
    lag = 1
    while lag < n_draw - 3:
        active &= (rho_hat_even + rho_hat_odd) > 0.0
        if not active.any():
            break
        rho_hat_even = np.where(active, rho[:, lag + 1], rho_hat_even)
        rho_hat_odd = np.where(active, rho[:, lag + 2], rho_hat_odd)
        keep = active & ((rho_hat_even + rho_hat_odd) >= 0)
        rho_hat_t[keep, lag + 1] = rho_hat_even[keep]
        rho_hat_t[keep, lag + 2] = rho_hat_odd[keep]
        t[active] += 2
        lag += 2

    max_t = t - 2
    rows = np.arange(num_entries)
    # improve estimation
    improve = rho_hat_even > 0
    rho_hat_t[rows[improve], max_t[improve] + 1] = rho_hat_even[improve]

    # Geyer's initial monotone sequence, per entry while t <= max_t - 2.
    lag = 1
    last = int(max_t.max()) - 2 if num_entries else -1
    while lag <= last:
        later = rho_hat_t[:, lag + 1] + rho_hat_t[:, lag + 2]
        earlier = rho_hat_t[:, lag - 1] + rho_hat_t[:, lag]
        fix = (lag <= max_t - 2) & (later > earlier)
        rho_hat_t[fix, lag + 1] = earlier[fix] / 2.0
        rho_hat_t[fix, lag + 2] = rho_hat_t[fix, lag + 1]
        lag += 2

    ess = n_chain * n_draw
    # np.sum(rho_hat_t[: max_t + 1]) per entry, summed over exactly that prefix (as ArviZ) so
    # the pairwise summation order matches; entries are grouped by their max_t.
    head = np.empty(num_entries)
    for value in np.unique(max_t):
        group = max_t == value
        head[group] = rho_hat_t[group, : value + 1].sum(axis=1)
    tau_hat = -1.0 + 2.0 * head + rho_hat_t[rows, max_t + 1]
    floor = 1 / np.log10(ess)
    tau_hat = np.where(floor > tau_hat, floor, tau_hat)  # Python's max(tau_hat, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = ess / tau_hat
    result[np.isnan(rho_hat_t).any(axis=1)] = np.nan
    result[constant] = flat.shape[1]
    return result
