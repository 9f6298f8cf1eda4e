"""pyro_bkd.pipeline.stages and .presets: the stages compare and demo share, and their presets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pyro_bkd.pipeline import DEMO, PRESETS, CompareOptions, quick
from pyro_bkd.pipeline.presets import DEMO_QUICK, QUICK_BUDGET
from pyro_bkd.pipeline.stages import load_data, obtain_teacher, run_stages


def _tiny() -> tuple:
    """Digits cut to 60 training and 20 test inputs, a linear teacher of one epoch."""
    preset = replace(quick(PRESETS["digits"]), teacher="linear", num_train=60, num_test=20)
    dataset = load_data("digits", None, 0, preset)
    teacher = obtain_teacher(None, preset, dataset, 0, torch.device("cpu"), False, print)
    return preset, dataset, teacher


def test_quick_presets_and_the_options_overrides() -> None:
    # the demo is compare on digits, with more draws for a usable verdict
    assert replace(DEMO, budget=replace(DEMO.budget, num_samples=200)) == PRESETS["digits"]
    assert DEMO.budget.num_samples == 600
    assert DEMO_QUICK.num_test == 60 and DEMO_QUICK.num_train is None  # all training inputs
    assert DEMO_QUICK.teacher_epochs == 1 and DEMO_QUICK.student == DEMO.student
    assert (DEMO_QUICK.budget.chains, DEMO_QUICK.budget.num_samples) == (4, 8)
    compare = quick(PRESETS["mnist"])
    assert compare.budget == QUICK_BUDGET and (compare.num_train, compare.num_test) == (256, 64)
    options = CompareOptions(dataset="mnist", out="unused", num_test=7, quick=True)
    assert options.plan().num_test == 7 and options.plan().num_train == 256
    budget = replace(QUICK_BUDGET, chains=3)
    assert CompareOptions(dataset="digits", out="x", budget=budget).plan().budget.chains == 3


def test_load_data_cuts_to_the_preset_sizes_with_every_class() -> None:
    preset, dataset, _ = _tiny()
    assert dataset.x_train.shape[0] == 60 and dataset.x_test.shape[0] == 20
    assert dataset.y_train.unique().numel() == dataset.num_classes  # stratified
    with pytest.raises(ValueError, match="--num-train must be at least the number of classes"):
        load_data("digits", None, 0, replace(preset, num_train=5))


def test_run_stages_records_a_failure_or_raises_it() -> None:
    """SGLD with a step of 50 runs away (as in test_compare): with ``keep_going`` the failure
    is the method's row and the next method still runs; without, it is raised."""
    preset, dataset, teacher = _tiny()
    preset = replace(preset, budget=replace(QUICK_BUDGET, step_size=50.0))
    options = {"seed": 0, "device": torch.device("cpu"), "progress": False, "log": print}
    study = run_stages(dataset, teacher, preset, ("kd", "sgld", "map"), **options)
    assert study.rows["sgld"]["status"] == "failed" and "sgld" not in study.outputs
    assert study.outputs["map"].probs.shape == (1, 1, 20, 10)
    assert study.outputs["kd"].probs.shape == (1, 1, 20, 10) and "student" not in study.rows
    with pytest.raises(FloatingPointError, match="potential"):
        run_stages(dataset, teacher, preset, ("kd", "sgld"), keep_going=False, **options)
