"""Figures of the uncertainty outputs (SPEC §5): calibration, ranking, robustness, intervals,
label-set coverage, chain diagnostics.

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: nothing is
shown, nothing is registered with a GUI backend, and the figure is freed with its last
reference. Save with ``fig.savefig(path)`` (the Agg canvas renders PNG); in Jupyter a
returned figure displays as usual. Inputs follow :mod:`pyro_bkd.uq` (``probs``
``[chain, draw, N, K]``, labels ``y`` ``[N]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyro_bkd import export, metrics, uq
from pyro_bkd._checks import InputError


def reliability_diagram(
    probs: Any, y: Any, num_bins: int = metrics.NUM_BINS, title: str = "Reliability diagram"
) -> Figure:
    """Accuracy against confidence of the posterior-mean prediction in equal-width bins.

    Top: per-bin accuracy (bars), the gap to the bin's mean confidence (hatched), the diagonal
    of perfect calibration; the ECE is in the title. Bottom: number of inputs per bin.
    """
    bins = metrics.reliability_bins(probs, y, num_bins)
    ece = metrics.expected_calibration_error(probs, y, num_bins)
    figure = Figure(figsize=(5.5, 6.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = np.diff(bins.edges)
    filled = bins.count > 0
    accuracy = np.where(filled, bins.accuracy, 0.0)
    confidence = np.where(filled, bins.confidence, 0.0)
    top.bar(centres, accuracy, width, color="tab:blue", edgecolor="black", label="accuracy")
    top.bar(
        centres[filled],
        (confidence - accuracy)[filled],
        width[filled],
        bottom=accuracy[filled],
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title} (ECE = {ece:.3f})")
    top.legend(loc="upper left")
    bottom.bar(centres, bins.count, width, color="tab:gray", edgecolor="black")
    bottom.set(xlabel="confidence (max posterior-mean probability)", ylabel="inputs")
    return figure


def ranking_curves(
    probs_by_method: Mapping[str, Any],
    y: Any,
    fractions: Any = None,
    title: str = "Accuracy of the most certain inputs (ranked by mean deviance)",
) -> Figure:
    """Accuracy of the retained fraction of inputs ranked by ``MD``, one line per method.

    ``probs_by_method`` maps a method name to its draws (``[1, 1, N, K]`` for a point
    estimate); see :func:`pyro_bkd.uq.ranking_curve`. A useful uncertainty score gives a line
    falling from left to right.
    """
    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    axes = figure.subplots()
    for name, probs in probs_by_method.items():
        curve = uq.ranking_curve(probs, y, fractions)
        axes.plot(curve.fraction, curve.accuracy, marker="o", label=name)
    axes.set(xlabel="fraction of test inputs retained (lowest MD first)", ylabel="accuracy")
    axes.set_title(title)
    _legend_and_grid(axes)
    return figure


def deviance_vs_noise(
    noise_levels: Any,
    deviance_by_method: Mapping[str, Any],
    xlabel: str = "input noise level",
    title: str = "Mean deviance under input noise",
) -> Figure:
    """Mean deviance against the input-noise level, one line per method.

    Each value of ``deviance_by_method`` is either ``[L]`` (mean ``MD`` at each of the ``L``
    noise levels) or ``[L, N]`` (``MD`` per test input; the line is the mean and the band the
    interquartile range). Under growing noise ``MD`` should rise (SPEC §5).
    """
    levels = np.asarray(noise_levels, dtype=np.float64)
    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    axes = figure.subplots()
    for name, values in deviance_by_method.items():
        deviance = np.asarray(values, dtype=np.float64)
        if deviance.ndim not in (1, 2) or deviance.shape[0] != levels.size:
            raise ValueError(
                f"deviance_by_method[{name!r}] must have shape ({levels.size},) or "
                f"({levels.size}, N) to match noise_levels, got {deviance.shape}"
            )
        if deviance.ndim == 1:
            axes.plot(levels, deviance, marker="o", label=name)
            continue
        (line,) = axes.plot(levels, deviance.mean(axis=1), marker="o", label=name)
        low, high = np.percentile(deviance, [25, 75], axis=1)
        axes.fill_between(levels, low, high, color=line.get_color(), alpha=0.2)
    axes.set(xlabel=xlabel, ylabel="mean deviance MD (band: interquartile range)")
    axes.set_title(title)
    _legend_and_grid(axes)
    return figure


def interval_forest(
    probs: Any,
    obs: Sequence[int],
    *,
    y: Any = None,
    p_true: Any = None,
    level: float = 0.95,
    kind: str = "hdi",
    class_names: Sequence[Any] | None = None,
) -> Figure:
    """Credible intervals of every class probability ``q_k(x_n)`` for chosen test inputs.

    One panel per input index in ``obs``: a row per class with the posterior mean (dot) and
    the ``level`` interval (``kind`` ``"hdi"`` or ``"eti"``); the true label's row is shaded
    when ``y`` is given and ``p*_k(x_n)`` is marked when ``p_true`` is given. Classes are
    labelled by ``class_names``, else by the ``class`` coordinate of ``probs``, else ``0..K-1``.
    """
    builders = {"hdi": uq.hdi, "eti": uq.equal_tailed_interval}
    if kind not in builders:
        raise ValueError(f"kind must be 'hdi' or 'eti', got {kind!r}")
    array = uq.as_probs(probs)
    num_obs, num_classes = array.shape[2:]
    chosen = [int(n) for n in obs]
    if not chosen or any(not 0 <= n < num_obs for n in chosen):
        raise ValueError(f"obs must be a non-empty list of indices in [0, {num_obs}), got {obs}")
    labels = None if y is None else uq.as_labels(y, num_obs, num_classes)
    truth = None if p_true is None else uq.as_class_probs(p_true, num_obs, num_classes)
    subset = array[:, :, chosen]
    mean, bounds = uq.posterior_mean(subset), builders[kind](subset, level)
    names = (
        export.class_labels(probs, num_classes)
        if class_names is None
        else [str(name) for name in class_names]
    )
    figure = Figure(
        figsize=(3.2 * len(chosen) + 0.8, 0.35 * num_classes + 1.8), layout="constrained"
    )
    panels = figure.subplots(1, len(chosen), sharey=True, squeeze=False)[0]
    rows = np.arange(num_classes)
    for column, (axes, n) in enumerate(zip(panels, chosen, strict=True)):
        if labels is not None:
            axes.axhspan(labels[n] - 0.45, labels[n] + 0.45, color="tab:green", alpha=0.2)
            axes.plot([], [], "s", color="tab:green", alpha=0.4, label="true label")
        axes.hlines(rows, bounds.lower[column], bounds.upper[column], color="tab:blue", lw=2)
        axes.plot(mean[column], rows, "o", color="tab:blue", label=f"mean, {level:.0%} {kind}")
        if truth is not None:
            axes.plot(truth[n], rows, "x", color="tab:red", ms=8, label="true probability p*")
        axes.set(xlim=(-0.02, 1.02), xlabel="class probability", title=f"test input {n}")
        axes.grid(axis="x", alpha=0.3)
    panels[0].set(yticks=rows, yticklabels=names, ylabel="class")
    panels[0].invert_yaxis()
    panels[-1].legend(loc="lower right", fontsize="small")
    return figure


def trace_plot(probs: Any, pairs: Sequence[tuple[int, int]]) -> Figure:
    """ArviZ trace plot (density and trace per chain) of ``q_k(x_n)`` for ``(n, k) in pairs``."""
    import arviz as az

    dataset = export.select_pairs(probs, pairs)
    figure = Figure(figsize=(10.0, 2.0 * len(pairs) + 0.5), layout="constrained")
    axes = figure.subplots(len(pairs), 2, squeeze=False)
    az.plot_trace(dataset, var_names=["probs"], compact=False, axes=axes, legend=True)
    for left, right in axes:
        left.set_xlabel("class probability")
        right.set_xlabel("draw")
    figure.suptitle("Trace of class probabilities q_k(x_n) per chain")
    return figure


def rank_plot(probs: Any, pairs: Sequence[tuple[int, int]]) -> Figure:
    """ArviZ rank plot of ``q_k(x_n)`` for ``(n, k)`` in ``pairs``: for well-mixed chains every
    chain's rank histogram is flat (Vehtari et al. 2021)."""
    import arviz as az

    dataset = export.select_pairs(probs, pairs)
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure = Figure(figsize=(4.0 * columns, 3.0 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[len(pairs) :]:
        extra.set_visible(False)
    az.plot_rank(dataset, var_names=["probs"], ax=axes[: len(pairs)])
    figure.suptitle("Rank plots of class probabilities q_k(x_n) (flat = well mixed)")
    return figure


def coverage_vs_size(
    rows_by_method: Mapping[str, Sequence[metrics.LabelSetCoverage]],
    level: float | None = None,
    title: str = "Coverage of the credible label sets against test-set size",
) -> Figure:
    """Label-set coverage against the number of test inputs, one line per method (the BKD
    paper's protocol; rows from :func:`pyro_bkd.metrics.coverage_by_size`).

    Each point is the coverage ``c`` on ``m`` inputs with a bar of ``+- 1.96 sqrt(c (1 - c) /
    m)`` (a 95% normal interval of the binomial share); the dashed line is the nominal
    ``level`` (default: the rows' level). The x axis is logarithmic.

    Raises:
        InputError: no methods, a method without rows, or rows of different levels.
    """
    if not rows_by_method or any(len(rows) == 0 for rows in rows_by_method.values()):
        raise InputError("rows_by_method must map each method to a non-empty list of rows")
    levels = {row.level for rows in rows_by_method.values() for row in rows}
    if len(levels) != 1:
        raise InputError(f"rows_by_method must hold one level, got {sorted(levels)}")
    nominal = levels.pop() if level is None else level
    figure = Figure(figsize=(9.0, 4.8), layout="constrained")
    axes = figure.subplots()
    for offset, (name, rows) in enumerate(rows_by_method.items()):
        sizes = np.array([row.num_obs for row in rows], dtype=np.float64)
        jitter = sizes * (1.0 + 0.015 * (offset - (len(rows_by_method) - 1) / 2))
        coverage = np.array([row.coverage for row in rows])
        error = 1.96 * np.array([row.se for row in rows])
        axes.errorbar(jitter, coverage, yerr=error, marker="o", capsize=3, label=name)
    axes.axhline(nominal, color="black", linestyle="--", label=f"nominal {nominal:.0%}")
    axes.set_xscale("log")
    axes.set(xlabel="test inputs m (nested random subsets)", ylabel="label-set coverage")
    axes.set_title(title)
    _legend_outside(axes)
    return figure


def coverage_vs_strength(
    strengths: Any,
    coverage_by_series: Mapping[str, Any],
    nominal: float | None = None,
    xlabel: str = "teacher strength lam",
    ylabel: str = "coverage",
    title: str = "Coverage against teacher strength",
) -> Figure:
    """Coverage (or any share) against a tuning parameter, one line per series.

    ``coverage_by_series`` maps a series name (e.g. ``"linear-binary p* intervals"``) to
    ``[L]`` values at the ``L`` ``strengths`` (``nan`` where missing), or to a pair
    ``(values [L], standard errors [L])`` drawn as ``+- 1.96 se`` bars. The dashed line is the
    ``nominal`` level. A zero strength is drawn on a symmetric-log axis.

    Raises:
        InputError: a series whose length differs from ``strengths``.
    """
    grid = np.asarray(strengths, dtype=np.float64)
    figure = Figure(figsize=(9.5, 5.0), layout="constrained")
    axes = figure.subplots()
    for name, series in coverage_by_series.items():
        values, errors = (series, None) if not isinstance(series, tuple) else series
        values = np.asarray(values, dtype=np.float64)
        if values.shape != grid.shape:
            raise InputError(
                f"coverage_by_series[{name!r}] must have shape {grid.shape} to match "
                f"strengths, got {values.shape}"
            )
        yerr = None if errors is None else 1.96 * np.asarray(errors, dtype=np.float64)
        axes.errorbar(grid, values, yerr=yerr, marker="o", capsize=3, label=name)
    if nominal is not None:
        axes.axhline(nominal, color="black", linestyle="--", label=f"nominal {nominal:.0%}")
    if (grid > 0).all() and grid.max() / grid.min() > 20:
        axes.set_xscale("log")
    elif grid.max() > 20 * max(grid[grid > 0].min(initial=grid.max()), 1e-12):
        axes.set_xscale("symlog", linthresh=max(grid[grid > 0].min(initial=1.0), 1e-12))
        if grid.min() >= 0:  # no empty negative half
            axes.set_xlim(left=0.0, right=grid.max() * 1.3)
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.set_title(title)
    _legend_outside(axes)
    return figure


def _legend_outside(axes: Axes) -> None:
    """Grid, and the legend to the right of the axes (many series would hide the lines)."""
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))


def _legend_and_grid(axes: Axes) -> None:
    axes.grid(alpha=0.3)
    axes.legend()
