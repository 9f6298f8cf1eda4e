"""Tests of the ArviZ export: groups, netCDF round trip, ArviZ functions, atomic writes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import arviz as az
import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from pyro_bkd import _atomic, export, uq

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")

CHAINS, DRAWS, NUM_OBS, NUM_CLASSES = 2, 30, 5, 3
NUM_TRAIN = 8


def _dirichlet(rng: np.random.Generator, *shape: int) -> np.ndarray:
    gamma = rng.gamma(2.0, size=(*shape, NUM_CLASSES))
    return gamma / gamma.sum(-1, keepdims=True)


def _inputs(seed: int = 0, chains: int = CHAINS, draws: int = DRAWS) -> dict[str, object]:
    """Every input of ``to_inference_data``; weight names as ``named_parameters()`` gives them,
    the training-set groups from probabilities at ``NUM_TRAIN`` training inputs."""
    rng = np.random.default_rng(seed)
    train_probs = _dirichlet(rng, chains, draws, NUM_TRAIN)
    y_train = rng.integers(0, NUM_CLASSES, NUM_TRAIN)
    return {
        "probs": torch.from_numpy(_dirichlet(rng, chains, draws, NUM_OBS)).float(),
        "y_test": np.array([0, 1, 2, 0, 1]),
        "teacher_probs": np.full((NUM_OBS, NUM_CLASSES), 1 / 3),
        "p_true": rng.dirichlet(np.ones(NUM_CLASSES), size=NUM_OBS),
        "obs_ids": np.array([10, 11, 12, 13, 14]),
        "sample_stats": {
            "lp": rng.normal(size=(chains, draws)),
            "step_size": np.full((chains, draws), 1e-3),
            "grad_norm": np.abs(rng.normal(size=(chains, draws))),
        },
        "posterior": {
            "0.weight": rng.normal(size=(chains, draws, 4, 2)),
            "fc1.bias": torch.randn(chains, draws, 4),
        },
        **export.fitted_labels(train_probs, y_train, seed=seed),
        "class_names": ["cat", "dog", "bird"],
        "attrs": {
            "method": "sgld",
            "temperature": 4.0,
            "seed": np.int64(3),
            "prior_scale": None,
            "warm_start": True,
            "step_size": {"kind": "constant", "value": 1e-3},
        },
    }


@pytest.fixture(scope="module")
def idata() -> az.InferenceData:
    return export.to_inference_data(**_inputs())


def test_groups_dims_and_coords(idata: az.InferenceData) -> None:
    assert set(idata.groups()) == {
        "posterior",
        "predictions",
        "predictions_constant_data",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    }
    probs = idata.predictions["probs"]
    assert probs.dims == ("chain", "draw", "obs", "label")
    assert probs.dtype == np.float32
    assert probs["label"].values.tolist() == ["cat", "dog", "bird"]
    assert probs.sel(obs=4, label="dog").shape == (CHAINS, DRAWS)  # keyword selection
    assert set(idata.posterior.data_vars) == {"0.weight", "fc1.bias"}
    assert idata.posterior["0.weight"].dims == ("chain", "draw", "0.weight_dim_0", "0.weight_dim_1")
    assert set(idata.sample_stats.data_vars) == {"lp", "step_size", "grad_norm"}
    constant = idata.predictions_constant_data
    assert set(constant.data_vars) == {"obs_id", "y_test", "teacher_probs", "p_true"}
    assert constant["p_true"].dims == ("obs", "label")
    np.testing.assert_array_equal(constant["y_test"], [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(constant["obs_id"], [10, 11, 12, 13, 14])
    assert idata.observed_data["y"].dims == ("train_obs",)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "train_obs")


def test_fitted_labels_are_the_training_likelihood_and_replicates() -> None:
    """``log_likelihood = log q_{y_i}``; the replicated labels follow ``Categorical(q)``: with
    one fixed ``q`` over 20,000 draws, their frequencies are within 4 standard errors."""
    rng = np.random.default_rng(1)
    q = np.array([0.7, 0.2, 0.1])
    probs = np.broadcast_to(q, (2, 10_000, 2, NUM_CLASSES))
    fitted = export.fitted_labels(probs, np.array([0, 2]), seed=5)
    np.testing.assert_allclose(fitted["log_likelihood"][..., 0], np.log(0.7))
    np.testing.assert_allclose(fitted["log_likelihood"][..., 1], np.log(0.1))
    frequencies = np.bincount(fitted["y_train_draws"].ravel(), minlength=3) / 40_000
    assert np.all(np.abs(frequencies - q) < 4 * np.sqrt(q * (1 - q) / 40_000))
    train_probs = _dirichlet(rng, 2, 3, 4)
    again = export.fitted_labels(train_probs, np.array([0, 1, 2, 0]), seed=5)
    picked = np.take_along_axis(train_probs, np.array([0, 1, 2, 0])[None, None, :, None], -1)
    np.testing.assert_allclose(again["log_likelihood"], np.log(picked[..., 0]), rtol=1e-12)


def test_attrs_are_netcdf_safe(idata: az.InferenceData) -> None:
    attrs = idata.predictions.attrs
    assert attrs == idata.attrs
    assert attrs["method"] == "sgld" and attrs["temperature"] == 4.0 and attrs["seed"] == 3
    assert type(attrs["seed"]) is int
    assert attrs["prior_scale"] == "null" and attrs["warm_start"] == "true"
    assert json.loads(attrs["step_size"]) == {"kind": "constant", "value": 1e-3}
    assert attrs["inference_library"] == "pyro_bkd"
    assert attrs["inference_library_version"] and attrs["created_at"]


def test_missing_inputs_give_no_group() -> None:
    probs = _inputs()["probs"]
    bare = export.to_inference_data(probs)
    assert set(bare.groups()) == {"predictions", "predictions_constant_data"}
    assert list(bare.predictions.data_vars) == ["probs"]
    np.testing.assert_array_equal(bare.predictions_constant_data["obs_id"], np.arange(NUM_OBS))
    only_p_true = export.to_inference_data(probs, p_true=np.full((NUM_OBS, NUM_CLASSES), 1 / 3))
    assert set(only_p_true.predictions_constant_data.data_vars) == {"obs_id", "p_true"}


def test_netcdf_round_trip_is_identical(idata: az.InferenceData, tmp_path: Path) -> None:
    path = export.save(idata, tmp_path / "posterior.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]
    loaded = export.load(path)
    assert set(loaded.groups()) == set(idata.groups())
    for group in idata.groups():
        xr.testing.assert_identical(loaded[group], idata[group])
    assert loaded.attrs == idata.attrs
    weights = export.posterior_weights(loaded)
    assert set(weights) == {"0.weight", "fc1.bias"}
    np.testing.assert_array_equal(weights["0.weight"], _inputs()["posterior"]["0.weight"])
    other_engine = az.from_netcdf(str(path), engine="netcdf4")
    assert set(other_engine.posterior.data_vars) == {"0.weight", "fc1.bias"}


def test_arviz_functions_run_on_the_saved_file(idata: az.InferenceData, tmp_path: Path) -> None:
    loaded = export.load(export.save(idata, tmp_path / "posterior.nc"))
    summary = az.summary(loaded, group="predictions", var_names=["probs"])
    assert len(summary) == NUM_OBS * NUM_CLASSES and "r_hat" in summary.columns
    assert "probs[0, cat]" in summary.index
    assert az.rhat(loaded.predictions)["probs"].shape == (NUM_OBS, NUM_CLASSES)
    assert az.ess(loaded.predictions, var_names=["probs"])["probs"].shape == (NUM_OBS, NUM_CLASSES)
    with pytest.warns(UserWarning):  # 60 draws: ArviZ warns the Pareto k estimates are rough
        loo = az.loo(loaded)
    assert loo.n_data_points == NUM_TRAIN and np.isfinite(loo.elpd_loo)
    forest = az.plot_forest(loaded.predictions, var_names=["probs"], coords={"obs": [0, 1]})
    trace = az.plot_trace(loaded, var_names=["fc1.bias"], coords={"fc1.bias_dim_0": [0]})
    predictions = az.plot_trace(
        loaded.predictions, var_names=["probs"], coords={"obs": [0], "label": ["dog"]}
    )
    assert forest[0].figure is not None and trace.shape == predictions.shape == (1, 2)
    ppc = az.plot_ppc(loaded, num_pp_samples=10, random_seed=0)
    loo_pit = az.plot_loo_pit(loaded, y="y")
    assert ppc.figure is not None and loo_pit.figure is not None
    plt.close("all")


def test_az_compare_ranks_runs_and_refuses_a_single_draw(tmp_path: Path) -> None:
    """Two saved runs rank by PSIS-LOO of the training labels; a point estimate (one draw)
    has no LOO: the export refuses its log-likelihood with a reason, and ``az.compare`` on a
    run saved without one says the log-likelihood is missing (no ``IndexError``)."""
    runs = {
        name: export.load(export.save(export.to_inference_data(**_inputs(seed)), tmp_path / name))
        for name, seed in (("sgld", 0), ("hmc", 1))
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PSIS k warnings at 60 draws
        ranked = az.compare(runs, ic="loo")
    assert sorted(ranked.index) == ["hmc", "sgld"] and ranked["elpd_diff"].min() == 0.0
    single = _inputs(chains=1, draws=1)
    with pytest.raises(ValueError, match="2 draws or more"):
        export.to_inference_data(**single)
    point = {key: single[key] for key in ("probs", "y_test", "posterior")}
    runs["map"] = export.to_inference_data(**point)
    with warnings.catch_warnings(), pytest.raises(TypeError, match="ELPD") as raised:
        warnings.simplefilter("ignore")
        az.compare(runs, ic="loo")
    cause = raised.value.__cause__
    assert "from model map" in str(cause) and "log likelihood not found" in str(cause.__cause__)


def test_files_of_the_previous_layout_load_in_the_new_one(tmp_path: Path) -> None:
    """The layout before ``predictions``: probs in ``posterior`` and ``posterior_predictive``
    (dim ``class``), test labels in ``observed_data``, their log density in
    ``log_likelihood``."""
    inputs = _inputs()
    probs = inputs["probs"].numpy()
    dims = ("chain", "draw", "obs", "class")
    coords = {"class": ["cat", "dog", "bird"]}
    old = az.InferenceData(
        posterior=xr.Dataset(
            {"probs": (dims, probs), "w": (("chain", "draw", "w_dim_0"), np.ones((2, 30, 2)))},
            coords=coords,
        ),
        posterior_predictive=xr.Dataset({"probs": (dims, probs)}, coords=coords),
        observed_data=xr.Dataset({"y": (("obs",), inputs["y_test"])}),
        constant_data=xr.Dataset({"p_true": (("obs", "class"), inputs["p_true"])}, coords=coords),
        log_likelihood=xr.Dataset({"y": (("chain", "draw", "obs"), np.log(probs[..., 0]))}),
        attrs={"method": "sgld"},
    )
    loaded = export.load(export.save(old, tmp_path / "old.nc"))
    assert set(loaded.groups()) == {"posterior", "predictions", "predictions_constant_data"}
    np.testing.assert_array_equal(loaded.predictions["probs"].sel(label="dog"), probs[..., 1])
    constant = loaded.predictions_constant_data
    np.testing.assert_array_equal(constant["y_test"], inputs["y_test"])
    assert constant["p_true"].dims == ("obs", "label")
    assert list(loaded.posterior.data_vars) == ["w"] and loaded.attrs["method"] == "sgld"
    np.testing.assert_array_equal(export.class_labels(loaded, 3), ["cat", "dog", "bird"])


def test_select_pairs_labels_entries(idata: az.InferenceData) -> None:
    pairs = export.select_pairs(idata, [(0, 1), (4, 2)])
    assert pairs["pair"].values.tolist() == ["obs=0, label=dog", "obs=4, label=bird"]
    np.testing.assert_array_equal(
        pairs["probs"].values[..., 1], idata.predictions["probs"].values[:, :, 4, 2]
    )
    with pytest.raises(ValueError, match="pairs must be"):
        export.select_pairs(idata, [(5, 0)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_test": np.zeros(4, dtype=int)}, r"y must have shape \(5,\)"),
        ({"teacher_probs": np.ones((5, 2)) / 2}, r"teacher_probs must have shape \(5, 3\)"),
        ({"p_true": np.full((5, 3), np.nan)}, "p_true must be finite"),
        ({"obs_ids": np.arange(4)}, r"obs_ids must have shape \(5,\)"),
        ({"sample_stats": {"lp": np.zeros((2, 29))}}, r"sample_stats\['lp'\] must have shape"),
        ({"posterior": {"w": np.zeros((1, 30))}}, r"posterior\['w'\] must have shape"),
        ({"posterior": {"w": np.full((2, 30), np.inf)}}, r"posterior\['w'\] must be finite"),
        ({"posterior": {"a/b": np.zeros((2, 30))}}, "without '/'"),
        ({"posterior": {"probs": np.zeros((2, 30))}}, "clashes"),
        ({"posterior": None}, "log_likelihood needs the weight draws"),
        ({"log_likelihood": np.zeros((2, 30))}, "log_likelihood must have shape"),
        ({"log_likelihood": np.full((2, 30, 8), -np.inf)}, "log_likelihood must be finite"),
        ({"y_train": np.zeros(7, dtype=int)}, r"y_train must have shape \(8,\)"),
        ({"y_train": None}, "y_train_draws needs y_train"),
        ({"y_train_draws": np.full((2, 30, 8), 3)}, r"y_train_draws must hold labels in \[0, 3\)"),
        ({"class_names": ["a", "a", "b"]}, "class_names must hold 3 distinct"),
        ({"attrs": {1: "x"}}, "attrs keys"),
        ({"probs": np.ones((2, 30, 5))}, "4-D"),
    ],
)
def test_bad_inputs_name_the_argument(change: dict[str, object], message: str) -> None:
    inputs = _inputs() | change
    with pytest.raises(ValueError, match=message):
        export.to_inference_data(**inputs)


def test_sample_stats_may_hold_non_finite_values() -> None:
    stats = {"lp": np.full((CHAINS, DRAWS), -np.inf)}
    idata = export.to_inference_data(_inputs()["probs"], sample_stats=stats)
    assert np.isneginf(idata.sample_stats["lp"]).all()


class _FailingWriter:
    """Writes half a file, then fails: the stand-in for a crash during ``to_netcdf``."""

    def to_netcdf(self, path: str) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")


def test_failed_save_leaves_the_old_file(idata: az.InferenceData, tmp_path: Path) -> None:
    path = export.save(idata, tmp_path / "posterior.nc")
    before = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        export.save(_FailingWriter(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]


def test_atomic_text_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    _atomic.write_text(path, "old")
    _atomic.write_text(path, "new é")
    assert path.read_text(encoding="utf-8") == "new é"
    with pytest.raises(RuntimeError), _atomic.atomic_path(path) as temporary:
        temporary.write_text("partial")
        raise RuntimeError
    assert path.read_text(encoding="utf-8") == "new é"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_the_arviz_1_path_builds_and_reads_a_datatree(
    idata: az.InferenceData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ArviZ 1.x the same groups form an ``xarray.DataTree`` (not run by ArviZ here:
    0.23 is installed); saving and loading keep every group."""
    monkeypatch.setattr(export, "_arviz_1", lambda: True)
    tree = export.to_inference_data(**_inputs())
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == set(idata.groups())
    loaded = export.load(export.save(tree, tmp_path / "tree.nc"))
    assert isinstance(loaded, xr.DataTree) and loaded.attrs["method"] == "sgld"
    np.testing.assert_array_equal(uq.as_probs(loaded), _inputs()["probs"].numpy())
    assert set(export.posterior_weights(loaded)) == {"0.weight", "fc1.bias"}
