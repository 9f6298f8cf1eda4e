"""Export of BKD results to ``arviz.InferenceData`` and netCDF (DESIGN.md, Outputs).

One converter method per group, assembled by :func:`to_inference_data`, in the manner of ArviZ's
``io_pyro``; a missing input gives no group, never an error.

Groups (dims in brackets):

- ``posterior``: ``probs`` ``[chain, draw, obs, class]``, the class probabilities
  ``q^(s)(x_n)`` at the test inputs, plus the weight draws when given (one variable per
  ``named_parameters()`` name, dims ``chain, draw, <name>_dim_0, ...``). ``probs`` is a
  deterministic function of the weights (a Pyro ``deterministic`` site, which ``az.from_pyro``
  also places in ``posterior``); it is stored here because ``az.summary``, ``az.rhat``,
  ``az.ess``, ``az.plot_forest`` and ``az.plot_trace`` read the ``posterior`` group, and it is
  usually the only posterior quantity kept (weights of big students are not stored). Use
  ``var_names=["probs"]`` when weights are present: diagnostics of every weight are slow.
- ``posterior_predictive``: the same ``probs`` (the canonical place of DESIGN.md; in memory
  both groups share one array, on disk it is stored twice, compressed).
- ``sample_stats``: per-step diagnostics such as ``lp``, ``step_size``, ``grad_norm``
  ``[chain, draw]``.
- ``observed_data``: ``y`` ``[obs]``.
- ``constant_data``: ``teacher_probs`` and ``p_true`` ``[obs, class]``.
- ``log_likelihood``: ``y`` ``[chain, draw, obs]`` ``= log q^(s)_{y_n}(x_n)``. This is the
  predictive log density of the *test* labels, not of the training data the posterior was
  fitted to. The held-out ELPD is then exact, ``sum_n log mean_s q^(s)_{y_n}(x_n)`` (what
  ``pyro-bkd compare`` reports, with paired standard errors). ``az.compare``/``az.loo`` run
  on it, but PSIS-LOO reweights the draws by ``1/q^(s)_{y_n}`` as if ``y_n`` had been in the
  fit, which understates the held-out ELPD (a harmonic mean, not an arithmetic one), most for
  methods whose draws spread: read their ranking with the Pareto-k warnings in mind.

Coordinates: ``chain`` and ``draw`` count from 0, ``obs`` is the test-input index,
``class`` the class labels (``0..K-1`` or ``class_names``). Attributes (on every group and on the
``InferenceData``): ``created_at``, ``inference_library`` (``pyro_bkd``),
``inference_library_version``, ``arviz_version`` and the caller's ``attrs`` (method,
hyper-parameters, seed, ...). netCDF attributes hold only strings and numbers, so other values
(``None``, booleans, dicts, lists) are stored as JSON strings; decode with ``json.loads``.

Parameter names such as ``"0.weight"`` (leading digit, dots) are kept verbatim: both netCDF
engines (h5netcdf, netCDF4) store them unchanged (verified by the tests); ``/`` is refused.

Only :func:`_assemble` and :func:`load` touch ``InferenceData``; the groups are plain
``xarray.Dataset`` objects, ready for ArviZ 1.x (``xarray.DataTree``).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from pyro_bkd import _atomic, uq

if TYPE_CHECKING:  # ArviZ is imported on use: it adds about 1 s to ``import pyro_bkd``
    import arviz as az

SAMPLE_DIMS = ("chain", "draw")
PROBS_DIMS = ("chain", "draw", "obs", "class")
_RESERVED = frozenset({"probs", *PROBS_DIMS})


class BKDConverter:
    """Checks the inputs once and turns each of them into one ``InferenceData`` group."""

    def __init__(
        self,
        probs: Any,
        *,
        y: Any = None,
        teacher_probs: Any = None,
        p_true: Any = None,
        sample_stats: Mapping[str, Any] | None = None,
        posterior: Mapping[str, Any] | None = None,
        log_likelihood: bool | None = None,
        class_names: Sequence[Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.probs = uq.as_probs(probs)
        num_chains, num_draws, num_obs, num_classes = self.probs.shape
        self.y = None if y is None else uq.as_labels(y, num_obs, num_classes)
        self.teacher_probs = _optional_class_probs(teacher_probs, "teacher_probs", self.probs)
        self.p_true = _optional_class_probs(p_true, "p_true", self.probs)
        self.sample_stats = _sample_arrays(sample_stats, "sample_stats", self.probs, finite=False)
        self.posterior = _sample_arrays(posterior, "posterior", self.probs, finite=True)
        self.log_likelihood = log_likelihood is not False
        self.coords = {
            "chain": np.arange(num_chains),
            "draw": np.arange(num_draws),
            "obs": np.arange(num_obs),
            "class": _class_coord(class_names, num_classes),
        }
        self.attrs = make_attrs(attrs)

    def posterior_to_xarray(self) -> xr.Dataset:
        """``probs`` and the weight draws (see the module docstring for why ``probs``)."""
        variables = {"probs": (PROBS_DIMS, self.probs), **_with_default_dims(self.posterior)}
        return self._dataset(variables)

    def posterior_predictive_to_xarray(self) -> xr.Dataset:
        """``probs`` ``[chain, draw, obs, class]``."""
        return self._dataset({"probs": (PROBS_DIMS, self.probs)})

    def sample_stats_to_xarray(self) -> xr.Dataset | None:
        """Per-step sampler diagnostics, ``None`` when none were given."""
        if not self.sample_stats:
            return None
        return self._dataset(_with_default_dims(self.sample_stats))

    def observed_data_to_xarray(self) -> xr.Dataset | None:
        """Test labels ``y`` ``[obs]``, ``None`` without labels."""
        if self.y is None:
            return None
        return self._dataset({"y": (("obs",), self.y)})

    def constant_data_to_xarray(self) -> xr.Dataset | None:
        """``teacher_probs`` and ``p_true`` ``[obs, class]``, ``None`` when neither is given."""
        named = {"teacher_probs": self.teacher_probs, "p_true": self.p_true}
        variables = {name: (("obs", "class"), v) for name, v in named.items() if v is not None}
        return self._dataset(variables) if variables else None

    def log_likelihood_to_xarray(self) -> xr.Dataset | None:
        """``y``: ``log q^(s)_{y_n}(x_n)`` ``[chain, draw, obs]`` in float64.

        Probabilities are clamped at the smallest normal float64 first, so the log density is
        finite (``>= -708``) and ``az.loo`` accepts it. ``None`` without labels or when disabled.
        """
        if self.y is None or not self.log_likelihood:
            return None
        picked = np.take_along_axis(self.probs, self.y[None, None, :, None], axis=-1)[..., 0]
        log_density = np.log(np.maximum(picked.astype(np.float64), np.finfo(np.float64).tiny))
        return self._dataset({"y": (("chain", "draw", "obs"), log_density)})

    def groups(self) -> dict[str, xr.Dataset]:
        """Every group that has data, by ArviZ group name."""
        built = {
            "posterior": self.posterior_to_xarray(),
            "posterior_predictive": self.posterior_predictive_to_xarray(),
            "sample_stats": self.sample_stats_to_xarray(),
            "observed_data": self.observed_data_to_xarray(),
            "constant_data": self.constant_data_to_xarray(),
            "log_likelihood": self.log_likelihood_to_xarray(),
        }
        return {name: dataset for name, dataset in built.items() if dataset is not None}

    def to_inference_data(self) -> az.InferenceData:
        """All groups in one ``InferenceData``."""
        return _assemble(self.groups(), self.attrs)

    def _dataset(self, variables: Mapping[str, tuple[tuple[str, ...], np.ndarray]]) -> xr.Dataset:
        used = {dim for dims, _ in variables.values() for dim in dims}
        coords = {dim: values for dim, values in self.coords.items() if dim in used}
        return xr.Dataset(dict(variables), coords=coords, attrs=dict(self.attrs))


def to_inference_data(
    probs: Any,
    *,
    y: Any = None,
    teacher_probs: Any = None,
    p_true: Any = None,
    sample_stats: Mapping[str, Any] | None = None,
    posterior: Mapping[str, Any] | None = None,
    log_likelihood: bool | None = None,
    class_names: Sequence[Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """Collect the outputs of one BKD run in an ``InferenceData`` (groups: module docstring).

    Args:
        probs: draws ``q^(s)(x_n)``, ``[chain, draw, N, K]``, rows summing to 1.
        y: test labels ``[N]``.
        teacher_probs: teacher probabilities at the test inputs, ``[N, K]``.
        p_true: true class probabilities ``p*`` ``[N, K]`` (synthetic data).
        sample_stats: per-step diagnostics ``name -> [chain, draw]`` (``lp``, ``step_size``,
            ``grad_norm``, ...); non-finite values are kept (they document a failing run).
        posterior: weight draws ``name -> [chain, draw, *param_shape]``, names as
            ``named_parameters()``; must be finite.
        log_likelihood: ``False`` leaves out the ``log_likelihood`` group; ``None`` or ``True``
            adds it when ``y`` is given.
        class_names: ``K`` distinct labels for the ``class`` coordinate (default ``0..K-1``).
        attrs: run metadata (method, hyper-parameters, seed, ...); see :func:`make_attrs`.

    Raises:
        ValueError: a malformed ``probs`` (see :func:`pyro_bkd.uq.as_probs`), an input whose
            ``chain``/``draw``/``N``/``K`` sizes disagree with ``probs``, non-finite weights, a
            variable name containing ``/`` or clashing with ``probs``/the dimension names.
    """
    return BKDConverter(
        probs,
        y=y,
        teacher_probs=teacher_probs,
        p_true=p_true,
        sample_stats=sample_stats,
        posterior=posterior,
        log_likelihood=log_likelihood,
        class_names=class_names,
        attrs=attrs,
    ).to_inference_data()


def posterior_weights(idata: Any) -> dict[str, np.ndarray]:
    """The weight draws of ``idata``'s ``posterior`` group (every variable but ``probs``)."""
    return {
        str(name): value.to_numpy()
        for name, value in idata.posterior.data_vars.items()
        if name != "probs"
    }


def select_pairs(probs: Any, pairs: Sequence[tuple[int, int]]) -> xr.Dataset:
    """``probs`` at chosen ``(obs, class)`` index pairs: a dataset with ``probs``
    ``[chain, draw, pair]`` whose ``pair`` coordinate reads ``"obs=n, class=k"`` (``k`` the
    class label when ``probs`` carries a ``class`` coordinate), so ArviZ plots and summaries
    label each entry by it."""
    selected = uq.as_probs(probs)
    num_obs, num_classes = selected.shape[2:]
    chosen = [(int(n), int(k)) for n, k in pairs]
    if not chosen or any(not (0 <= n < num_obs and 0 <= k < num_classes) for n, k in chosen):
        raise ValueError(
            f"pairs must be a non-empty list of (obs, class) indices with obs in [0, {num_obs}) "
            f"and class in [0, {num_classes}), got {pairs}"
        )
    names = class_labels(probs, num_classes)
    obs_index, class_index = (np.array(column) for column in zip(*chosen, strict=True))
    labels = [f"obs={n}, class={names[k]}" for n, k in chosen]
    values = selected[:, :, obs_index, class_index]
    return xr.Dataset({"probs": (("chain", "draw", "pair"), values)}, coords={"pair": labels})


def class_labels(probs: Any, num_classes: int) -> list[str]:
    """Labels of the ``class`` coordinate of ``probs`` (or its dataset), else ``0..K-1``."""
    if hasattr(probs, "posterior_predictive"):
        probs = probs.posterior_predictive
    coords = getattr(probs, "coords", {})
    if "class" in coords:
        return [str(name) for name in coords["class"].to_numpy()]
    return [str(k) for k in range(num_classes)]


def make_attrs(attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run attributes made netCDF-safe, after the defaults ``created_at`` (UTC, ISO 8601),
    ``inference_library``, ``inference_library_version`` and ``arviz_version``.

    Strings, ints and floats (numpy scalars included) are kept; every other value (``None``,
    ``bool``, dicts, lists, ...) becomes its JSON text (``json.dumps``, sorted keys, ``str`` for
    objects JSON cannot encode). Caller keys override the defaults.
    """
    import arviz as az

    from pyro_bkd import __version__

    defaults = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "pyro_bkd",
        "inference_library_version": __version__,
        "arviz_version": az.__version__,
    }
    for key in attrs or {}:
        if not isinstance(key, str) or not key:
            raise ValueError(f"attrs keys must be non-empty strings, got {key!r}")
    return defaults | {key: _netcdf_attr(value) for key, value in (attrs or {}).items()}


def save(idata: az.InferenceData, path: str | os.PathLike[str]) -> Path:
    """Write ``idata`` to netCDF (h5netcdf, compressed) atomically; returns ``Path(path)``.

    The file is written under a temporary name in the same directory and renamed over ``path``
    only when complete, so a failure never leaves a partial file at ``path``.
    """
    with _atomic.atomic_path(path) as temporary:
        idata.to_netcdf(os.fspath(temporary))
    return Path(path)


def load(path: str | os.PathLike[str]) -> az.InferenceData:
    """Read an ``InferenceData`` written by :func:`save`, fully into memory (file closed)."""
    import arviz as az

    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(os.fspath(path))


def _assemble(groups: Mapping[str, xr.Dataset], attrs: Mapping[str, Any]) -> az.InferenceData:
    import arviz as az

    return az.InferenceData(attrs=dict(attrs), **groups)


def _netcdf_attr(value: Any) -> str | int | float:
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _optional_class_probs(value: Any, name: str, probs: np.ndarray) -> np.ndarray | None:
    return None if value is None else uq.as_class_probs(value, *probs.shape[2:], name=name)


def _sample_arrays(
    arrays: Mapping[str, Any] | None, group: str, probs: np.ndarray, *, finite: bool
) -> dict[str, np.ndarray]:
    """Check ``name -> [chain, draw, ...]`` arrays against ``probs``' chain and draw sizes."""
    checked = {}
    for name, value in (arrays or {}).items():
        _check_name(name, group)
        array = uq.to_numpy(value)
        if array.shape[:2] != probs.shape[:2]:
            raise ValueError(
                f"{group}[{name!r}] must have shape (chain, draw, ...) = {probs.shape[:2]} + ..."
                f" to match probs, got {tuple(array.shape)}"
            )
        if finite and not np.isfinite(array).all():
            raise ValueError(f"{group}[{name!r}] must be finite; the draws hold NaN or inf")
        checked[name] = array
    return checked


def _check_name(name: Any, group: str) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{group} names must be non-empty strings without '/', got {name!r}")
    if name in _RESERVED:
        raise ValueError(f"{group} name {name!r} clashes with a reserved name {sorted(_RESERVED)}")


def _with_default_dims(
    arrays: Mapping[str, np.ndarray],
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """ArviZ's default dims: ``chain, draw, <name>_dim_0, <name>_dim_1, ...``."""
    return {
        name: ((*SAMPLE_DIMS, *(f"{name}_dim_{i}" for i in range(array.ndim - 2))), array)
        for name, array in arrays.items()
    }


def _class_coord(class_names: Sequence[Any] | None, num_classes: int) -> np.ndarray:
    if class_names is None:
        return np.arange(num_classes)
    names = np.asarray([str(name) for name in class_names])
    if names.shape != (num_classes,) or len(set(names.tolist())) != num_classes:
        raise ValueError(
            f"class_names must hold {num_classes} distinct labels (K of probs), "
            f"got {list(class_names)!r}"
        )
    return names
