"""Options declared once: each job's options dataclass checks itself and is its command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyro_bkd import InputError
from pyro_bkd.cli import build_parser, options_from
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


@pytest.mark.parametrize(
    ("argv", "options", "given"),
    [
        (["fit", "--data", "d.npz"], FitOptions, {"data": "d.npz"}),
        (["teacher", "--dataset", "digits"], TeacherOptions, {"dataset": "digits"}),
        (["compare", "--dataset", "digits"], CompareOptions, {"dataset": "digits"}),
        (["demo"], DemoOptions, {}),
    ],
)
def test_the_command_line_defaults_are_the_dataclass_defaults(
    argv: list[str], options: type, given: dict, tmp_path: Path
) -> None:
    out = str(tmp_path / "o")
    args = build_parser().parse_args([*argv, "--out", out])
    parsed = options_from(options, args, progress=not args.quiet)
    assert parsed == options(out=out, device="auto", **given)


def test_renamed_and_grouped_flags_reach_their_fields(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    args = build_parser().parse_args(
        ["teacher", "--dataset", "digits", "--no-inputs", "--out", out]
    )
    assert options_from(TeacherOptions, args).save_inputs is False
    args = build_parser().parse_args(["fit", "--data", "d", "--out", out, "--strength", "2"])
    assert options_from(FitOptions, args).strength == 2.0
    with pytest.raises(SystemExit):  # --alpha and --strength are mutually exclusive
        build_parser().parse_args(
            ["fit", "--data", "d", "--out", out, "--alpha", ".5", "--strength", "2"]
        )
