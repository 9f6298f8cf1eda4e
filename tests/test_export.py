"""Tests of the ArviZ export: groups, netCDF round trip, ArviZ functions, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from pyro_bkd import _atomic, export

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")

CHAINS, DRAWS, NUM_OBS, NUM_CLASSES = 2, 30, 5, 3


def _inputs(seed: int = 0) -> dict[str, object]:
    """Every input of ``to_inference_data``; weight names as ``named_parameters()`` gives them."""
    rng = np.random.default_rng(seed)
    gamma = rng.gamma(2.0, size=(CHAINS, DRAWS, NUM_OBS, NUM_CLASSES))
    return {
        "probs": torch.from_numpy(gamma / gamma.sum(-1, keepdims=True)).float(),
        "y": np.array([0, 1, 2, 0, 1]),
        "teacher_probs": np.full((NUM_OBS, NUM_CLASSES), 1 / 3),
        "p_true": rng.dirichlet(np.ones(NUM_CLASSES), size=NUM_OBS),
        "sample_stats": {
            "lp": rng.normal(size=(CHAINS, DRAWS)),
            "step_size": np.full((CHAINS, DRAWS), 1e-3),
            "grad_norm": np.abs(rng.normal(size=(CHAINS, DRAWS))),
        },
        "posterior": {
            "0.weight": rng.normal(size=(CHAINS, DRAWS, 4, 2)),
            "fc1.bias": torch.randn(CHAINS, DRAWS, 4),
        },
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
        "posterior_predictive",
        "sample_stats",
        "observed_data",
        "constant_data",
        "log_likelihood",
    }
    probs = idata.posterior_predictive["probs"]
    assert probs.dims == ("chain", "draw", "obs", "class")
    assert probs.dtype == np.float32
    assert idata.posterior["class"].values.tolist() == ["cat", "dog", "bird"]
    assert idata.posterior["0.weight"].dims == ("chain", "draw", "0.weight_dim_0", "0.weight_dim_1")
    assert set(idata.sample_stats.data_vars) == {"lp", "step_size", "grad_norm"}
    assert idata.constant_data["p_true"].dims == ("obs", "class")
    np.testing.assert_array_equal(idata.observed_data["y"], [0, 1, 2, 0, 1])
    xr.testing.assert_equal(idata.posterior["probs"], probs)


def test_log_likelihood_is_log_probability_of_the_label(idata: az.InferenceData) -> None:
    probs = idata.posterior_predictive["probs"].values.astype(np.float64)
    expected = np.log(probs[:, :, np.arange(NUM_OBS), [0, 1, 2, 0, 1]])
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-12)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")


def test_attrs_are_netcdf_safe(idata: az.InferenceData) -> None:
    attrs = idata.posterior.attrs
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
    assert set(bare.groups()) == {"posterior", "posterior_predictive"}
    assert list(bare.posterior.data_vars) == ["probs"]
    no_loglik = export.to_inference_data(probs, y=np.zeros(NUM_OBS, int), log_likelihood=False)
    assert set(no_loglik.groups()) == {"posterior", "posterior_predictive", "observed_data"}
    only_p_true = export.to_inference_data(probs, p_true=np.full((NUM_OBS, NUM_CLASSES), 1 / 3))
    assert list(only_p_true.constant_data.data_vars) == ["p_true"]


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
    assert set(other_engine.posterior.data_vars) == {"probs", "0.weight", "fc1.bias"}


def test_arviz_functions_run_on_the_saved_file(idata: az.InferenceData, tmp_path: Path) -> None:
    loaded = export.load(export.save(idata, tmp_path / "posterior.nc"))
    summary = az.summary(loaded, var_names=["probs"])
    assert len(summary) == NUM_OBS * NUM_CLASSES and "r_hat" in summary.columns
    assert "probs[0, cat]" in summary.index
    assert az.rhat(loaded)["probs"].shape == (NUM_OBS, NUM_CLASSES)
    assert az.ess(loaded, var_names=["probs"])["probs"].shape == (NUM_OBS, NUM_CLASSES)
    with pytest.warns(UserWarning):  # 60 draws: ArviZ warns the Pareto k estimates are rough
        assert np.isfinite(az.loo(loaded).elpd_loo)
    coords = {"obs": [0, 1]}
    forest = az.plot_forest(loaded, var_names=["probs"], coords=coords)
    trace = az.plot_trace(loaded, var_names=["probs"], coords={"obs": [0], "class": ["dog"]})
    assert forest[0].figure is not None and trace.shape == (1, 2)
    plt.close("all")


def test_select_pairs_labels_entries(idata: az.InferenceData) -> None:
    pairs = export.select_pairs(idata, [(0, 1), (4, 2)])
    assert pairs["pair"].values.tolist() == ["obs=0, class=dog", "obs=4, class=bird"]
    np.testing.assert_array_equal(
        pairs["probs"].values[..., 1], idata.posterior_predictive["probs"].values[:, :, 4, 2]
    )
    with pytest.raises(ValueError, match="pairs must be"):
        export.select_pairs(idata, [(5, 0)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y": np.zeros(4, dtype=int)}, r"y must have shape \(5,\)"),
        ({"teacher_probs": np.ones((5, 2)) / 2}, r"teacher_probs must have shape \(5, 3\)"),
        ({"p_true": np.full((5, 3), np.nan)}, "p_true must be finite"),
        ({"sample_stats": {"lp": np.zeros((2, 29))}}, r"sample_stats\['lp'\] must have shape"),
        ({"posterior": {"w": np.zeros((1, 30))}}, r"posterior\['w'\] must have shape"),
        ({"posterior": {"w": np.full((2, 30), np.inf)}}, r"posterior\['w'\] must be finite"),
        ({"posterior": {"a/b": np.zeros((2, 30))}}, "without '/'"),
        ({"posterior": {"probs": np.zeros((2, 30))}}, "clashes"),
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
