"""Tests of the ``pyro-bkd`` command: demo, fit, teacher, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_bkd import cli, export
from pyro_bkd._checks import InputError
from pyro_bkd.data import oracle_teacher_logits, synthetic
from pyro_bkd.pipeline import FitOptions, load_teacher, run_fit

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EXECUTABLE = REPO / ".venv" / "bin" / "pyro-bkd"
# A small budget for every fit: KD warm start of 3 epochs, few draws.
FAST = ["--warm-epochs", "3", "-q"]


def _run(argv: list[str]) -> int:
    return cli.main([*argv])


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    """Run ``main(argv)``; check it exits with ``status`` and one stderr line; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == status
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyro-bkd: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    """A linear 5-class synthetic problem with a slightly noisy oracle teacher."""
    data = synthetic("linear-5class", n=440, seed=0, dim=3)
    return {
        "x_train": data.x_train.numpy(),
        "y_train": data.y_train.numpy(),
        "teacher_logits_train": oracle_teacher_logits(data.p_train, 0.3, seed=1).numpy(),
        "x_test": data.x_test.numpy(),
        "y_test": data.y_test.numpy(),
        "teacher_logits_test": oracle_teacher_logits(data.p_test, 0.3, seed=2).numpy(),
        "p_test": data.p_test.numpy(),
    }


@pytest.fixture(scope="module")
def npz(arrays: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.npz"
    np.savez(path, **arrays)
    return path


def _write_npz(tmp_path: Path, arrays: dict[str, np.ndarray], **changes: object) -> Path:
    """``arrays`` with some entries replaced (``None`` removes one), saved as an npz."""
    values = {**arrays, **changes}
    path = tmp_path / "changed.npz"
    np.savez(path, **{k: v for k, v in values.items() if v is not None})
    return path


def _no_outputs(out: Path) -> None:
    """A run refused for bad input does not even create its output folder."""
    assert not out.exists()


# --------------------------------------------------------------------------- demo


def test_demo_quick_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert _run(["demo", "--out", str(out), "--quick", "-q"]) == 0
    for name in ("posterior.nc", "metrics.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == [
        "deviance_vs_noise.png",
        "intervals_highest_deviance.png",
        "rank_bkd.png",
        "ranking_kd_vs_bkd.png",
        "reliability_bkd.png",
        "trace_bkd.png",
    ]
    values = json.loads((out / "metrics.json").read_text())
    assert list(values["methods"]) == ["teacher", "student_alone", "kd", "map", "bkd"]
    for method in values["methods"].values():
        for key in ("accuracy", "nll", "ece", "brier", "wall_seconds"):
            assert isinstance(method[key], float), key
    bkd = values["methods"]["bkd"]
    assert bkd["num_chains"] == 4 and bkd["draws"] == 32
    assert bkd["method"] == "sghmc"
    assert values["verdict"] == bkd["convergence"]["message"]
    assert values["verdict"].split(":")[0] in ("converged", "borderline", "not converged")
    assert bkd["coverage"] is None  # digits: the true probabilities are unknown
    assert {"max_rhat", "min_ess_bulk", "mean_interval_width"} <= bkd.keys()
    assert values["wall_seconds"] > 0
    assert len(values["noise"]["bkd_mean_deviance"]) == 5
    idata = export.load(out / "posterior.nc")
    assert idata.predictions["probs"].shape == (4, 8, 60, 10)
    assert "teacher_probs" in idata.predictions_constant_data
    assert idata.attrs["warm_start"] == "kd, dispersed"
    printed = capsys.readouterr().out
    assert "bkd" in printed and "accuracy" in printed
    assert f"verdict: {values['verdict']}" in printed  # one line: verdict, figures, advice
    report = (out / "report.md").read_text()
    assert report.index("Verdict") < report.index("Run")  # the report opens with it


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize(
    ("method", "budget", "draws"),
    [
        ("sgld", ["--num-samples", "15", "--warmup", "20", "--thin", "2", "--chains", "2"], 30),
        ("psgld", ["--num-samples", "10", "--warmup", "10", "--thin", "1", "--chains", "2"], 20),
        ("map", ["--steps", "30"], 1),
        ("svi-normal", ["--steps", "30", "--num-samples", "20"], 20),
        ("nuts", ["--num-samples", "8", "--warmup", "8", "--chains", "2"], 16),
    ],
)
def test_fit_methods(
    method: str, budget: list[str], draws: int, npz: Path, tmp_path: Path, arrays: dict
) -> None:
    out = tmp_path / method
    argv = ["fit", "--data", str(npz), "--out", str(out), "--method", method, *budget, *FAST]
    assert _run(argv) == 0
    values = json.loads((out / "metrics.json").read_text())
    assert values["method"] == method
    assert values["draws"] == draws
    for key in ("accuracy", "nll", "ece", "coverage", "mean_interval_width", "wall_seconds"):
        assert isinstance(values[key], float), key
    assert 0 <= values["coverage"] <= 1
    assert "max_rhat" in values and "min_ess_bulk" in values
    assert values["teacher"]["accuracy"] > 0.3
    idata = export.load(out / "posterior.nc")
    probs = idata.predictions["probs"]
    assert probs.shape[1:] == (draws // probs.shape[0], len(arrays["x_test"]), 5)
    np.testing.assert_allclose(
        idata.predictions_constant_data["p_true"], arrays["p_test"], rtol=1e-6
    )
    assert idata.attrs["method"] == method
    if method in ("sgld", "nuts"):
        assert values["max_rhat"] is not None  # two chains of several draws


def test_fit_flat_prior_mlp_student_and_report(npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    argv = ["fit", "--data", str(npz), "--out", str(out), "--student", "mlp:8",
            "--prior-scale", "none", "--num-samples", "5", "--warmup", "5", "--thin", "1",
            "--keep-weights", "--report", *FAST]  # fmt: skip
    assert _run(argv) == 0
    values = json.loads((out / "metrics.json").read_text())
    assert values["settings"]["prior_scale"] is None
    assert values["settings"]["student"] == "mlp:8"
    expected = ["intervals_highest_deviance", "rank_sghmc", "ranking_sghmc", "reliability_sghmc",
                "trace_sghmc"]  # fmt: skip
    assert _report_figures(out) == expected
    idata = export.load(out / "posterior.nc")
    assert idata.posterior["fc1.weight"].shape == (4, 5, 8, 3)


def _report_figures(out: Path) -> list[str]:
    """The figures of a run's report, after checking that each is a PNG under ``plots/``,
    listed in ``metrics.json``, linked from ``report.md`` and embedded in ``report.html``."""
    files = sorted(path.name for path in (out / "plots").iterdir())
    listed = json.loads((out / "metrics.json").read_text())["plots"]
    assert sorted(listed) == [f"plots/{name}" for name in files]
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(files)
    for name in files:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        stem = name.removesuffix(".png")
        assert f"](plots/{name})" in markdown, name
        assert f"<figcaption>{stem.replace('_', ' ')}</figcaption>" in page, name
    return [name.removesuffix(".png") for name in files]


def test_fit_without_labels_or_truth(arrays: dict, tmp_path: Path) -> None:
    path = _write_npz(tmp_path, arrays, y_test=None, p_test=None, teacher_logits_test=None)
    out = tmp_path / "out"
    assert _run(["fit", "--data", str(path), "--out", str(out), "--method", "map",
                 "--steps", "5", "--report", *FAST]) == 0  # fmt: skip
    values = json.loads((out / "metrics.json").read_text())
    # no labels: no reliability or ranking; one draw: no trace or rank plot
    assert _report_figures(out) == ["intervals_highest_deviance"]
    assert values["accuracy"] is None and values["coverage"] is None
    assert "teacher" not in values
    assert isinstance(values["mean_deviance"], float)


def test_fit_alpha_sets_the_strength_by_the_kd_mapping(npz: Path, tmp_path: Path) -> None:
    """``--alpha A`` runs the model with ``lam = A tau^2 / (1 - A)`` (SPEC §3)."""
    out = tmp_path / "alpha"
    argv = ["fit", "--data", str(npz), "--out", str(out), "--method", "map", "--steps", "5",
            "--alpha", "0.5", "--temperature", "2", *FAST]  # fmt: skip
    assert _run(argv) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["strength"] == pytest.approx(4.0)  # 0.5 * 2^2 / 0.5
    assert settings["kd_alpha"] == pytest.approx(0.5)
    attrs = export.load(out / "posterior.nc").attrs
    assert attrs["strength"] == pytest.approx(4.0) and attrs["kd_alpha"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("given", "strength"),
    [
        ({}, 144.0),  # the default: alpha 0.9 at tau 4, the demo's posterior
        ({"temperature": 2.0}, 36.0),  # the default alpha follows tau
        ({"alpha": 0.0}, 0.0),
        ({"alpha": 0.75, "temperature": 1.0}, 3.0),
        ({"strength": 1.0}, 1.0),
    ],
)
def test_fit_options_resolve_one_teacher_strength(
    given: dict, strength: float, npz: Path, tmp_path: Path
) -> None:
    options = FitOptions(data=str(npz), out=str(tmp_path / "o"), **given).resolved()
    assert options.strength == pytest.approx(strength)
    assert options.alpha is None  # resolved: the strength alone says it
    assert options.resolved().strength == options.strength


def test_fit_options_refuse_alpha_with_strength(npz: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--alpha and --strength both set"):  # on construction
        FitOptions(data=str(npz), out=str(tmp_path / "o"), alpha=0.5, strength=2.0)


def test_failed_fit_leaves_no_partial_file(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import arviz as az

    def broken_to_netcdf(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a netCDF file")
        raise OSError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", broken_to_netcdf)
    out = tmp_path / "out"
    options = FitOptions(data=str(npz), out=str(out), method="map", steps=5, warm_epochs=1,
                         progress=False)  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        run_fit(options)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- teacher


def test_teacher_digits_then_fit_on_its_logits(tmp_path: Path) -> None:
    out = tmp_path / "teacher"
    assert _run(["teacher", "--dataset", "digits", "--epochs", "1", "--out", str(out), "-q"]) == 0
    values = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "nll", "ece", "cmi", "train_accuracy"):
        assert isinstance(values[key], float), key
    with np.load(out / "teacher_logits.npz") as saved:
        assert saved["teacher_logits_train"].shape == (1347, 10)
        assert saved["teacher_logits_test"].shape == (450, 10)
        assert saved["x_train"].shape == (1347, 64)
        x_test, logits_test = saved["x_test"], saved["teacher_logits_test"]
    teacher = load_teacher(out / "teacher.pt")
    with torch.no_grad():
        np.testing.assert_allclose(
            teacher(torch.from_numpy(x_test)).numpy(), logits_test, rtol=1e-5, atol=1e-5
        )
    fit_out = tmp_path / "fit"
    assert _run(["fit", "--data", str(out / "teacher_logits.npz"), "--out", str(fit_out),
                 "--method", "map", "--steps", "5", "--warm-epochs", "1", "-q"]) == 0  # fmt: skip
    assert json.loads((fit_out / "metrics.json").read_text())["num_obs"] == 450


def test_teacher_mcmi(tmp_path: Path) -> None:
    out = tmp_path / "mcmi"
    argv = ["teacher", "--dataset", "digits", "--objective", "mcmi", "--cmi-weight", "0.2",
            "--epochs", "1", "--mll-epochs", "1", "--arch", "mlp:32", "--out", str(out),
            "--no-inputs", "-q"]  # fmt: skip
    assert _run(argv) == 0
    values = json.loads((out / "metrics.json").read_text())
    assert values["objective"] == "mcmi" and values["arch"] == "mlp:32"
    assert isinstance(values["cmi_mll"], float) and isinstance(values["cmi"], float)
    with np.load(out / "teacher_logits.npz") as saved:
        assert "x_train" not in saved.files


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--temperature", "0"], "--temperature must be in [0.01, 100]"),
        (["--temperature", "-1"], "--temperature must be in [0.01, 100]"),
        (["--temperature", "1e300"], "--temperature must be in [0.01, 100]"),
        (["--strength", "-0.5"], "--strength must be in [0, 1e+06]"),
        (["--strength", "1e300"], "--strength must be in [0, 1e+06]"),
        (["--alpha", "1"], "--alpha must be in [0, 1) (KD's weight"),
        (["--alpha", "-0.1"], "--alpha must be in [0, 1)"),
        (["--alpha", "nan"], "--alpha must be finite"),
        (["--alpha", "0.5", "--strength", "2"], "argument --strength: not allowed with"),
        (["--alpha", "0.99999999", "--temperature", "100"], "above the largest teacher strength"),
        (["--prior-scale", "0"], "--prior-scale must be in [0.0001, 10000]"),
        (["--prior-scale", "1e-300"], "--prior-scale must be in [0.0001, 10000]"),
        (["--prior-scale", "abc"], "--prior-scale: must be a number"),
        (["--step-size", "1e300"], "--step-size must be in"),
        (["--lr", "1e300"], "--lr must be in"),
        (["--num-samples", "1000000000000"], "--num-samples must be an integer in [1, 1000000]"),
        (["--num-samples", "1e12"], "--num-samples: must be an integer, got '1e12'"),
        (["--chains", "1000000000"], "--chains must be an integer in [1, 1024]"),
        (["--steps", "1000000000000"], "--steps must be an integer in"),
        (["--warmup", "100000000000"], "--warmup must be an integer in"),
        (["--thin", "100000000000"], "--thin must be an integer in"),
        (["--num-samples", "1000000", "--chains", "1024", "--thin", "1"], "would need"),
        (["--student", "mlp:100000000"], "weights; at most"),
        (["--device", "cpu:5"], "--device 'cpu:5' does not exist"),
        (["--threads", "0"], "--threads must be an integer in [1, 1024]"),
        (["--method", "mcmc"], "invalid choice: 'mcmc' (choose from 'hmc', 'sghmc', 'sgld'"),
        (["--student", "transformer"], "unknown student 'transformer'; valid: linear, mlp"),
        (["--student", "mlp:8,x"], "hidden widths must be positive integers"),
        (["--student", "lenet"], "is convolutional and needs image inputs"),
        (["--num-samples", "0"], "--num-samples must be an integer in [1, 1000000]"),
        (["--device", "tpu"], "device"),
    ],
)
def test_fit_bad_options(
    args: list[str], expected: str, npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    line = _fails(["fit", "--data", str(npz), "--out", str(out), *args, *FAST], capsys)
    assert expected in line
    _no_outputs(out)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"teacher_logits_train": None}, "lacks required array(s) teacher_logits_train"),
        ({"x_test": None}, "lacks required array(s) x_test"),
        ({"y_train": np.zeros(3, dtype=np.int64)}, "y_train must have shape (280,)"),
        ({"x_test": np.zeros((5, 4), dtype=np.float32)}, "x_test has feature shape (4,)"),
        ({"teacher_logits_test": np.zeros((40, 3))}, "teacher_logits_test must have shape (40, 5)"),
        ({"y_test": np.full(40, 7)}, "y_test must hold labels in [0, 5)"),
        ({"y_train": np.full(280, -1)}, "y_train must hold labels in [0, 5)"),
        ({"y_train": np.full(280, 0.5)}, "y_train must hold integer class labels"),
        ({"p_test": np.full((40, 5), 0.5)}, "p_test rows must sum to 1"),
        ({"x_train": np.array([["a"] * 3] * 280)}, "x_train must hold numbers"),
    ],
)
def test_fit_bad_data(
    change: dict, expected: str, arrays: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write_npz(tmp_path, arrays, **change)
    out = tmp_path / "out"
    line = _fails(["fit", "--data", str(path), "--out", str(out), *FAST], capsys)
    assert expected in line
    _no_outputs(out)


def test_fit_non_finite_teacher_logits(
    arrays: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    logits = arrays["teacher_logits_train"].copy()
    logits[3, 1] = np.nan
    logits[7, 0] = np.inf
    path = _write_npz(tmp_path, arrays, teacher_logits_train=logits)
    line = _fails(["fit", "--data", str(path), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert "teacher_logits_train must be finite; 2 row(s) hold NaN or inf" in line


def test_fit_missing_or_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "out")
    line = _fails(["fit", "--data", str(tmp_path / "nope.npz"), "--out", out], capsys)
    assert "data file not found" in line and "nope.npz" in line
    text = tmp_path / "text.npz"
    text.write_text("not a zip\n")
    assert "cannot read" in _fails(["fit", "--data", str(text), "--out", out], capsys)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    assert "single array (.npy)" in _fails(["fit", "--data", str(npy), "--out", out], capsys)


def test_diverging_sgld_exits_1_without_outputs(
    npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["fit", "--data", str(npz), "--out", str(out), "--method", "sgld", "--step-size",
            "1000", "--warmup", "50", "--num-samples", "5", *FAST]  # fmt: skip
    assert "non-finite" in _fails(argv, capsys, status=1)
    assert not out.exists()


def test_out_is_a_file(npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "file"
    out.write_text("")
    line = _fails(["fit", "--data", str(npz), "--out", str(out), *FAST], capsys)
    assert "exists and is not a directory" in line


def test_nuts_refuses_big_students(npz: Path, tmp_path: Path, capsys) -> None:
    argv = ["fit", "--data", str(npz), "--out", str(tmp_path / "o"), "--method", "nuts",
            "--student", "mlp:2000,8", *FAST]  # fmt: skip
    assert "nuts is for small students" in _fails(argv, capsys)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["demo"], "the following arguments are required: --out"),
        (["teacher", "--dataset", "imagenet", "--out", "x"], "invalid choice: 'imagenet'"),
        (["teacher", "--dataset", "digits", "--out", "x", "--objective", "kd"], "'mll', 'mcmi'"),
        (["teacher", "--dataset", "digits", "--out", "x", "--epochs", "0"], "must be an integer"),
        (["teacher", "--dataset", "digits", "--out", "x", "--data-root", "/nowhere"], "digits"),
        (["teacher", "--dataset", "digits", "--out", "x", "--arch", "lenet"], "convolutional"),
    ],
)
def test_usage_errors(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    assert expected in _fails(argv, capsys)


def test_teacher_missing_data_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["teacher", "--dataset", "cifar10-subset", "--data-root", str(tmp_path / "none"),
            "--out", str(tmp_path / "o"), "--epochs", "1"]  # fmt: skip
    assert "is not a folder" in _fails(argv, capsys)


def test_executable_exit_status_and_single_line(tmp_path: Path) -> None:
    """The installed console script: status 2, one line on stderr, nothing on stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(EXECUTABLE)] if EXECUTABLE.exists() else [sys.executable, "-m", "pyro_bkd.cli"]
    missing = tmp_path / "missing.npz"
    done = subprocess.run(
        [*command, "fit", "--data", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"pyro-bkd: error: data file not found: {missing}"]


# --------------------------------------------------------------------------- helpers


def test_format_table_and_one_line() -> None:
    table = cli.format_table(
        {"kd": {"accuracy": 0.91234, "nll": None}, "bkd": {"accuracy": 1.0}},
        ("accuracy", "nll"),
        row_title="method",
    )
    assert table.splitlines() == [
        "method  accuracy  nll",
        "kd        0.9123    -",
        "bkd            1    -",
    ]
    assert cli.one_line("a\n  b   c\n\n") == "a; b c"
