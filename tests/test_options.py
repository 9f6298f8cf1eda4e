"""Each job's options dataclass checks itself when it is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyro_bkd import InputError
from pyro_bkd.pipeline import CompareOptions, DemoOptions, FitOptions, TeacherOptions


@pytest.mark.parametrize(
    ("options", "required", "bad", "flag"),
    [
        (FitOptions, {"data": "d.npz"}, {"num_samples": 0}, "--num-samples"),
        (FitOptions, {"data": "d.npz"}, {"temperature": float("nan")}, "--temperature"),
        (FitOptions, {"data": "d.npz"}, {"alpha": 1.0}, "--alpha"),
        (FitOptions, {"data": "d.npz"}, {"dropout": 1.5}, "--dropout"),
        (FitOptions, {"data": "d.npz"}, {"distributed": "ring"}, "--distributed"),
        (FitOptions, {"data": "d.npz"}, {"method": "map", "checkpoint": "c"}, "--checkpoint"),
        (TeacherOptions, {"dataset": "digits"}, {"epochs": 0}, "--epochs"),
        (TeacherOptions, {"dataset": "digits"}, {"finetune_lr": -1.0}, "--finetune-lr"),
        (TeacherOptions, {"dataset": "digits"}, {"data_root": "d"}, "--data-root"),
        (CompareOptions, {"dataset": "digits"}, {"num_train": 1}, "--num-train"),
        (CompareOptions, {"dataset": "digits"}, {"methods": ()}, "--methods"),
        (DemoOptions, {}, {"seed": -1}, "--seed"),
        (DemoOptions, {}, {"out": ""}, "--out"),
    ],
)
def test_a_bad_value_is_refused_on_construction_naming_the_flag(
    options: type, required: dict, bad: dict, flag: str, tmp_path: Path
) -> None:
    given = {"out": str(tmp_path / "o"), **required}
    options(**given)  # the good values pass
    with pytest.raises(InputError, match=flag):
        options(**{**given, **bad})
    assert not (tmp_path / "o").exists()  # checking writes nothing


def test_options_are_frozen_so_they_stay_checked(tmp_path: Path) -> None:
    options = DemoOptions(out=str(tmp_path / "o"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = -1  # type: ignore[misc]
