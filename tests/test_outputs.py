"""Outputs complete or absent (staged folders, manifest, leftovers, full disk) and numerical
faults reported as such (NaN predictions, diverged KD training)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_bkd import _atomic, cli
from pyro_bkd.distill import train_student_kd
from pyro_bkd.pipeline import FitOptions, run_fit
from pyro_bkd.predictive import predict_probs

N, D, K, M = 40, 3, 3, 12
#: A fit that ends in about a second.
QUICK = {"method": "map", "steps": 3, "warm_epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ``fit`` input with N = 40 < the default batch size 128."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(N, D)).astype(np.float32),
        y_train=rng.integers(0, K, size=N),
        teacher_logits_train=rng.normal(size=(N, K)).astype(np.float32),
        x_test=rng.normal(size=(M, D)).astype(np.float32),
    )
    return path


def test_staged_output_moves_a_complete_set_with_its_manifest(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with _atomic.staged_output(out, {"seed": 0}) as staging:
        (staging / "a.txt").write_text("a0")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("b0")
        assert not out.exists()
    manifest = json.loads((out / _atomic.MANIFEST).read_text())
    assert manifest["run"]["seed"] == 0 and sorted(manifest["files"]) == ["a.txt", "sub/b.txt"]
    (out / "user.txt").write_text("kept")
    with _atomic.staged_output(out, {"seed": 1}) as staging:
        (staging / "a.txt").write_text("a1")
    assert (out / "a.txt").read_text() == "a1" and (out / "user.txt").read_text() == "kept"
    run = json.loads((out / _atomic.MANIFEST).read_text())["run"]
    assert run["seed"] == 1 and run["id"] != manifest["run"]["id"]
    assert sorted(p.name for p in tmp_path.joinpath("new").iterdir()) == ["out"]


def test_failed_run_leaves_nothing_and_leftovers_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), _atomic.staged_output(out, {}) as staging:
        (staging / "half.nc").write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # the parents it created are gone too
    out.mkdir(parents=True)
    dead = out.parent / f".out.{2**22 + 12345}-deadbeef{_atomic.STAGING_SUFFIX}"
    dead.mkdir()
    (out / ".posterior.nc.0123.tmp").write_bytes(b"torn")
    with _atomic.staged_output(out, {}) as staging:
        (staging / "x").write_text("x")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == [_atomic.MANIFEST, "x"]


def test_full_disk_is_a_clean_error_without_partial_files(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as raised:
        cli.main(["fit", "--data", str(npz), "--out", str(out), "--method", "map", "--steps",
                  "3", "--warm-epochs", "1", "-q"])  # fmt: skip
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough free space to write posterior.nc" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fit_with_fewer_examples_than_the_batch_size(npz: Path, tmp_path: Path) -> None:
    values = run_fit(FitOptions(data=str(npz), out=str(tmp_path / "out"), **QUICK))
    assert values["settings"]["batch_size"] == N
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [_atomic.MANIFEST, "metrics.json", "posterior.nc"]


class _NaNAtNegative(torch.nn.Module):
    """A linear student whose logits are NaN where the first feature is negative."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(D, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        return torch.where(x[:, :1] < 0, torch.nan, logits)


def test_nan_predictions_are_an_error() -> None:
    student = _NaNAtNegative()
    draws = {name: p.detach()[None, None] for name, p in student.named_parameters()}
    x = torch.ones(5, D)
    x[3, 0] = -1.0
    with pytest.raises(FloatingPointError, match=r"at 1 of 5 test inputs \(first: input 3\)"):
        predict_probs(student, draws, x)


def test_diverged_kd_blames_the_learning_rate() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(N, D) * 100, torch.randint(0, K, (N,))
    with pytest.raises(FloatingPointError, match="learning rate lr = 1e\\+30 is too large"):
        train_student_kd(torch.nn.Linear(D, K), x, y, torch.randn(N, K), epochs=3, lr=1e30,
                         progress=False)  # fmt: skip


def test_compare_num_train_below_the_class_count(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["compare", "--dataset", "digits", "--num-train", "3", "--out",
                  str(tmp_path / "o"), "--quick", "-q"])  # fmt: skip
    assert raised.value.code == 2
    assert "--num-train must be at least the number of classes (10" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_garbage_teacher_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i, data in enumerate((b"garbage" * 10, b"", b"PK\x03\x04" + os.urandom(64))):
        path = tmp_path / f"teacher{i}.pt"
        path.write_bytes(data)
        with pytest.raises(SystemExit) as raised:
            cli.main(["compare", "--dataset", "digits", "--teacher", str(path), "--out",
                      str(tmp_path / "o"), "--quick", "-q"])  # fmt: skip
        assert raised.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path} is not a teacher checkpoint of pyro-bkd" in err[0]
