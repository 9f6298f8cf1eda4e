"""The ``demo`` job: the whole BKD workflow on scikit-learn's digits, in about two minutes.

Teacher by maximum likelihood, a small student trained alone, by KD and as the MAP of
:class:`~pyro_bkd.BKDModel`, then BKD by the default sampler with its convergence verdict;
metrics, plots, ``posterior.nc`` and a report that opens with the verdict.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_bkd import __version__, export, metrics, models, plots, uq
from pyro_bkd._torch import network_logits, seeded
from pyro_bkd.data import DistillationData, add_input_noise, load_dataset
from pyro_bkd.distill import fit_map
from pyro_bkd.infer.driver import DEFAULT_METHOD, sample
from pyro_bkd.infer.svi import fit_svi
from pyro_bkd.infer.verdict import ConvergenceWarning
from pyro_bkd.kd import strength_from_alpha
from pyro_bkd.model import BKDModel
from pyro_bkd.pipeline.common import (
    DEFAULT_KD_ALPHA,
    Log,
    check_count,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
    point_metrics,
    point_probs,
    posterior_figures,
    quiet,
    resolve_device,
    save_posterior,
    seconds,
    summary_of_point,
    write_figures,
    write_json,
)
from pyro_bkd.pipeline.options import OUT_HELP, SEED_HELP, integer, option
from pyro_bkd.predictive import predict_probs
from pyro_bkd.report import write_report
from pyro_bkd.teachers import teacher_logits, train_teacher

#: Input-noise levels of the robustness test (SPEC §5).
NOISE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class DemoBudget:
    """How long each stage of :func:`run_demo` trains or samples."""

    teacher_epochs: int = 40
    teacher_lr: float = 0.05
    student_epochs: int = 60
    student_lr: float = 3e-3
    batch_size: int = 128
    #: The BKD sampler; ``warmup``/``thin`` ``None``: its defaults in :func:`pyro_bkd.sample`.
    method: str = DEFAULT_METHOD
    num_samples: int = 200
    warmup: int | None = None
    thin: int | None = None
    chains: int = 4
    #: Use only the first ``test_size`` test inputs (``None``: all); R-hat per entry is slow.
    test_size: int | None = None


#: The full demo: about 1-2 minutes on two CPU cores.
FULL_BUDGET = DemoBudget()
#: ``--quick``: a few seconds, for tests; the numbers mean nothing.
QUICK_BUDGET = DemoBudget(
    teacher_epochs=1, student_epochs=1, num_samples=8, warmup=20, thin=1, chains=4, test_size=60
)

DEMO_TEACHER_HIDDEN = (256, 256)
DEMO_STUDENT_HIDDEN = (32,)
DEMO_TEMPERATURE = 4.0
DEMO_ALPHA = DEFAULT_KD_ALPHA
DEMO_PRIOR_SCALE = 1.0
#: Rows and order of the demo's metric table.
DEMO_METHODS: tuple[str, ...] = ("teacher", "student_alone", "kd", "map", "bkd")


@dataclass(frozen=True)
class DemoOptions:
    """Options of :func:`run_demo` (the ``demo`` subcommand), checked at construction
    (:class:`~pyro_bkd.InputError` naming the flag); each field but ``device`` and
    ``progress`` is also a flag of ``pyro-bkd demo`` (:mod:`pyro_bkd.pipeline.options`)."""

    out: str | os.PathLike[str] = option(help=OUT_HELP)
    seed: int = option(0, type=integer, help=SEED_HELP)
    quick: bool = option(
        False,
        action="store_true",
        help="a tiny budget (seconds, for tests); numbers mean nothing",
    )
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_count("--seed", self.seed)
        check_out_dir(self.out)


def run_demo(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    quick: bool = False,
    device: str | None = None,
    progress: bool = True,
    log: Log = quiet,
) -> dict[str, Any]:
    """The main job on scikit-learn's digits; writes ``out/{posterior.nc, metrics.json,
    plots/*.png, report.html, report.md}`` and returns the metrics.

    Teacher: MLP 64-256-256-10 by maximum likelihood. Students: MLP 64-32-10 from one
    initialisation, trained alone (cross entropy), by KD (``tau = 4``, ``alpha = 0.9``,
    ``c = tau^2``) and as the MAP of :class:`~pyro_bkd.BKDModel` with the matching strength
    ``lam = alpha tau^2 / (1 - alpha) = 144`` (SVI with a delta guide, same batches and
    learning rate: it should agree with KD), each with the weight decay of the
    ``Normal(0, 1)`` weight prior. BKD: 4 chains of the default sampler of
    :func:`pyro_bkd.sample`, dispersed around the KD student, class probabilities at the test
    inputs and, for the robustness test, at noisy test inputs; the convergence verdict is
    logged, stored in ``metrics.json`` and opens the report.
    """
    DemoOptions(out, seed=seed, quick=quick, device=device, progress=progress)  # checks them
    dev = resolve_device(device)
    run = {"command": "pyro-bkd demo", "seed": seed, "quick": quick}
    with output_folder(out, run) as out_dir:  # moved into place once complete
        return _demo_into(out_dir, Path(out).absolute().name, seed, quick, dev, progress, log)


@dataclass(frozen=True)
class _DemoData:
    """The digits split of the demo: training data with teacher logits, the test inputs."""

    dataset: Any
    train: DistillationData
    x_test: torch.Tensor
    y_test: torch.Tensor
    t_test: torch.Tensor

    @property
    def shape(self) -> str:
        """``D_in`` and ``K`` of the networks' names."""
        return f"{self.train.x.shape[1]}-%s-{self.dataset.num_classes}"


@dataclass(frozen=True)
class _DemoRun:
    """What the student, MAP and BKD stages of the demo share; ``methods`` collects the rows."""

    data: _DemoData
    strength: float
    budget: DemoBudget
    options: dict[str, Any]  # seed, device, progress
    methods: dict[str, dict[str, Any]]
    log: Log

    def unpacked(self) -> tuple:
        return self.data, self.strength, self.budget, self.options, self.methods, self.log


def _demo_into(
    out_dir: Path, name: str, seed: int, quick: bool, dev: torch.device, progress: bool, log: Log
) -> dict[str, Any]:
    """The work of :func:`run_demo` once its options are checked, stage by stage (teacher,
    students alone and by KD, MAP, BKD, outputs); writes into ``out_dir``."""
    budget = QUICK_BUDGET if quick else FULL_BUDGET
    start = time.perf_counter()
    methods: dict[str, dict[str, Any]] = {}
    log("loading scikit-learn digits (8x8 images, 10 classes)")
    dataset = load_dataset("digits", seed=seed)
    data, methods["teacher"] = _demo_teacher(dataset, budget, seed, dev, progress, log)
    strength = strength_from_alpha(DEMO_ALPHA, DEMO_TEMPERATURE)
    options = {"seed": seed, "device": dev, "progress": progress}
    run = _DemoRun(data, strength, budget, options, methods, log)
    kd_student = _demo_students(run)
    kd_probs = point_probs(network_logits(kd_student, data.x_test))
    map_probs = _demo_map(run)
    result, bkd_model = _demo_bkd(run, kd_student)

    log("[5/5] robustness to input noise, plots, posterior.nc, metrics.json, report")
    noise = _noise_test(bkd_model.student, result.weights, kd_student, data.x_test, seed)
    plot_files = _demo_plots(
        out_dir, result.probs, kd_probs, data.y_test, noise, dataset.class_names
    )
    idata = _demo_inference_data(data, result)
    values = {
        "command": "demo",
        "dataset": dataset.name,
        "quick": quick,
        "seed": seed,
        "num_train": len(data.train),
        "num_test": int(data.x_test.shape[0]),
        "num_classes": dataset.num_classes,
        "verdict": result.convergence.message,
        "methods": {name: methods[name] for name in DEMO_METHODS},
        "settings": _demo_settings(strength, budget, dev),
        "checks": {
            "map_vs_kd_max_abs_prob_diff": float((map_probs - kd_probs).abs().max()),
            "noise_md_rises_bkd": bool(np.all(np.diff(noise["bkd_mean"]) > 0)),
            "noise_md_rises_kd": bool(np.all(np.diff(noise["kd_mean"]) > 0)),
        },
        "noise": {
            "levels": list(NOISE_LEVELS),
            "bkd_mean_deviance": noise["bkd_mean"],
            "kd_2x_entropy": noise["kd_mean"],
        },
        "plots": plot_files,
        "wall_seconds": seconds(start),
    }
    values = clean(values)
    save_posterior(idata, out_dir / "posterior.nc")
    write_json(out_dir / "metrics.json", values)
    write_report(out_dir, name=name)
    return values


def _demo_teacher(
    dataset: Any, budget: DemoBudget, seed: int, dev: torch.device, progress: bool, log: Log
) -> tuple[_DemoData, dict[str, Any]]:
    """[1/5] The MLP teacher by maximum likelihood; its logits and its row."""
    x_train, y_train = dataset.x_train, dataset.y_train
    x_test, y_test = dataset.x_test[: budget.test_size], dataset.y_test[: budget.test_size]
    num_classes, in_features = dataset.num_classes, x_train.shape[1]
    log(f"[1/5] teacher: MLP {in_features}-256-256-{num_classes}, {budget.teacher_epochs} epochs")
    stage = time.perf_counter()
    with seeded(seed):
        teacher = models.build(
            "mlp", num_classes, in_features=in_features, hidden=DEMO_TEACHER_HIDDEN
        )
    train_teacher(
        teacher,
        x_train,
        y_train,
        objective="mll",
        epochs=budget.teacher_epochs,
        lr=budget.teacher_lr,
        batch_size=budget.batch_size,
        seed=seed,
        device=dev,
        progress=progress,
    )
    t_train = teacher_logits(teacher, x_train)
    t_test = teacher_logits(teacher, x_test)
    row = {
        **point_metrics(t_test, y_test),
        "weights": num_weights(teacher),
        "wall_seconds": seconds(stage),
    }
    data = _DemoData(dataset, DistillationData(x_train, y_train, t_train), x_test, y_test, t_test)
    return data, row


def _demo_student(data: _DemoData, seed: int) -> nn.Module:
    """The demo's student MLP, initialised from ``seed + 1`` (the same for every student)."""
    with seeded(seed + 1):
        return models.build(
            "mlp",
            data.dataset.num_classes,
            in_features=data.train.x.shape[1],
            hidden=DEMO_STUDENT_HIDDEN,
        )


def _demo_students(run: _DemoRun) -> nn.Module:
    """[2/5] The student alone and by KD (:func:`~pyro_bkd.distill.fit_map`, lam = 0 and
    lam); their rows; returns the KD student."""
    data, strength, budget, options, methods, log = run.unpacked()
    train_options = {
        "epochs": budget.student_epochs,
        "batch_size": budget.batch_size,
        "lr": budget.student_lr,
        **options,
    }
    log(
        f"[2/5] student alone and by KD: MLP {data.shape % 32}, {budget.student_epochs} epochs each"
    )
    stage = time.perf_counter()
    alone = fit_map(
        BKDModel(_demo_student(data, options["seed"]), DEMO_TEMPERATURE, 0.0, DEMO_PRIOR_SCALE),
        DistillationData(data.train.x, data.train.y),
        **train_options,
    ).student
    methods["student_alone"] = {
        **point_metrics(network_logits(alone, data.x_test), data.y_test),
        "weights": num_weights(alone),
        "wall_seconds": seconds(stage),
    }
    stage = time.perf_counter()
    kd_student = fit_map(
        BKDModel(
            _demo_student(data, options["seed"]), DEMO_TEMPERATURE, strength, DEMO_PRIOR_SCALE
        ),
        data.train,
        alpha=DEMO_ALPHA,
        **train_options,
    ).student
    methods["kd"] = {
        **point_metrics(network_logits(kd_student, data.x_test), data.y_test),
        "weights": num_weights(kd_student),
        "wall_seconds": seconds(stage),
    }
    return kd_student


def _demo_map(run: _DemoRun) -> torch.Tensor:
    """[3/5] The MAP of the BKD model by SVI with a delta guide, from a fresh student; its row
    and its test probabilities."""
    data, strength, budget, options, methods, log = run.unpacked()
    log(f"[3/5] MAP of BKDModel (lam = {strength:g}) by SVI with a delta guide")
    stage = time.perf_counter()
    student = _demo_student(data, options["seed"])
    map_model = BKDModel(student, DEMO_TEMPERATURE, strength, DEMO_PRIOR_SCALE)
    map_model = map_model.to(options["device"])
    steps_per_epoch = -(-len(data.train) // budget.batch_size)
    map_fit = fit_svi(
        map_model,
        data.train,
        guide="delta",
        num_steps=budget.student_epochs * steps_per_epoch,
        batch_size=budget.batch_size,
        lr=budget.student_lr,
        seed=options["seed"],
        progress=options["progress"],
    )
    map_probs = map_fit.probs(data.x_test, 1)
    methods["map"] = {
        **summary_of_point(map_probs, data.y_test),
        "weights": num_weights(map_model.student),
        "wall_seconds": seconds(stage),
    }
    return map_probs


def _demo_bkd(run: _DemoRun, kd_student: nn.Module) -> tuple[Any, BKDModel]:
    """[4/5] BKD: chains of ``budget.method`` dispersed around the KD student; its row."""
    data, strength, budget, options, methods, log = run.unpacked()
    log(
        f"[4/5] BKD by {budget.method}: {budget.chains} chains x {budget.num_samples} draws, "
        "dispersed around the KD student"
    )
    stage = time.perf_counter()
    bkd_model = BKDModel(copy.deepcopy(kd_student), DEMO_TEMPERATURE, strength, DEMO_PRIOR_SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the verdict is logged below
        result = sample(
            bkd_model,
            data.train,
            method=budget.method,
            num_samples=budget.num_samples,
            warmup_steps=budget.warmup,
            thin=budget.thin,
            num_chains=budget.chains,
            batch_size=None,  # full-batch gradients: N = 1,347 (see FULL_BATCH_MAX)
            x_test=data.x_test,
            keep_weights=True,
            warm_start=None,
            **options,
        )
    assert result.convergence is not None
    log(f"verdict: {result.convergence.message}")
    assert result.probs is not None and result.weights is not None
    sampling_seconds = seconds(stage)
    methods["bkd"] = {
        **metrics.summarize(result.probs, data.y_test),
        "method": budget.method,
        "convergence": result.convergence.to_dict(),
        "draws": int(result.probs.shape[0] * result.probs.shape[1]),
        "step_size": result.config["step_size"],
        "weights": num_weights(bkd_model.student),
        "sampling_seconds": sampling_seconds,
        "wall_seconds": seconds(stage),
    }
    return result, bkd_model


def _demo_inference_data(data: _DemoData, result: Any) -> Any:
    """The BKD draws as ArviZ InferenceData (``posterior.nc``)."""
    return export.to_inference_data(
        result.probs,
        y_test=data.y_test,
        teacher_probs=data.t_test.softmax(-1),
        sample_stats=result.sample_stats,
        posterior=result.weights,
        class_names=list(data.dataset.class_names),
        attrs={
            **result.config,
            "sampling_seconds": result.wall_seconds,
            "dataset": data.dataset.name,
            "teacher": f"mlp {data.shape % '256-256'} (MLL)",
            "student": f"mlp {data.shape % 32}",
            "kd_alpha": DEMO_ALPHA,
            "warm_start": "kd, dispersed",
            "command": "pyro-bkd demo",
        },
    )


def _demo_settings(strength: float, budget: DemoBudget, dev: torch.device) -> dict[str, Any]:
    """The ``settings`` of the demo's ``metrics.json``."""
    return {
        "temperature": DEMO_TEMPERATURE,
        "kd_alpha": DEMO_ALPHA,
        "kd_convention": "tau2",
        "strength": strength,
        "prior_scale": DEMO_PRIOR_SCALE,
        **{f"budget_{k}": v for k, v in asdict(budget).items()},
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "version": __version__,
    }


def _noise_test(
    student: nn.Module,
    weights: Mapping[str, torch.Tensor],
    kd_student: nn.Module,
    x_test: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    """Mean deviance per test input at each noise level: BKD draws vs ``2 H(q_KD)``."""
    bkd, kd = [], []
    for level in NOISE_LEVELS:
        noisy = add_input_noise(x_test, level, seed=seed)
        bkd.append(uq.mean_deviance(predict_probs(student, weights, noisy)))
        kd.append(uq.mean_deviance(point_probs(network_logits(kd_student, noisy))))
    bkd_array, kd_array = np.stack(bkd), np.stack(kd)
    return {
        "bkd": bkd_array,
        "kd": kd_array,
        "bkd_mean": bkd_array.mean(axis=1).tolist(),
        "kd_mean": kd_array.mean(axis=1).tolist(),
    }


def _demo_plots(
    out_dir: Path,
    bkd_probs: torch.Tensor,
    kd_probs: torch.Tensor,
    y_test: torch.Tensor,
    noise: Mapping[str, Any],
    class_names: tuple[str, ...],
) -> list[str]:
    """Write the demo's figures (:func:`~pyro_bkd.pipeline.common.posterior_figures` of the
    BKD draws, KD against BKD ranking, deviance under noise); returns their paths relative to
    the run directory."""
    figures = {
        **posterior_figures(bkd_probs, "bkd", y=y_test, class_names=class_names),
        "ranking_kd_vs_bkd": lambda: plots.ranking_curves(
            {"KD (2 x entropy)": kd_probs, "BKD (mean deviance)": bkd_probs}, y_test
        ),
        "deviance_vs_noise": lambda: plots.deviance_vs_noise(
            NOISE_LEVELS,
            {"BKD mean deviance": noise["bkd"], "KD 2 x entropy": noise["kd"]},
            xlabel="input noise level (sd of Gaussian noise added to pixels in [0, 1])",
        ),
    }
    return write_figures(out_dir, figures)
