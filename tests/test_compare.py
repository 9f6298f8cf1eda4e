"""``pyro-bkd compare``: every method end to end on a tiny budget, the ELPD columns,
the saved predictions, failed methods kept in the table, teacher reuse, bad input."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pyro_bkd import cli, export, metrics, models, uq
from pyro_bkd.data.loaders import SHARED_DATA_DIR
from pyro_bkd.pipeline import COMPARE_METHODS, CompareOptions, run_compare, save_teacher
from pyro_bkd.pipeline.presets import QUICK_BUDGET

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")


@pytest.fixture(scope="module")
def every_method(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compare") / "digits"
    argv = ["compare", "--dataset", "digits", "--methods", "all", "--quick", "-q"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_every_method_runs_and_writes_its_posterior(every_method: tuple[Path, dict]) -> None:
    out, values = every_method
    rows = {row["method"]: row for row in values["rows"]}
    assert list(rows) == ["teacher", *COMPARE_METHODS]
    # pSGLD's default step can throw a chain off the posterior at the start (the quick budget
    # trains KD for one epoch): the driver's runaway check then stops it, which compare must
    # report as a failure with the reason, keeping every other result.
    psgld = rows.pop("psgld")
    assert psgld["status"] == "ok" or "runaway potential" in psgld["reason"]
    assert (out / "psgld" / "posterior.nc").is_file() == (psgld["status"] == "ok")
    assert all(row["status"] == "ok" for row in rows.values()), rows
    chains = values["settings"]["budget"]["chains"]
    for method, row in rows.items():
        idata = export.load(out / method / "posterior.nc")
        probs = idata.predictions["probs"].values
        assert probs.shape[2:] == (64, 10)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert idata.predictions_constant_data["y_test"].shape == (64,)
        assert "log_likelihood" not in idata.groups()  # test labels were not fitted
        assert row["draws"] == probs.shape[0] * probs.shape[1]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["nll"] > 0
    assert rows["sgld"]["draws"] == chains * 6 and rows["sgld"]["max_rhat"] is not None
    assert rows["kd"]["draws"] == 1 and rows["kd"]["mean_interval_width"] is None
    assert rows["ensemble"]["draws"] == 3 and rows["mc-dropout"]["draws"] == 6
    assert rows["svi-normal"]["max_rhat"] is None and rows["ensemble"]["min_ess_bulk"] is None


def test_elpd_columns_follow_from_the_saved_predictions(
    every_method: tuple[Path, dict],
) -> None:
    """ELPD = sum_n log mean_s q^(s)_{y_n}(x_n) of the posterior.nc's predictions and test
    labels, recomputed here in float64 from the file, with the standard error of
    ``metrics.elpd_test``; the paired gaps to the best are >= 0 and 0 for the best."""
    out, values = every_method
    rows = [row for row in values["rows"] if row["status"] == "ok"]
    for row in rows:
        idata = export.load(out / row["method"] / "posterior.nc")
        probs = idata.predictions["probs"].values.astype(np.float64)
        y = idata.predictions_constant_data["y_test"].values
        pooled = probs.reshape(-1, *probs.shape[2:]).mean(axis=0)
        pointwise = np.log(pooled[np.arange(y.size), y])
        assert row["elpd_test"] == pytest.approx(pointwise.sum(), rel=1e-5)
        assert row["elpd_test"] == pytest.approx(-row["nll"] * pointwise.size, rel=1e-5)
        elpd, se = metrics.elpd_test(idata, y)
        assert elpd == pytest.approx(row["elpd_test"], rel=1e-5)
        assert se == pytest.approx(row["elpd_se"], rel=1e-4)
    gaps = [row["elpd_diff"] for row in rows]
    assert min(gaps) == 0.0 and all(gap >= 0 for gap in gaps)


def test_label_set_columns_follow_from_the_saved_predictions(
    every_method: tuple[Path, dict],
) -> None:
    """Coverage of the credible label sets for every method, the single-draw rows included
    (their set: the smallest top-class set reaching the level), from the stored draws."""
    out, values = every_method
    for row in (row for row in values["rows"] if row["status"] == "ok"):
        idata = export.load(out / row["method"] / "posterior.nc")
        probs = idata.predictions["probs"].values
        y = idata.predictions_constant_data["y_test"].values
        for level in metrics.LABEL_SET_LEVELS:
            key = metrics.level_key(level)
            mask = uq.credible_sets(probs, level)
            covered = mask[np.arange(y.size), y].mean()
            assert row[f"set_coverage_{key}"] == pytest.approx(covered)
            assert row[f"set_coverage_{key}_se"] == pytest.approx(
                np.sqrt(covered * (1 - covered) / y.size)
            )
            assert row[f"set_size_{key}"] == pytest.approx(mask.sum(1).mean())
        if row["draws"] == 1:  # by hand: the top classes up to mass 0.95
            q = probs[0, 0, 0]
            order = np.argsort(-q)
            need = int(np.searchsorted(np.cumsum(q[order]), 0.95 - 1e-12)) + 1
            expected = set(order[:need].tolist())
            assert set(np.flatnonzero(uq.credible_sets(probs[:, :, :1], 0.95)[0])) == expected


def test_csv_and_markdown(every_method: tuple[Path, dict]) -> None:
    out, values = every_method
    with open(out / "comparison.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table] == [row["method"] for row in values["rows"]]
    assert float(table[0]["accuracy"]) == pytest.approx(values["rows"][0]["accuracy"])
    markdown = (out / "comparison.md").read_text()
    assert all(f"| {method} |" in markdown for method in COMPARE_METHODS)
    assert "95% set cov (se)" in markdown and "95% set size" in markdown
    kd = next(row for row in table if row["method"] == "kd")
    assert float(kd["set_coverage_99"]) == pytest.approx(
        next(r for r in values["rows"] if r["method"] == "kd")["set_coverage_99"]
    )


def test_a_failing_method_is_marked_and_the_others_are_kept(tmp_path: Path) -> None:
    """SGLD with a step of 50 (the stable scale here is ~1e-5) runs away: a real failure."""
    out = tmp_path / "digits"
    budget = replace(QUICK_BUDGET, step_size=50.0)
    options = CompareOptions(
        dataset="digits",
        out=str(out),
        methods=("kd", "sgld", "map"),
        quick=True,
        budget=budget,
        progress=False,
    )
    values = run_compare(options)
    rows = {row["method"]: row for row in values["rows"]}
    assert rows["sgld"]["status"] == "failed"
    assert re.search(r"(runaway|non-finite) potential.* at step \d+", rows["sgld"]["reason"])
    assert rows["sgld"]["accuracy"] is None and rows["sgld"]["elpd_test"] is None
    assert rows["map"]["status"] == "ok" and rows["kd"]["status"] == "ok"
    assert (out / "map" / "posterior.nc").is_file()
    assert not (out / "sgld").exists()
    markdown = (out / "comparison.md").read_text()
    assert "| sgld | failed |" in markdown and rows["sgld"]["reason"] in markdown


@pytest.mark.skipif(
    not (SHARED_DATA_DIR / "mnist" / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST is not in {SHARED_DATA_DIR}",
)
def test_nuts_refuses_a_large_student_and_compare_goes_on(tmp_path: Path) -> None:
    """The MNIST student has 25k weights, more than NUTS takes."""
    out = tmp_path / "mnist"
    options = CompareOptions(
        dataset="mnist", out=str(out), methods=("kd", "nuts"), quick=True, progress=False
    )
    rows = {row["method"]: row for row in run_compare(options)["rows"]}
    assert rows["nuts"]["status"] == "failed"
    assert "nuts is for small students" in rows["nuts"]["reason"]
    assert rows["kd"]["status"] == "ok"


def test_a_saved_teacher_is_reused(tmp_path: Path, every_method: tuple[Path, dict]) -> None:
    first, values = every_method
    out = tmp_path / "again"
    argv = ["compare", "--dataset", "digits", "--methods", "kd", "--quick", "-q"]
    assert cli.main([*argv, "--teacher", str(first / "teacher.pt"), "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["rows"][0]["accuracy"] == values["rows"][0]["accuracy"]
    assert again["rows"][0]["nll"] == pytest.approx(values["rows"][0]["nll"], rel=1e-6)
    assert again["settings"]["teacher"] == "mlp:256,256"


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-bkd: error: ") and len(err.splitlines()) == 1
    return err


def test_bad_input_lists_the_valid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x")
    err = _error(["compare", "--dataset", "digits", "--methods", "kd,mcmc", "--out", out], capsys)
    assert "mcmc" in err and all(method in err for method in COMPARE_METHODS)
    err = _error(["compare", "--dataset", "imagenet", "--out", out], capsys)
    assert "digits" in err and "cifar10-subset" in err
    err = _error(["compare", "--dataset", "digits", "--teacher", "nope.pt", "--out", out], capsys)
    assert "--teacher" in err
    three_classes = tmp_path / "three.pt"
    save_teacher(
        three_classes,
        models.build("mlp", 3, in_features=64, hidden=(4,)),
        arch="mlp:4",
        input_shape=(64,),
        dataset="digits",
        objective="mll",
        class_names=("a", "b", "c"),
    )
    argv = ["compare", "--dataset", "digits", "--quick", "--teacher", str(three_classes)]
    assert "has 3 classes, digits has 10" in _error([*argv, "--out", out, "-q"], capsys)
    assert not Path(out).exists()  # nothing written before the input was checked
    with pytest.raises(ValueError, match="unknown method 'mcmc'; valid: student, kd"):
        run_compare(CompareOptions(dataset="digits", out=out, methods=("mcmc",)))
