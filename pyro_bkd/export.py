"""Export of BKD results to ``arviz.InferenceData`` and netCDF (README.md, "Outputs").

The groups follow ArviZ's schema: what was fitted (the training labels) lives in
``observed_data``/``log_likelihood``/``posterior_predictive``; what is predicted at new inputs
lives in ``predictions``/``predictions_constant_data``. One converter method per group,
assembled by :func:`to_inference_data`, in the manner of ArviZ's ``io_pyro``; a missing input
gives no group, never an error.

Groups (dims in brackets):

- ``predictions``: ``probs`` ``[chain, draw, obs, label]``, the class probabilities
  ``q^(s)(x_n) = softmax(f(x_n; theta_s))`` at the test inputs ``x_n``. Select entries by
  keyword: ``idata.predictions["probs"].sel(obs=0, label=3)``; ArviZ functions read it with
  ``group="predictions"`` (``az.summary(idata, group="predictions")``, ``az.plot_trace``,
  ``az.plot_forest``, ``az.rhat``/``az.ess`` on ``idata.predictions``).
- ``predictions_constant_data``: ``obs_id`` ``[obs]`` (the test inputs' ids, ``0..N-1`` unless
  given), ``y_test`` ``[obs]`` (test labels), ``teacher_probs`` and ``p_true``
  ``[obs, label]``.
- ``posterior``: the weight draws when kept, one variable per ``named_parameters()`` name,
  dims ``chain, draw, <name>_dim_0, ...``. Pass ``var_names`` to ArviZ functions when the
  student is big: diagnostics of every weight are slow.
- ``sample_stats``: per-draw diagnostics such as ``lp``, ``step_size``, ``grad_norm``,
  ``accept_prob`` ``[chain, draw]``.
- ``log_likelihood``: ``y`` ``[chain, draw, train_obs]`` ``= log q^(s)_{y_i}(x_i)`` at the
  *training* inputs, only when given; ``az.loo``/``az.compare`` then mean what they mean
  elsewhere (PSIS-LOO of the fitted labels). It needs the weight draws (``az.loo`` reads the
  ``posterior`` group for the relative efficiency) and at least 2 draws (PSIS of a single draw
  fails inside ArviZ): a point estimate (``map``, ``kd``) has no LOO.
- ``posterior_predictive``: ``y`` ``[chain, draw, train_obs]``, replicated training labels
  ``y_i^rep ~ Categorical(q^(s)(x_i))``, and ``observed_data``: ``y`` ``[train_obs]``, for
  ``az.plot_ppc(idata)`` and ``az.plot_loo_pit(idata, y="y")``. :func:`fitted_labels` builds
  these three from the training probabilities.

The held-out ELPD ``sum_n log mean_s q^(s)_{y_n}(x_n)`` is exact on test labels, so it needs
no PSIS: :func:`pyro_bkd.metrics.elpd_test`.

Coordinates: ``chain``, ``draw``, ``obs`` and ``train_obs`` count from 0, ``label`` holds the
class labels (``0..K-1`` or ``class_names``). Attributes (on every group and on the
``InferenceData``): ``created_at``, ``inference_library`` (``pyro_bkd``),
``inference_library_version``, ``arviz_version`` and the caller's ``attrs`` (method,
hyper-parameters, seed, ...). netCDF attributes hold only strings and numbers, so other values
(``None``, booleans, dicts, lists) are stored as JSON strings; decode with ``json.loads``.

Parameter names such as ``"0.weight"`` (leading digit, dots) are kept verbatim: both netCDF
engines (h5netcdf, netCDF4) store them unchanged (verified by the tests); ``/`` is refused.

Files of the previous layout (``probs`` in ``posterior``/``posterior_predictive`` with dim
``class``, test labels in ``observed_data``) are converted by :func:`load`.

Only :func:`_assemble`, :func:`_groups` and :func:`load` touch the container: the groups are
plain ``xarray.Dataset`` objects, assembled into ``InferenceData`` (ArviZ 0.x) or an
``xarray.DataTree`` (ArviZ 1.x).
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

if TYPE_CHECKING:  # ArviZ, Pyro and torch are imported on use (ArviZ adds ~1 s to the import)
    import arviz as az
    import torch
    from pyro.infer import MCMC

SAMPLE_DIMS = ("chain", "draw")
CLASS_DIM = "label"
PROBS_DIMS = ("chain", "draw", "obs", CLASS_DIM)
TRAIN_DIM = "train_obs"
#: Largest ``chain * draw * N_train`` for which :func:`from_mcmc` adds the training-set groups
#: by default (float64 log-likelihood plus int64 replicated labels: 16 bytes per entry).
DEFAULT_FITTED_ENTRIES = 2_000_000
_LEGACY_CLASS_DIM = "class"
_RESERVED = frozenset({"probs", "y", *PROBS_DIMS, TRAIN_DIM})


class BKDConverter:
    """Checks the inputs once and turns each of them into one ``InferenceData`` group."""

    def __init__(
        self,
        probs: Any,
        *,
        y_test: Any = None,
        teacher_probs: Any = None,
        p_true: Any = None,
        obs_ids: Any = None,
        sample_stats: Mapping[str, Any] | None = None,
        posterior: Mapping[str, Any] | None = None,
        log_likelihood: Any = None,
        y_train: Any = None,
        y_train_draws: Any = None,
        class_names: Sequence[Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.probs = uq.as_probs(probs)
        num_chains, num_draws, num_obs, num_classes = self.probs.shape
        self.y_test = None if y_test is None else uq.as_labels(y_test, num_obs, num_classes)
        self.teacher_probs = _optional_class_probs(teacher_probs, "teacher_probs", self.probs)
        self.p_true = _optional_class_probs(p_true, "p_true", self.probs)
        self.obs_ids = _obs_ids(obs_ids, num_obs)
        self.sample_stats = _sample_arrays(sample_stats, "sample_stats", self.probs, finite=False)
        self.posterior = _sample_arrays(posterior, "posterior", self.probs, finite=True)
        self.log_likelihood, self.y_train, self.y_train_draws = _fitted_arrays(
            log_likelihood, y_train, y_train_draws, self.probs, bool(self.posterior)
        )
        num_train = _first_size(self.log_likelihood, self.y_train, self.y_train_draws)
        self.coords = {
            "chain": np.arange(num_chains),
            "draw": np.arange(num_draws),
            "obs": np.arange(num_obs),
            CLASS_DIM: _class_coord(class_names, num_classes),
            TRAIN_DIM: np.arange(num_train),
        }
        self.attrs = make_attrs(attrs)

    def predictions_to_xarray(self) -> xr.Dataset:
        """``probs`` ``[chain, draw, obs, label]``."""
        return self._dataset({"probs": (PROBS_DIMS, self.probs)})

    def predictions_constant_data_to_xarray(self) -> xr.Dataset:
        """``obs_id`` ``[obs]``, and ``y_test`` ``[obs]``, ``teacher_probs``, ``p_true``
        ``[obs, label]`` when given."""
        named = {
            "obs_id": (("obs",), self.obs_ids),
            "y_test": (("obs",), self.y_test),
            "teacher_probs": (("obs", CLASS_DIM), self.teacher_probs),
            "p_true": (("obs", CLASS_DIM), self.p_true),
        }
        return self._dataset({name: v for name, v in named.items() if v[1] is not None})

    def posterior_to_xarray(self) -> xr.Dataset | None:
        """The weight draws, ``None`` when none were given."""
        return self._dataset(_with_default_dims(self.posterior)) if self.posterior else None

    def sample_stats_to_xarray(self) -> xr.Dataset | None:
        """Per-draw sampler diagnostics, ``None`` when none were given."""
        if not self.sample_stats:
            return None
        return self._dataset(_with_default_dims(self.sample_stats))

    def log_likelihood_to_xarray(self) -> xr.Dataset | None:
        """``y``: ``log p(y_i | theta_s)`` ``[chain, draw, train_obs]``, ``None`` when not given."""
        if self.log_likelihood is None:
            return None
        return self._dataset({"y": ((*SAMPLE_DIMS, TRAIN_DIM), self.log_likelihood)})

    def posterior_predictive_to_xarray(self) -> xr.Dataset | None:
        """``y``: replicated training labels ``[chain, draw, train_obs]``, ``None`` when not
        given."""
        if self.y_train_draws is None:
            return None
        return self._dataset({"y": ((*SAMPLE_DIMS, TRAIN_DIM), self.y_train_draws)})

    def observed_data_to_xarray(self) -> xr.Dataset | None:
        """``y``: the training labels ``[train_obs]``, ``None`` when not given."""
        if self.y_train is None:
            return None
        return self._dataset({"y": ((TRAIN_DIM,), self.y_train)})

    def groups(self) -> dict[str, xr.Dataset]:
        """Every group that has data, by ArviZ group name."""
        built = {
            "posterior": self.posterior_to_xarray(),
            "predictions": self.predictions_to_xarray(),
            "predictions_constant_data": self.predictions_constant_data_to_xarray(),
            "sample_stats": self.sample_stats_to_xarray(),
            "log_likelihood": self.log_likelihood_to_xarray(),
            "posterior_predictive": self.posterior_predictive_to_xarray(),
            "observed_data": self.observed_data_to_xarray(),
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
    y_test: Any = None,
    teacher_probs: Any = None,
    p_true: Any = None,
    obs_ids: Any = None,
    sample_stats: Mapping[str, Any] | None = None,
    posterior: Mapping[str, Any] | None = None,
    log_likelihood: Any = None,
    y_train: Any = None,
    y_train_draws: Any = None,
    class_names: Sequence[Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """Collect the outputs of one BKD run in an ``InferenceData`` (groups: module docstring).

    Args:
        probs: draws ``q^(s)(x_n)`` at the test inputs, ``[chain, draw, N, K]``, rows summing
            to 1.
        y_test: test labels ``[N]``.
        teacher_probs: teacher probabilities at the test inputs, ``[N, K]``.
        p_true: true class probabilities ``p*`` ``[N, K]`` (synthetic data).
        obs_ids: ids of the test inputs ``[N]`` (e.g. their rows in the data set), default
            ``0..N-1``.
        sample_stats: per-draw diagnostics ``name -> [chain, draw]`` (``lp``, ``step_size``,
            ``grad_norm``, ...); non-finite values are kept (they document a failing run).
        posterior: weight draws ``name -> [chain, draw, *param_shape]``, names as
            ``named_parameters()``; must be finite.
        log_likelihood: ``log q^(s)_{y_i}(x_i)`` at the training inputs,
            ``[chain, draw, N_train]``, finite; needs ``posterior`` and at least 2 draws.
        y_train: training labels ``[N_train]`` (``observed_data``).
        y_train_draws: replicated training labels ``[chain, draw, N_train]``
            (``posterior_predictive``); needs ``y_train``.
        class_names: ``K`` distinct labels for the ``label`` coordinate (default ``0..K-1``).
        attrs: run metadata (method, hyper-parameters, seed, ...); see :func:`make_attrs`.

    Raises:
        ValueError: a malformed ``probs`` (see :func:`pyro_bkd.uq.as_probs`), an input whose
            ``chain``/``draw``/``N``/``K``/``N_train`` sizes disagree, non-finite weights or
            log-likelihood, a log-likelihood without weights or with one draw, a variable
            name containing ``/`` or clashing with ``probs``/``y``/the dimension names.
    """
    return BKDConverter(
        probs,
        y_test=y_test,
        teacher_probs=teacher_probs,
        p_true=p_true,
        obs_ids=obs_ids,
        sample_stats=sample_stats,
        posterior=posterior,
        log_likelihood=log_likelihood,
        y_train=y_train,
        y_train_draws=y_train_draws,
        class_names=class_names,
        attrs=attrs,
    ).to_inference_data()


def fitted_labels(train_probs: Any, y_train: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """The training-set inputs of :func:`to_inference_data` from ``q^(s)(x_i)``
    ``[chain, draw, N_train, K]``: ``log_likelihood = log q^(s)_{y_i}(x_i)`` (probabilities
    clamped at the smallest normal float64, so it is finite), ``y_train`` and
    ``y_train_draws`` ``~ Categorical(q^(s)(x_i))`` (inverse CDF of uniforms drawn with
    ``numpy.random.default_rng(seed)``)."""
    probs = uq.as_probs(train_probs, "train_probs")
    labels = uq.as_labels(y_train, *probs.shape[2:], name="y_train")
    picked = np.take_along_axis(probs, labels[None, None, :, None], axis=-1)[..., 0]
    log_likelihood = np.log(np.maximum(picked.astype(np.float64), np.finfo(np.float64).tiny))
    uniform = np.random.default_rng(seed).random(probs.shape[:3])
    cdf = np.cumsum(probs, axis=-1, dtype=np.float64)
    draws = (cdf[..., :-1] < uniform[..., None]).sum(-1)
    return {"log_likelihood": log_likelihood, "y_train": labels, "y_train_draws": draws}


def from_mcmc(
    mcmc: MCMC,
    x_test: torch.Tensor,
    *,
    y_test: Any = None,
    teacher_probs: Any = None,
    p_true: Any = None,
    obs_ids: Any = None,
    class_names: Sequence[Any] | None = None,
    keep_weights: bool = True,
    fitted: bool | None = None,
    seed: int = 0,
    attrs: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """The ``InferenceData`` of a finished ``pyro.infer.MCMC`` run of a
    :class:`~pyro_bkd.infer.kernels.BKDKernel` on a :class:`~pyro_bkd.BKDModel`, in the layout
    of ``pyro_bkd.sample(...).to_inference_data()``.

    ``predictions.probs`` is ``q^(s)(x_test) = softmax(f(x_test; theta_s))`` of the kept draws
    (:func:`pyro_bkd.predict_probs`); ``sample_stats`` holds the kernel's ``lp``,
    ``step_size``, ``grad_norm`` and ``accept_prob`` per chain; ``posterior`` the weight draws
    (unless ``keep_weights=False``). With ``fitted`` (default: when ``chain * draw * N_train
    <= DEFAULT_FITTED_ENTRIES``, the weights are kept and there are 2 draws or more) the
    training-set groups of :func:`fitted_labels` are added, from the ``x``, ``y`` the run was
    given. ``az.from_pyro(mcmc)`` cannot do this with ArviZ 0.23: its ``sample_stats`` reads
    only ``divergences`` from ``mcmc.diagnostics()`` (it has no hook for a kernel's own
    statistics), so it holds ``diverging`` alone; it has no ``predictions``; and its
    ``observed_data``/``log_likelihood`` list every observed site, ``y`` and ``teacher_prior``
    (the teacher's probabilities ``p [N, K]``; the TIP term per example), so ``az.loo`` there
    needs ``var_name="y"``.

    Raises:
        TypeError: ``mcmc`` was not run with a ``BKDKernel`` on a ``BKDModel``.
        ValueError: ``mcmc`` has not run, or ``fitted=True`` where it cannot apply.
    """
    from pyro_bkd.infer.kernels import BKDKernel
    from pyro_bkd.infer.potential import bkd_arguments
    from pyro_bkd.model import BKDModel
    from pyro_bkd.predictive import predict_probs

    kernel = mcmc.kernel
    if not isinstance(kernel, BKDKernel) or not isinstance(kernel.model, BKDModel):
        raise TypeError(
            "from_mcmc needs a run of a pyro_bkd kernel (SGLD, PSGLD, SGHMC, HMC) on a BKDModel; "
            "use az.from_pyro(mcmc) for other models"
        )
    if not getattr(mcmc, "_samples", None):
        raise ValueError("mcmc has no draws: call mcmc.run(x, y, teacher_logits) first")
    weights = mcmc.get_samples(group_by_chain=True)
    probs = predict_probs(kernel.model.student, weights, x_test)
    stats = _kernel_sample_stats(mcmc.diagnostics())
    num_draws = probs.shape[0] * probs.shape[1]
    data = bkd_arguments(mcmc._args, mcmc._kwargs)  # the run's data, as az.from_pyro reads it
    possible = keep_weights and num_draws >= 2 and data.get("y") is not None
    if fitted is None:
        fitted = possible and num_draws * data["x"].shape[0] <= DEFAULT_FITTED_ENTRIES
    elif fitted and not possible:
        raise ValueError("fitted=True needs keep_weights=True, 2 draws or more and labels y")
    training = {}
    if fitted:
        train_probs = predict_probs(kernel.model.student, weights, data["x"])
        training = fitted_labels(train_probs, data["y"], seed)
    run = {
        "method": type(kernel).__name__.lower(),
        "source": "pyro.infer.MCMC",
        "num_chains": mcmc.num_chains,
        "num_samples": mcmc.num_samples,
        "warmup_steps": mcmc.warmup_steps,
        "thin": kernel.thin,
        "posterior_temperature": kernel.posterior_temperature,
        "strength": kernel.model.strength,
        "prior_scale": kernel.model.prior_scale,
    }
    return to_inference_data(
        probs,
        y_test=y_test,
        teacher_probs=teacher_probs,
        p_true=p_true,
        obs_ids=obs_ids,
        sample_stats=stats,
        posterior=weights if keep_weights else None,
        class_names=class_names,
        attrs={**run, **(attrs or {})},
        **training,
    )


def _kernel_sample_stats(diagnostics: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``name -> [chain, draw]`` from ``MCMC.diagnostics()``'s ``{name: {"chain c": [draw]}}``
    for the per-draw statistics of a ``BKDKernel``."""
    from pyro_bkd.infer.kernels import SAMPLE_STATS

    stats = {}
    for name in SAMPLE_STATS:
        per_chain = diagnostics[name]
        chains = sorted(per_chain, key=lambda key: int(key.split()[-1]))
        stats[name] = np.stack([uq.to_numpy(per_chain[chain]) for chain in chains])
    return stats


def posterior_weights(idata: Any) -> dict[str, np.ndarray]:
    """The weight draws of ``idata``'s ``posterior`` group (empty without the group)."""
    if "posterior" not in _groups(idata):
        return {}
    return {str(name): value.to_numpy() for name, value in idata.posterior.data_vars.items()}


def select_pairs(probs: Any, pairs: Sequence[tuple[int, int]]) -> xr.Dataset:
    """``probs`` at chosen ``(obs, label)`` index pairs: a dataset with ``probs``
    ``[chain, draw, pair]`` whose ``pair`` coordinate reads ``"obs=n, label=k"`` (``k`` the
    class label when ``probs`` carries a ``label`` coordinate), so ArviZ plots and summaries
    label each entry by it."""
    selected = uq.as_probs(probs)
    num_obs, num_classes = selected.shape[2:]
    chosen = [(int(n), int(k)) for n, k in pairs]
    if not chosen or any(not (0 <= n < num_obs and 0 <= k < num_classes) for n, k in chosen):
        raise ValueError(
            f"pairs must be a non-empty list of (obs, label) indices with obs in [0, {num_obs}) "
            f"and label in [0, {num_classes}), got {pairs}"
        )
    names = class_labels(probs, num_classes)
    obs_index, class_index = (np.array(column) for column in zip(*chosen, strict=True))
    labels = [f"obs={n}, label={names[k]}" for n, k in chosen]
    values = selected[:, :, obs_index, class_index]
    return xr.Dataset({"probs": (("chain", "draw", "pair"), values)}, coords={"pair": labels})


def class_labels(probs: Any, num_classes: int) -> list[str]:
    """Labels of the class coordinate of ``probs`` (its dataset or ``InferenceData``), else
    ``0..K-1``."""
    probs = uq.probs_group(probs)
    coords = getattr(probs, "coords", {})
    for dim in (CLASS_DIM, _LEGACY_CLASS_DIM):
        if dim in coords:
            return [str(name) for name in coords[dim].to_numpy()]
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
    """Read an ``InferenceData`` written by :func:`save`, fully into memory (file closed).

    A file of the previous layout is returned in the current one: ``probs`` moves to
    ``predictions`` (dim ``class`` renamed ``label``), ``teacher_probs``/``p_true`` and the
    test labels (``observed_data.y``, as ``y_test``) to ``predictions_constant_data``; its
    test-set ``log_likelihood`` is dropped (it scored test labels as if fitted).
    """
    import arviz as az

    if _arviz_1():
        with xr.open_datatree(os.fspath(path)) as tree:
            idata = tree.load()
    else:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(os.fspath(path))
    groups = {name: _group(idata, name) for name in _groups(idata)}
    if "predictions" in groups or "probs" not in groups.get("posterior_predictive", {}):
        return idata
    return _assemble(_from_previous_layout(groups), dict(idata.attrs))


def _from_previous_layout(groups: Mapping[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """The groups of a file written before the ``predictions`` layout (see :func:`load`)."""

    def renamed(dataset: xr.Dataset) -> xr.Dataset:
        dims = {_LEGACY_CLASS_DIM: CLASS_DIM} if _LEGACY_CLASS_DIM in dataset.dims else {}
        return dataset.rename(dims)

    predictions = renamed(groups["posterior_predictive"][["probs"]])
    constant = renamed(groups.get("constant_data", xr.Dataset()))
    constant = constant.assign(obs_id=predictions["obs"].rename("obs_id"))
    if "observed_data" in groups:
        constant = constant.assign(y_test=groups["observed_data"]["y"])
    new = {"predictions": predictions, "predictions_constant_data": constant}
    weights = groups["posterior"].drop_vars("probs", errors="ignore")
    weights = weights.drop_dims([dim for dim in ("obs", _LEGACY_CLASS_DIM) if dim in weights.dims])
    if weights.data_vars:
        new["posterior"] = weights
    if "sample_stats" in groups:
        new["sample_stats"] = groups["sample_stats"]
    attrs = dict(predictions.attrs)
    return {name: dataset.assign_attrs(attrs) for name, dataset in new.items()}


def _assemble(groups: Mapping[str, xr.Dataset], attrs: Mapping[str, Any]) -> az.InferenceData:
    """``InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x) of ``groups``."""
    if _arviz_1():
        tree = xr.DataTree.from_dict(dict(groups))
        tree.attrs = dict(attrs)
        return tree
    import arviz as az

    return az.InferenceData(attrs=dict(attrs), **groups)


def _groups(idata: Any) -> list[str]:
    """Group names of an ``InferenceData`` or ``xarray.DataTree``."""
    return list(idata.children) if isinstance(idata, xr.DataTree) else list(idata.groups())


def _group(idata: Any, name: str) -> xr.Dataset:
    group = idata[name]
    return group.to_dataset() if isinstance(group, xr.DataTree) else group


def _arviz_1() -> bool:
    """Whether ArviZ 1.x (groups in an ``xarray.DataTree``) is installed."""
    from importlib.metadata import version

    return int(version("arviz").split(".")[0]) >= 1


def _netcdf_attr(value: Any) -> str | int | float:
    if isinstance(value, np.generic) and not isinstance(value, np.bool_):
        value = value.item()
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _optional_class_probs(value: Any, name: str, probs: np.ndarray) -> np.ndarray | None:
    return None if value is None else uq.as_class_probs(value, *probs.shape[2:], name=name)


def _obs_ids(obs_ids: Any, num_obs: int) -> np.ndarray:
    """``obs_ids`` as a ``[N]`` array (``0..N-1`` when ``None``)."""
    if obs_ids is None:
        return np.arange(num_obs)
    ids = uq.to_numpy(obs_ids)
    if ids.shape != (num_obs,):
        raise ValueError(f"obs_ids must have shape ({num_obs},), got {tuple(ids.shape)}")
    return ids


def _fitted_arrays(
    log_likelihood: Any, y_train: Any, y_train_draws: Any, probs: np.ndarray, has_weights: bool
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Check the training-set inputs against each other and ``probs``' chain, draw and K."""
    sample_shape, num_classes = probs.shape[:2], probs.shape[3]
    loglik = None
    if log_likelihood is not None:
        loglik = uq.to_numpy(log_likelihood).astype(np.float64)
        if loglik.ndim != 3 or loglik.shape[:2] != sample_shape:
            raise ValueError(
                f"log_likelihood must have shape (chain, draw, N_train) = {sample_shape} + "
                f"(N_train,), got {tuple(loglik.shape)}"
            )
        if not np.isfinite(loglik).all():
            raise ValueError("log_likelihood must be finite; it holds NaN or inf")
        if not has_weights:
            raise ValueError(
                "log_likelihood needs the weight draws too (posterior=...): az.loo reads the "
                "posterior group for the relative efficiency of the draws"
            )
        if loglik.shape[0] * loglik.shape[1] < 2:
            raise ValueError(
                "log_likelihood needs 2 draws or more: PSIS-LOO of a single draw (a point "
                "estimate such as map or kd) is undefined; score held-out labels with "
                "pyro_bkd.metrics.elpd_test instead"
            )
    num_train = _first_size(loglik, y_train, y_train_draws)
    labels = None if y_train is None else uq.as_labels(y_train, num_train, num_classes, "y_train")
    draws = None
    if y_train_draws is not None:
        if labels is None:
            raise ValueError("y_train_draws needs y_train (the observed labels they replicate)")
        draws = uq.to_numpy(y_train_draws)
        expected = (*sample_shape, num_train)
        if draws.shape != expected:
            raise ValueError(f"y_train_draws must have shape {expected}, got {draws.shape}")
        uq.as_labels(draws.reshape(-1), draws.size, num_classes, "y_train_draws")
    return loglik, labels, draws


def _first_size(*arrays: Any) -> int:
    """The last axis' size of the first array given (``N_train``), else 0."""
    for array in arrays:
        if array is not None:
            return int(np.shape(array)[-1])
    return 0


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
