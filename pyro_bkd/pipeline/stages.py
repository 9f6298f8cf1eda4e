"""The stages that ``compare`` and ``demo`` compose: data -> teacher -> students -> methods.

:func:`load_data` and :func:`obtain_teacher` run before a job opens its output folder (a bad
input or a failed teacher leaves nothing behind); :func:`run_stages` then computes the teacher
logits, trains the student alone and by KD (the MAP of :class:`~pyro_bkd.BKDModel`,
:func:`~pyro_bkd.distill.fit_map`) and runs each inference method of
:mod:`~pyro_bkd.pipeline.methods` from the KD student, collecting one :class:`Study`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from pyro_bkd._checks import InputError
from pyro_bkd._torch import network_logits
from pyro_bkd.data import Dataset, DistillationData, few_shot_indices, load_dataset, standardize
from pyro_bkd.kd import strength_from_alpha
from pyro_bkd.pipeline.common import Log, build_student, num_weights, point_probs, seconds
from pyro_bkd.pipeline.methods import MethodInputs, MethodOutput, run_method
from pyro_bkd.pipeline.presets import KD_ALPHA, PRIOR_SCALE, TEMPERATURE, MethodBudget, Preset
from pyro_bkd.pipeline.teacher import read_teacher_checkpoint, teacher_from_checkpoint
from pyro_bkd.teachers import teacher_logits, train_teacher

#: Rows that are not inference methods: the student trained alone and the KD student.
POINT_METHODS: tuple[str, ...] = ("student", "kd")


@dataclass
class Study:
    """What the stages produced: the inputs every method started from, and by method its
    ``rows`` (wall time; ``status``/``reason`` of a failure) and ``outputs`` (its draws)."""

    dataset: Dataset
    teacher: nn.Module
    teacher_arch: str
    t_test: torch.Tensor
    inputs: MethodInputs
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, MethodOutput] = field(default_factory=dict)


def load_data(name: str, data_root: str | None, seed: int, preset: Preset) -> Dataset:
    """Data set ``name``, standardised if the preset says so, cut to the preset's
    ``num_train`` (a stratified subset, at least one example per class) and ``num_test`` (the
    first test inputs)."""
    loader_options: dict[str, Any] = {"seed": seed} if name == "digits" else {}
    dataset = load_dataset(name, data_root, **loader_options)
    if preset.standardize:
        dataset = standardize(dataset)
    x_train, y_train = dataset.x_train, dataset.y_train
    num_train = preset.num_train
    if num_train is not None and num_train < dataset.num_classes:
        raise InputError(
            f"--num-train must be at least the number of classes ({dataset.num_classes} in "
            f"{dataset.name}: one example of each), got {num_train}"
        )
    if num_train is not None and num_train < x_train.shape[0]:
        keep = few_shot_indices(y_train, num_train / x_train.shape[0], seed=seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = dataset.x_test[: preset.num_test], dataset.y_test[: preset.num_test]
    return replace(dataset, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def obtain_teacher(
    teacher_file: str | None,
    preset: Preset,
    dataset: Dataset,
    seed: int,
    device: torch.device,
    progress: bool,
    log: Log,
) -> tuple[nn.Module, str]:
    """``(teacher, its architecture name)``: loaded from ``teacher_file`` (checked against the
    data) or ``preset.teacher`` trained by maximum likelihood."""
    if teacher_file is not None:
        log(f"teacher: loading {teacher_file}")
        checkpoint = read_teacher_checkpoint(teacher_file)
        teacher = teacher_from_checkpoint(checkpoint).to(device)
        _check_teacher_fits(teacher, teacher_file, dataset)
        return teacher, str(checkpoint["arch"])
    x_train = dataset.x_train
    teacher = build_student(preset.teacher, x_train, dataset.num_classes, seed=seed)
    log(
        f"{dataset.name}: {x_train.shape[0]} train / {dataset.x_test.shape[0]} test; teacher "
        f"{preset.teacher} ({num_weights(teacher)} weights), {preset.teacher_epochs} epochs"
    )
    train_teacher(
        teacher,
        x_train,
        dataset.y_train,
        objective="mll",
        epochs=preset.teacher_epochs,
        lr=preset.teacher_lr,
        seed=seed,
        device=device,
        progress=progress,
    )
    return teacher, preset.teacher


def _check_teacher_fits(teacher: nn.Module, teacher_file: str, dataset: Dataset) -> None:
    """``InputError`` unless the loaded teacher takes the data's inputs and has its classes."""
    try:
        logits = teacher_logits(teacher, dataset.x_train[:2])
    except RuntimeError as error:
        raise InputError(
            f"--teacher {teacher_file!r} does not accept {dataset.name} inputs of shape "
            f"{tuple(dataset.x_train.shape[1:])}: {str(error).splitlines()[0]}"
        ) from None
    if logits.shape[1] != dataset.num_classes:
        raise InputError(
            f"--teacher {teacher_file!r} has {logits.shape[1]} classes, "
            f"{dataset.name} has {dataset.num_classes}"
        )


def run_stages(
    dataset: Dataset,
    teacher: tuple[nn.Module, str],
    preset: Preset,
    methods: Sequence[str],
    *,
    seed: int,
    device: torch.device,
    progress: bool,
    log: Log,
    keep_weights: bool = False,
    keep_going: bool = True,
) -> Study:
    """Teacher logits (the ``teacher`` row), the point students (:func:`train_students`), then
    every other method of ``methods`` (:func:`run_methods`), all on ``BKDModel(tau = 4,
    lam = 144, sigma = 1)`` with ``preset.budget``."""
    stage = time.perf_counter()
    t_train = teacher_logits(teacher[0], dataset.x_train)
    t_test = teacher_logits(teacher[0], dataset.x_test)
    inputs = _method_inputs(preset, dataset, t_train, seed, device, progress, keep_weights)
    study = Study(dataset, teacher[0], teacher[1], t_test, inputs)
    study.rows["teacher"] = {"wall_seconds": seconds(stage)}
    study.outputs["teacher"] = _point_output(t_test, "teacher")
    train_students(study, preset, methods, log)
    run_methods(study, [m for m in methods if m not in POINT_METHODS], preset, log, keep_going)
    return study


def _method_inputs(
    preset: Preset,
    dataset: Dataset,
    t_train: torch.Tensor,
    seed: int,
    device: torch.device,
    progress: bool,
    keep_weights: bool,
) -> MethodInputs:
    """What every method starts from; ``warm_student`` is the fresh student that
    :func:`train_students` trains by KD before any method copies it."""
    x_train, num_classes = dataset.x_train, dataset.num_classes

    def new_student(student_seed: int) -> nn.Module:
        return build_student(preset.student, x_train, num_classes, seed=student_seed)

    return MethodInputs(
        new_student=new_student,
        warm_student=new_student(seed),
        train=DistillationData(x_train, dataset.y_train, t_train),
        x_test=dataset.x_test,
        temperature=TEMPERATURE,
        strength=strength_from_alpha(KD_ALPHA, TEMPERATURE),
        prior_scale=PRIOR_SCALE,
        seed=seed,
        device=device,
        progress=progress,
        keep_weights=keep_weights,
    )


def train_students(study: Study, preset: Preset, methods: Sequence[str], log: Log) -> None:
    """The ``student`` row (trained alone, when asked) and the ``kd`` row (the KD student,
    trained in place: the warm start of the methods), from the same initialisation."""
    inputs, budget = study.inputs, preset.budget
    kd_student = inputs.warm_student
    log(
        f"student {preset.student} ({num_weights(kd_student)} weights): alone and by KD, "
        f"{budget.kd_epochs} epochs each"
    )
    if "student" in methods:
        stage = time.perf_counter()
        alone = inputs.fit_map(inputs.new_student(inputs.seed), budget, alone=True).student
        study.outputs["student"] = _point_output(network_logits(alone, inputs.x_test), "student")
        study.rows["student"] = {"wall_seconds": seconds(stage)}
    stage = time.perf_counter()
    inputs.fit_map(kd_student, budget)
    study.outputs["kd"] = _point_output(network_logits(kd_student, inputs.x_test), "kd")
    study.rows["kd"] = {"wall_seconds": seconds(stage)}


def run_methods(
    study: Study, methods: Sequence[str], preset: Preset, log: Log, keep_going: bool = True
) -> None:
    """Each method from the KD student; with ``keep_going`` a failure (a non-finite
    potential, a student too big for NUTS, out of memory...) is recorded as the method's
    ``failed`` row and the others still run, else it is raised."""
    for method in methods:
        log(f"{method}")
        stage = time.perf_counter()
        try:
            output = run_method(method, study.inputs, _budget_of(method, preset.budget))
        except Exception as error:
            if not keep_going:
                raise
            study.rows[method] = {"status": "failed", "reason": _reason(error)}
            log(f"{method} failed: {study.rows[method]['reason']}")
            continue
        study.outputs[method] = output
        study.rows[method] = {"wall_seconds": seconds(stage)}


def _budget_of(method: str, budget: MethodBudget) -> MethodBudget:
    """``budget``, except for NUTS: no thinning (its draws are nearly independent), at most
    200 warm-up steps and 2 chains (each draw costs up to 2^10 gradient evaluations)."""
    if method != "nuts":
        return budget
    return replace(
        budget, thin=1, warmup=min(budget.warmup or 200, 200), chains=min(budget.chains, 2)
    )


def _point_output(logits: torch.Tensor, method: str) -> MethodOutput:
    """A point prediction from ``logits [N, K]``: one draw of one chain, ``[1, 1, N, K]``."""
    return MethodOutput(point_probs(logits), None, None, {"method": method})


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"
