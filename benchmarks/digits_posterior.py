"""The digits BKD posteriors of the mixing benchmark and the exact reference.

``build(width, strength)``: scikit-learn digits (1,347 train / 450 test, pixels in [0, 1]),
a teacher MLP 64-256-256-10 trained by maximum likelihood (40 epochs, as the demo), and
``num_starts`` KD students MLP 64-``width``-10 (``tau = 4``, ``alpha = lam / (lam + 16)``, the
weight decay of the ``Normal(0, 1)`` prior, 60 epochs of Adam), student ``s`` initialised
from seed ``100 + s``: distinct optima of the posterior, the chains' starts. Everything is
seeded, so the posterior is the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_bkd import BKDModel, DistillationData, fit_map, models
from pyro_bkd.data import load_dataset
from pyro_bkd.teachers import teacher_logits, train_teacher

TEMPERATURE = 4.0
PRIOR_SCALE = 1.0


@dataclass(frozen=True)
class DigitsPosterior:
    model: BKDModel  # around the first KD student
    data: DistillationData
    x_test: torch.Tensor
    y_test: torch.Tensor
    starts: dict[str, torch.Tensor]  # KD optima, {name: [num_starts, ...]}


def build(width: int, strength: float, num_starts: int = 8, seed: int = 0) -> DigitsPosterior:
    dataset = load_dataset("digits", seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = models.build("mlp", 10, in_features=64, hidden=(256, 256))
    train_teacher(
        teacher,
        dataset.x_train,
        dataset.y_train,
        objective="mll",
        epochs=40,
        lr=0.05,
        batch_size=128,
        seed=seed,
        progress=False,
    )
    t_train = teacher_logits(teacher, dataset.x_train)
    data = DistillationData(dataset.x_train, dataset.y_train, t_train)
    students = []
    for s in range(num_starts):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + s)
            student = models.build("mlp", 10, in_features=64, hidden=(width,))
        fit_map(  # KD = the MAP of the model: alpha = lam / (lam + tau^2)
            BKDModel(student, TEMPERATURE, strength, PRIOR_SCALE),
            data,
            epochs=60,
            batch_size=128,
            lr=3e-3,
            seed=seed + s,
            progress=False,
        )
        students.append(student)
    starts = {
        name: torch.stack([dict(st.named_parameters())[name].detach() for st in students])
        for name, _ in students[0].named_parameters()
    }
    model = BKDModel(students[0], TEMPERATURE, strength, PRIOR_SCALE)
    return DigitsPosterior(model, data, dataset.x_test, dataset.y_test, starts)


def build_preset(dataset: str, strength: float = 144.0, seed: int = 0) -> DigitsPosterior:
    """The BKD posterior of ``pyro-bkd compare --dataset <dataset>``'s preset (MNIST: MLP
    784-32-10 student on a 10,000-image stratified subset; Fashion-MNIST: ``small_cnn:4`` on
    10,000 images), teacher trained as the preset says, one KD student (the preset's epochs)
    as the warm start. No exact reference exists for these (full-batch HMC is too costly)."""
    from pyro_bkd.data import few_shot_indices
    from pyro_bkd.pipeline.common import build_student
    from pyro_bkd.pipeline.presets import PRESETS

    preset = PRESETS[dataset]
    data = load_dataset(dataset)
    if preset.standardize:
        from pyro_bkd.data import standardize

        data = standardize(data)
    x, y = data.x_train, data.y_train
    if preset.num_train is not None and preset.num_train < x.shape[0]:
        keep = few_shot_indices(y, preset.num_train / x.shape[0], seed=seed)
        x, y = x[keep], y[keep]
    x_test, y_test = data.x_test[: preset.num_test], data.y_test[: preset.num_test]
    teacher = build_student(preset.teacher, x, data.num_classes, seed=seed)
    train_teacher(
        teacher,
        x,
        y,
        objective="mll",
        epochs=preset.teacher_epochs,
        lr=preset.teacher_lr,
        batch_size=128,
        seed=seed,
        progress=False,
    )
    t_train = teacher_logits(teacher, x)
    student = build_student(preset.student, x, data.num_classes, seed=seed + 1)
    model = BKDModel(student, TEMPERATURE, strength, PRIOR_SCALE)
    train = DistillationData(x, y, t_train)
    fit_map(  # KD = the MAP of the model: alpha = lam / (lam + tau^2)
        model,
        train,
        epochs=preset.budget.kd_epochs,
        batch_size=128,
        lr=preset.budget.lr,
        seed=seed,
        progress=False,
    )
    starts = {name: p.detach()[None] for name, p in student.named_parameters()}
    return DigitsPosterior(model, train, x_test, y_test, starts)
