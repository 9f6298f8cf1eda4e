"""The ``teacher`` job: train an MLL or MCMI teacher (SPEC §6) and save it with its logits."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_bkd import __version__, _atomic
from pyro_bkd._checks import InputError
from pyro_bkd.cmi import cmi
from pyro_bkd.data import Dataset, load_dataset
from pyro_bkd.pipeline.common import (
    Log,
    build_student,
    check_count,
    check_number,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
    point_metrics,
    quiet,
    resolve_device,
    seconds,
    write_json,
)
from pyro_bkd.pipeline.options import DATA_ROOT_HELP, OUT_HELP, SEED_HELP, integer, number, option
from pyro_bkd.teachers import OBJECTIVES, teacher_logits, train_teacher

TEACHER_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10-subset")


@dataclass(frozen=True)
class TeacherOptions:
    """Options of :func:`run_teacher` (the ``teacher`` subcommand).

    Each field is also a flag of ``pyro-bkd teacher`` (:mod:`pyro_bkd.pipeline.options`); the
    values are checked at construction (:class:`~pyro_bkd.InputError` naming the flag).
    """

    dataset: str = option(choices=TEACHER_DATASETS)
    out: str = option(help=OUT_HELP)
    objective: str = option("mll", choices=OBJECTIVES, help="(mll)")
    cmi_weight: float = option(
        0.2, type=number, help="lam_cmi of the MCMI loss CE - lam_cmi KL(P_x || Q_y) (0.2)"
    )
    epochs: int = option(
        20, type=integer, help="epochs of the objective (mcmi: of the fine-tuning) (20)"
    )
    mll_epochs: int | None = option(
        None, type=integer, help="mcmi only: epochs of the MLL pre-training (default: --epochs)"
    )
    arch: str = option("mlp", help="teacher network, names as for fit's --student (mlp)")
    data_root: str | None = option(None, help=DATA_ROOT_HELP)
    test_only: bool = option(
        False,
        action="store_true",
        help="mnist/fashion-mnist: split the official test images when the train files are missing",
    )
    lr: float = option(0.05, type=number, help="SGD learning rate of MLL (0.05)")
    finetune_lr: float = option(
        0.01, type=number, help="SGD learning rate of the MCMI fine-tuning (0.01)"
    )
    batch_size: int = option(128, type=integer, help="(128)")
    seed: int = option(0, type=integer, help=SEED_HELP)
    save_inputs: bool = option(
        True,
        flag="--no-inputs",
        action="store_false",
        help="leave x_train/x_test out of teacher_logits.npz (smaller file, not fit-ready)",
    )
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Raise :class:`~pyro_bkd.InputError` naming the first option out of range."""
        if self.dataset not in TEACHER_DATASETS:
            raise InputError(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(TEACHER_DATASETS)}"
            )
        if self.objective not in OBJECTIVES:
            raise InputError(
                f"unknown objective {self.objective!r}; valid: {', '.join(OBJECTIVES)}"
            )
        check_out_dir(self.out)
        check_count("--epochs", self.epochs)
        if self.mll_epochs is not None:
            check_count("--mll-epochs", self.mll_epochs)
        check_number("--cmi-weight", self.cmi_weight)
        check_number("--lr", self.lr)
        check_number("--finetune-lr", self.finetune_lr)
        check_count("--batch-size", self.batch_size)
        check_count("--seed", self.seed)
        if self.dataset == "digits" and self.data_root is not None:
            raise InputError("digits ships with scikit-learn; --data-root does not apply")
        if self.test_only and self.dataset not in ("mnist", "fashion-mnist"):
            raise InputError("--test-only applies to mnist and fashion-mnist only")


#: Entries of a ``teacher.pt`` that :func:`teacher_from_checkpoint` needs.
CHECKPOINT_KEYS = frozenset({"arch", "num_classes", "input_shape", "state_dict"})
#: Most input features per example accepted from a checkpoint (an example is allocated).
MAX_INPUT_SIZE = 10**7


def run_teacher(options: TeacherOptions, log: Log = quiet) -> dict[str, Any]:
    """Train a teacher by MLL, or by MLL then MCMI fine-tuning (SPEC §6); returns the metrics.

    ``mll``: ``epochs`` epochs of SGD (momentum 0.9, weight decay 5e-4, cosine schedule from
    ``lr``). ``mcmi``: ``mll_epochs`` (default ``epochs``) such epochs, then ``epochs`` epochs
    of MCMI fine-tuning from ``finetune_lr`` with ``cmi_weight`` and the class centroids fixed
    at the MLL teacher's. Writes ``out/teacher.pt`` (architecture and state dict),
    ``out/teacher_logits.npz`` (``x_train``, ``y_train``, ``teacher_logits_train``, ``x_test``,
    ``y_test``, ``teacher_logits_test``: a ready input of ``fit``; without the inputs when
    ``save_inputs`` is false) and ``out/metrics.json`` (test accuracy, NLL, ECE, Brier; train
    accuracy and CMI).
    """
    dev = resolve_device(options.device)
    start = time.perf_counter()
    dataset = _teacher_dataset(options)
    x_train, y_train = dataset.x_train, dataset.y_train
    teacher = build_student(options.arch, x_train, dataset.num_classes, seed=options.seed)
    log(
        f"{dataset.name}: {x_train.shape[0]} train / {dataset.x_test.shape[0]} test examples "
        f"of shape {tuple(x_train.shape[1:])}, {dataset.num_classes} classes; teacher "
        f"{options.arch} ({num_weights(teacher)} weights)"
    )
    values = _train_the_teacher(teacher, dataset, options, dev, log)
    logits_train = teacher_logits(teacher, x_train)
    logits_test = teacher_logits(teacher, dataset.x_test)
    if not (torch.isfinite(logits_train).all() and torch.isfinite(logits_test).all()):
        raise FloatingPointError(
            f"teacher training diverged (NaN or inf logits): --lr {options.lr:g} or "
            f"--finetune-lr {options.finetune_lr:g} is too large"
        )
    values.update(point_metrics(logits_test, dataset.y_test))
    values["train_accuracy"] = float((logits_train.argmax(-1) == y_train).double().mean())
    values["cmi"] = _train_cmi(teacher, x_train, y_train, dataset.num_classes)
    values.update(_teacher_settings(options, teacher, dataset, dev))
    arrays = {
        "y_train": y_train.numpy(),
        "teacher_logits_train": logits_train.numpy(),
        "y_test": dataset.y_test.numpy(),
        "teacher_logits_test": logits_test.numpy(),
    }
    if options.save_inputs:
        arrays = {"x_train": x_train.numpy(), "x_test": dataset.x_test.numpy(), **arrays}
    values["wall_seconds"] = seconds(start)
    values = clean(values)
    run = {"command": "pyro-bkd teacher", "seed": options.seed, "objective": options.objective}
    with output_folder(options.out, run) as out_dir:  # moved into place once complete
        _write_teacher(out_dir, teacher, options, dataset, arrays, values)
    return values


def _teacher_dataset(options: TeacherOptions) -> Dataset:
    """The data set of ``options`` (digits split by ``seed``; ``test_only`` passed on)."""
    loader_options: dict[str, Any] = {}
    if options.test_only:
        loader_options["test_only"] = True
    if options.dataset == "digits":
        loader_options["seed"] = options.seed
    return load_dataset(options.dataset, options.data_root, **loader_options)


def _mll_epochs(options: TeacherOptions) -> int:
    """Epochs of the MLL stage: ``mll_epochs`` (default ``epochs``) before MCMI, else ``epochs``."""
    if options.objective == "mcmi":
        return options.mll_epochs or options.epochs
    return options.epochs


def _train_the_teacher(
    teacher: nn.Module, dataset: Dataset, options: TeacherOptions, dev: torch.device, log: Log
) -> dict[str, Any]:
    """MLL training, then MCMI fine-tuning for ``mcmi``; the MLL teacher's CMI and accuracy."""
    x_train, y_train = dataset.x_train, dataset.y_train
    common = {"batch_size": options.batch_size, "seed": options.seed, "device": dev}
    mll_epochs = _mll_epochs(options)
    log(f"MLL training: {mll_epochs} epochs")
    train_teacher(
        teacher,
        x_train,
        y_train,
        objective="mll",
        epochs=mll_epochs,
        lr=options.lr,
        progress=options.progress,
        **common,
    )
    values: dict[str, Any] = {"command": "teacher", "dataset": dataset.name}
    if options.objective == "mcmi":
        values["cmi_mll"] = _train_cmi(teacher, x_train, y_train, dataset.num_classes)
        values["accuracy_mll"] = point_metrics(
            teacher_logits(teacher, dataset.x_test), dataset.y_test
        )["accuracy"]
        log(f"MCMI fine-tuning: {options.epochs} epochs, cmi weight {options.cmi_weight:g}")
        train_teacher(
            teacher,
            x_train,
            y_train,
            objective="mcmi",
            epochs=options.epochs,
            lr=options.finetune_lr,
            cmi_weight=options.cmi_weight,
            progress=options.progress,
            **common,
        )
    return values


def _teacher_settings(
    options: TeacherOptions, teacher: nn.Module, dataset: Dataset, dev: torch.device
) -> dict[str, Any]:
    """The run's settings recorded in ``metrics.json``."""
    mcmi = options.objective == "mcmi"
    return {
        "objective": options.objective,
        "arch": options.arch,
        "weights": num_weights(teacher),
        "epochs": options.epochs,
        "mll_epochs": _mll_epochs(options) if mcmi else None,
        "cmi_weight": options.cmi_weight if mcmi else None,
        "lr": options.lr,
        "finetune_lr": options.finetune_lr if mcmi else None,
        "num_train": int(dataset.x_train.shape[0]),
        "num_test": int(dataset.x_test.shape[0]),
        "num_classes": dataset.num_classes,
        "seed": options.seed,
        "device": str(dev),
        "version": __version__,
    }


def _write_teacher(
    out_dir: Path,
    teacher: nn.Module,
    options: TeacherOptions,
    dataset: Dataset,
    arrays: dict[str, np.ndarray],
    values: dict[str, Any],
) -> None:
    """``teacher.pt``, ``teacher_logits.npz`` and ``metrics.json`` of :func:`run_teacher`."""
    save_teacher(
        out_dir / "teacher.pt",
        teacher,
        arch=options.arch,
        input_shape=tuple(dataset.x_train.shape[1:]),
        dataset=dataset.name,
        objective=options.objective,
        class_names=dataset.class_names,
    )
    with (
        _atomic.atomic_path(out_dir / "teacher_logits.npz") as temporary,
        open(temporary, "xb") as handle,
    ):
        np.savez_compressed(handle, **arrays)
    write_json(out_dir / "metrics.json", values)


def save_teacher(
    path: str | os.PathLike[str],
    teacher: nn.Module,
    *,
    arch: str,
    input_shape: tuple[int, ...],
    dataset: str,
    objective: str,
    class_names: tuple[str, ...],
) -> None:
    """Write ``teacher`` (its architecture name ``arch``, as for :func:`build_student`, and its
    state dict on the CPU) to ``path`` atomically; :func:`load_teacher` reads it back."""
    checkpoint = {
        "arch": arch,
        "num_classes": len(class_names),
        "input_shape": list(input_shape),
        "dataset": dataset,
        "objective": objective,
        "class_names": list(class_names),
        "state_dict": {name: value.detach().cpu() for name, value in teacher.state_dict().items()},
        "version": __version__,
    }
    with _atomic.atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def load_teacher(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a teacher saved by :func:`run_teacher` or :func:`save_teacher` (``teacher.pt``),
    in eval mode."""
    return teacher_from_checkpoint(read_teacher_checkpoint(path))


def read_teacher_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict :func:`save_teacher` wrote (``arch``, ``num_classes``, ``input_shape``, ...).

    Loaded without running code (``weights_only``). A file that is not such a checkpoint is an
    :class:`~pyro_bkd.InputError` naming it; OS errors (missing, unreadable) propagate.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # torch reports a foreign file by many exception types
        raise _not_a_teacher(path, f"{type(error).__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or not checkpoint.keys() >= CHECKPOINT_KEYS:
        raise _not_a_teacher(path, f"it lacks the entries {', '.join(sorted(CHECKPOINT_KEYS))}")
    shape = checkpoint["input_shape"]
    if not (
        isinstance(checkpoint["arch"], str)
        and isinstance(checkpoint["num_classes"], int)
        and isinstance(shape, list)
        and all(isinstance(size, int) and size > 0 for size in shape)
        and math.prod(shape) <= MAX_INPUT_SIZE
        and isinstance(checkpoint["state_dict"], dict)
    ):
        raise _not_a_teacher(path, "its entries have the wrong types or sizes")
    checkpoint["path"] = os.fspath(path)
    return checkpoint


def teacher_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """The teacher network of a :func:`read_teacher_checkpoint` dict, in eval mode."""
    path = checkpoint.get("path", "the teacher checkpoint")
    example = torch.zeros(2, *checkpoint["input_shape"])
    try:
        teacher = build_student(checkpoint["arch"], example, checkpoint["num_classes"])
        teacher.load_state_dict(checkpoint["state_dict"])
    except (InputError, RuntimeError) as error:
        raise _not_a_teacher(path, str(error).splitlines()[0]) from None
    return teacher.eval()


def _not_a_teacher(path: str | os.PathLike[str], reason: str) -> InputError:
    return InputError(f"{os.fspath(path)} is not a teacher checkpoint of pyro-bkd: {reason}")


def _train_cmi(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    probs = teacher_logits(teacher, x).double().softmax(-1)
    return float(cmi(probs, y, num_classes))
