"""MCMI teachers: few-shot and zero-shot distillation by KD and BKD (SPEC §6).

For each data set this script

1. trains a teacher by maximum likelihood (MLL), then an MCMI teacher by fine-tuning a copy of
   it on ``CE - lam_cmi KL(P_x || Q_y)`` with the centroids ``Q_y`` fixed at the MLL teacher's
   (``lam_cmi = 0.2``, SGD with a cosine schedule, a few epochs), and reports the test accuracy
   and the plug-in train CMI of both;
2. from each teacher distils students in the few-shot settings (a stratified fraction of the
   training set, ``--fractions``) and the zero-shot settings (every example of ``k`` classes
   removed, ``--omit k``; the omitted classes are the first ``k`` of 3, 1, 5, 7, ...), over
   ``--seeds`` (the seed draws the few-shot subset, the student's initial weights, its batches
   and the sampler's noise; the teachers are trained once per data set, with seed 0):

   - KD: Hinton KD, ``tau = 4``, ``alpha = 0.9``, ``c = tau^2`` (loss ``0.1 CE + 0.9 tau^2 KL``),
     Adam, with the weight decay that matches the BKD weight prior ``Normal(0, 1)``;
   - BKD: :class:`pyro_bkd.BKDModel` with ``strength = strength_from_alpha(0.9, 4)`` (= 144),
     two chains of :func:`pyro_bkd.sample`'s default sampler dispersed around the KD student's
     weights (SGHMC, its step size and metric adapted in warm-up from the curvature of the
     posterior, so no step is set by hand: the earlier fixed ``eps = s / N`` diverged on the
     CIFAR CNN), a short run and the posterior-mean prediction ``mean_s q^(s)(x)``; a run
     that blows up is counted as failed, never averaged;

3. prints two Markdown tables (teachers; students: mean ± sd test accuracy over the seeds, and
   for zero-shot also the accuracy on the test examples of the omitted classes) and the wall
   time; ``--out FILE`` writes them atomically into ``FILE`` between the markers
   ``<!-- mcmi_fewshot:begin -->`` and ``<!-- mcmi_fewshot:end -->`` (appended when the file
   has no markers yet), so the rest of the file is kept.

Default run: MNIST (10k train / 2k test, stratified, flattened; teacher MLP 784-256-256-10,
student MLP 784-64-10) and the CIFAR-10 subset (4k / 1k, standardised; teacher ``small_cnn``
width 16, student ``small_cnn`` width 8), seeds 0 1 2, fractions 0.05 0.1 0.25 1.0, omit 1 3.
``--quick`` is a smoke run of under a minute (tiny subsets, one seed, few steps), e.g.
``python examples/mcmi_fewshot.py --quick --datasets digits``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from pyro_bkd import (
    BKDModel,
    ConvergenceWarning,
    DistillationData,
    NonFiniteError,
    cmi,
    fit_map,
    models,
    sample,
    strength_from_alpha,
)
from pyro_bkd.data.loaders import (
    Dataset,
    load_cifar10_subset,
    load_digits,
    load_mnist,
    standardize,
)
from pyro_bkd.data.splits import few_shot_indices, zero_shot_indices
from pyro_bkd.distill import accuracy
from pyro_bkd.report import mean_sd, write_marked_section
from pyro_bkd.teachers import teacher_logits, train_teacher

TEMPERATURE = 4.0
ALPHA = 0.9
PRIOR_SCALE = 1.0
CMI_WEIGHT = 0.2
#: Omitted classes of the zero-shot settings: ``--omit k`` removes the first ``k`` of these.
OMIT_ORDER: tuple[int, ...] = (3, 1, 5, 7, 9, 0, 2, 4, 6, 8)
MARKER = "mcmi_fewshot"  # docs/results.md section: <!-- mcmi_fewshot:begin/end -->
DATASETS: tuple[str, ...] = ("mnist", "cifar10-subset", "digits")


@dataclass(frozen=True)
class Config:
    """Architectures and budgets of one data set."""

    teacher: str
    teacher_kwargs: dict
    student: str
    student_kwargs: dict
    train_size: int | None  # stratified subsample of the training set (None: all)
    test_size: int | None
    teacher_epochs: int
    teacher_lr: float
    mcmi_epochs: int
    mcmi_lr: float
    kd_steps: int  # optimiser steps of a KD student (epochs = ceil(steps * batch / N))
    kd_lr: float
    chain_batch: int | None  # None: full batch
    chain_warmup: int
    chain_draws: int
    chain_thin: int
    batch_size: int = 128


CONFIGS: dict[str, Config] = {
    "mnist": Config(
        teacher="mlp",
        teacher_kwargs={"in_features": 784, "hidden": (256, 256)},
        student="mlp",
        student_kwargs={"in_features": 784, "hidden": (64,)},
        train_size=10_000,
        test_size=2_000,
        teacher_epochs=10,
        teacher_lr=0.05,
        mcmi_epochs=5,
        mcmi_lr=0.01,
        kd_steps=600,
        kd_lr=1e-3,
        chain_batch=None,
        chain_warmup=100,
        chain_draws=20,
        chain_thin=5,
    ),
    "cifar10-subset": Config(
        teacher="small_cnn",
        teacher_kwargs={"in_channels": 3, "width": 16},
        student="small_cnn",
        student_kwargs={"in_channels": 3, "width": 8},
        train_size=None,
        test_size=None,
        teacher_epochs=12,
        teacher_lr=0.02,
        mcmi_epochs=4,
        mcmi_lr=0.005,
        kd_steps=120,
        kd_lr=2e-3,
        chain_batch=128,
        chain_warmup=40,
        chain_draws=10,
        chain_thin=4,
    ),
    "digits": Config(
        teacher="mlp",
        teacher_kwargs={"in_features": 64, "hidden": (128, 128)},
        student="mlp",
        student_kwargs={"in_features": 64, "hidden": (16,)},
        train_size=None,
        test_size=None,
        teacher_epochs=30,
        teacher_lr=0.05,
        mcmi_epochs=5,
        mcmi_lr=0.01,
        kd_steps=300,
        kd_lr=3e-3,
        chain_batch=None,
        chain_warmup=100,
        chain_draws=20,
        chain_thin=5,
    ),
}


def quick_config(config: Config) -> Config:
    """A smoke-run version of ``config``: small subsets and few steps."""
    return replace(
        config,
        train_size=None if config.train_size is None else min(config.train_size, 1000),
        test_size=None if config.test_size is None else min(config.test_size, 300),
        teacher_epochs=min(config.teacher_epochs, 10),
        mcmi_epochs=2,
        kd_steps=min(config.kd_steps, 100),
        chain_warmup=10,
        chain_draws=5,
        chain_thin=2,
    )


def load(name: str, config: Config) -> Dataset:
    """The data set ``name``, subsampled (stratified, seed 0) to the sizes of ``config``."""
    if name == "mnist":
        data = load_mnist(flatten=True)
    elif name == "cifar10-subset":
        data = standardize(load_cifar10_subset())
    elif name == "digits":
        data = load_digits()
    else:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    if config.train_size is not None and config.train_size < len(data.y_train):
        idx = few_shot_indices(data.y_train, config.train_size / len(data.y_train), seed=0)
        data = replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])
    if config.test_size is not None and config.test_size < len(data.y_test):
        idx = few_shot_indices(data.y_test, config.test_size / len(data.y_test), seed=0)
        data = replace(data, x_test=data.x_test[idx], y_test=data.y_test[idx])
    return data


def build(name: str, kwargs: dict, num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(name, num_classes, **kwargs)


def train_mll_teacher(
    data: Dataset, config: Config, progress: bool, device: str | None = None
) -> nn.Module:
    """The MLL teacher: ``config.teacher`` trained by maximum likelihood (seed 0)."""
    mll = build(config.teacher, config.teacher_kwargs, data.num_classes, seed=0)
    train_teacher(
        mll,
        data.x_train,
        data.y_train,
        objective="mll",
        epochs=config.teacher_epochs,
        lr=config.teacher_lr,
        batch_size=config.batch_size,
        seed=0,
        device=device,
        progress=progress,
    )
    return mll


def fine_tune_mcmi(
    mll: nn.Module,
    data: Dataset,
    config: Config,
    epochs: int,
    cmi_weight: float,
    progress: bool,
    device: str | None = None,
) -> nn.Module:
    """A copy of ``mll`` fine-tuned ``epochs`` epochs by MCMI (log-likelihood plus
    ``cmi_weight`` times the CMI, fixed centroids; seed 0)."""
    mcmi = copy.deepcopy(mll)
    train_teacher(
        mcmi,
        data.x_train,
        data.y_train,
        objective="mcmi",
        epochs=epochs,
        lr=config.mcmi_lr,
        batch_size=config.batch_size,
        cmi_weight=cmi_weight,
        centroids="fixed",
        seed=0,
        device=device,
        progress=progress,
    )
    return mcmi


def train_teachers(data: Dataset, config: Config, progress: bool) -> dict[str, dict]:
    """MLL teacher and MCMI teacher (a fine-tuned copy); their accuracy, CMI and logits."""
    mll = train_mll_teacher(data, config, progress)
    mcmi = fine_tune_mcmi(mll, data, config, config.mcmi_epochs, CMI_WEIGHT, progress)
    teachers = {}
    for label, net in (("MLL", mll), ("MCMI", mcmi)):
        logits = teacher_logits(net, data.x_train)
        teachers[label] = {
            "logits": logits,
            "acc": accuracy(net, data.x_test, data.y_test),
            "cmi": cmi(logits.double().softmax(-1), data.y_train).item(),
        }
    return teachers


def settings(fractions: Sequence[float], omit: Sequence[int]) -> list[tuple[str, object]]:
    """``("few", fraction)`` and ``("zero", omitted classes)`` in report order."""
    out: list[tuple[str, object]] = [("few", f) for f in fractions]
    out += [("zero", tuple(sorted(OMIT_ORDER[:k]))) for k in omit]
    return out


def setting_label(kind: str, value: object) -> str:
    if kind == "few":
        return f"few-shot {100 * value:g}%"
    return "zero-shot omit {" + ",".join(str(c) for c in value) + "}"


def distil(
    data: Dataset,
    config: Config,
    logits: torch.Tensor,
    idx: torch.Tensor,
    seed: int,
    progress: bool,
) -> tuple[dict[str, torch.Tensor | None], str]:
    """KD student and BKD posterior mean on the training examples ``idx``: their test
    predictions, and the BKD chains' verdict (``"converged"``, ``"borderline"``, ``"not
    converged"``; ``"failed"`` when they blew up).

    BKD: 2 chains of :func:`pyro_bkd.sample`'s default sampler (SGHMC, step adapted in
    warm-up) dispersed around the KD student; its predictions are ``None`` when the chains
    blew up (reported as failed, never averaged)."""
    x, y, t = data.x_train[idx], data.y_train[idx], logits[idx]
    n = len(idx)
    student = build(config.student, config.student_kwargs, data.num_classes, seed=seed)
    epochs = max(1, math.ceil(config.kd_steps * config.batch_size / n))
    model = BKDModel(
        student,
        temperature=TEMPERATURE,
        strength=strength_from_alpha(ALPHA, TEMPERATURE),
        prior_scale=PRIOR_SCALE,
    )
    fit_map(  # KD = the MAP of the model (alpha = lam / (lam + tau^2) = ALPHA)
        model,
        DistillationData(x, y, t),
        epochs=epochs,
        batch_size=min(config.batch_size, n),
        lr=config.kd_lr,
        optimizer="adam",
        seed=seed,
        progress=False,
    )
    with torch.no_grad():
        kd_pred = torch.cat([student(b).argmax(-1) for b in torch.split(data.x_test, 512)])
    warm = {k: v.detach().clone() for k, v in student.named_parameters()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # short chains, by design
            result = sample(
                model,
                DistillationData(x, y, t),
                num_samples=config.chain_draws,
                warmup_steps=config.chain_warmup,
                thin=config.chain_thin,
                num_chains=2,
                batch_size=None if config.chain_batch is None else min(config.chain_batch, n),
                x_test=data.x_test,
                warm_start=warm,
                seed=seed,
                progress=progress,
            )
    except NonFiniteError as error:
        print(f"BKD failed: {error}", flush=True)
        return {"KD": kd_pred, "BKD": None}, "failed"
    bkd_pred = result.probs.mean(dim=(0, 1)).argmax(-1)
    verdict = "failed" if result.convergence is None else str(result.convergence.status)
    return {"KD": kd_pred, "BKD": bkd_pred}, verdict


def run(args: argparse.Namespace) -> str:
    progress = args.progress
    teacher_rows, student_rows = [], []
    for name in args.datasets:
        config = CONFIGS[name]
        if args.quick:
            config = quick_config(config)
        data = load(name, config)
        start = time.perf_counter()
        teachers = train_teachers(data, config, progress)
        print(f"[{name}] teachers trained in {time.perf_counter() - start:.1f} s", flush=True)
        for label, info in teachers.items():
            teacher_rows.append(
                f"| {name} | {label} | {100 * info['acc']:.2f} | {info['cmi']:.4f} |"
            )
        for kind, value in settings(args.fractions, args.omit):
            start = time.perf_counter()
            results: dict[tuple[str, str, str], list[float]] = {}
            failed: dict[tuple[str, str], int] = {}
            omitted_test = None
            if kind == "zero":
                omitted_test = torch.isin(data.y_test, torch.tensor(value))
            for seed in args.seeds:
                if kind == "few":
                    idx = few_shot_indices(data.y_train, value, seed=seed)
                else:
                    idx = zero_shot_indices(data.y_train, value)
                for label, info in teachers.items():
                    preds, _ = distil(data, config, info["logits"], idx, seed, progress)
                    for method, pred in preds.items():
                        if pred is None:
                            failed[(label, method)] = failed.get((label, method), 0) + 1
                            continue
                        hits = (pred == data.y_test).double()
                        results.setdefault((label, method, "all"), []).append(hits.mean().item())
                        if omitted_test is not None:
                            omitted_acc = hits[omitted_test].mean().item()
                            results.setdefault((label, method, "omit"), []).append(omitted_acc)
            for label in teachers:
                cells = [
                    with_failures(results.get((label, m, "all"), []), failed.get((label, m), 0))
                    for m in ("KD", "BKD")
                ]
                cells += [mean_sd(results.get((label, m, "omit"), []), 100) for m in ("KD", "BKD")]
                row = [name, setting_label(kind, value), label, *cells]
                student_rows.append("| " + " | ".join(row) + " |")
            elapsed = time.perf_counter() - start
            print(f"[{name}] {setting_label(kind, value)} done in {elapsed:.1f} s", flush=True)
            print("\n".join(student_rows[-len(teachers) :]), flush=True)
    teacher_table = [
        "| data set | teacher | test acc (%) | train CMI (nats) |",
        "|---|---|---|---|",
        *teacher_rows,
    ]
    student_table = [
        "| data set | setting | teacher | KD acc (%) | BKD acc (%) "
        "| KD omitted-class acc (%) | BKD omitted-class acc (%) |",
        "|---|---|---|---|---|---|---|",
        *student_rows,
    ]
    return "\n".join(teacher_table) + "\n\n" + "\n".join(student_table) + "\n"


def with_failures(accuracies: list[float], failures: int) -> str:
    """``mean ± sd`` (in %) of the runs that finished, and how many failed."""
    cell = mean_sd(accuracies, 100)
    return cell if not failures else f"{cell} ({failures} failed)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--fractions", nargs="+", type=float, default=None)
    parser.add_argument("--omit", nargs="+", type=int, default=None, help="omitted-class counts")
    parser.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to write into")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    args = parser.parse_args(argv)
    defaults = {
        "datasets": ["digits"] if args.quick else ["mnist", "cifar10-subset"],
        "seeds": [0] if args.quick else [0, 1, 2],
        "fractions": [0.1, 1.0] if args.quick else [0.05, 0.1, 0.25, 1.0],
        "omit": [1] if args.quick else [1, 3],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions must be in (0, 1]")
    if any(not 0 < k < 10 for k in args.omit):
        parser.error("--omit counts must be in 1..9")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tables = run(args)
    wall = time.perf_counter() - start
    command = "python examples/mcmi_fewshot.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    block = (
        f"Command: `{command.strip()}` ({args.threads} thread(s)); "
        f"seeds {args.seeds}; BKD: pyro_bkd.sample's default sampler, 2 chains; "
        f"wall time {wall:.0f} s ({wall / 60:.1f} min).\n\n{tables}"
    )
    print(tables)
    print(f"wall time: {wall:.1f} s", flush=True)
    if args.out is not None:
        write_marked_section(args.out, MARKER, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
