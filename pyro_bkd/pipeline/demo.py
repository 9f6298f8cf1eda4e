"""The ``demo`` job: ``compare`` on scikit-learn's digits with the demo's methods, then the
noise study, plots and a report, in about five minutes on two CPU cores.

The stages are ``compare``'s (:mod:`~pyro_bkd.pipeline.stages`) with the digits preset and
600 draws per chain (:data:`~pyro_bkd.pipeline.presets.DEMO`): the teacher by maximum
likelihood; a small student trained alone and by KD (the MAP of :class:`~pyro_bkd.BKDModel`);
the MAP by SVI with a delta guide from the KD student; BKD by the default sampler with its
convergence verdict. Then the robustness to input noise, metrics, plots, ``posterior.nc`` and
a report that opens with the verdict.
"""

from __future__ import annotations

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

from pyro_bkd import __version__, export, metrics, plots, uq
from pyro_bkd._torch import network_logits
from pyro_bkd.data import Dataset, add_input_noise
from pyro_bkd.infer.driver import DEFAULT_METHOD
from pyro_bkd.infer.verdict import ConvergenceWarning
from pyro_bkd.pipeline.common import (
    Log,
    check_count,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
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
from pyro_bkd.pipeline.presets import DEMO, DEMO_QUICK, KD_ALPHA, PRIOR_SCALE, TEMPERATURE, Preset
from pyro_bkd.pipeline.stages import Study, load_data, obtain_teacher, run_stages
from pyro_bkd.predictive import predict_probs
from pyro_bkd.report import write_report

#: Input-noise levels of the robustness test (SPEC §5).
NOISE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8)
#: The methods the demo runs, by their ``compare`` names ...
DEMO_STAGES: tuple[str, ...] = ("student", "kd", "map", DEFAULT_METHOD)
#: ... and the rows of its metric table, in order (``metrics.json``'s ``methods``).
ROW_NAMES: dict[str, str] = {
    "teacher": "teacher",
    "student": "student_alone",
    "kd": "kd",
    "map": "map",
    DEFAULT_METHOD: "bkd",
}
DEMO_METHODS: tuple[str, ...] = tuple(ROW_NAMES.values())


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

    ``compare``'s stages on digits (:data:`DEMO_STAGES`): teacher MLP 64-256-256-10 by maximum
    likelihood; students MLP 64-32-10 from one initialisation, trained alone (cross entropy)
    and by KD (``tau = 4``, ``alpha = 0.9``, ``c = tau^2``, the MAP of
    :class:`~pyro_bkd.BKDModel` with ``lam = alpha tau^2 / (1 - alpha) = 144``), each with the
    weight decay of the ``Normal(0, 1)`` weight prior; the MAP by SVI with a delta guide from
    the KD student (it should stay at the KD solution); BKD: 4 chains of the default sampler
    of :func:`pyro_bkd.sample` dispersed around the KD student, class probabilities at the
    test inputs and, for the robustness test, at noisy test inputs. The convergence verdict
    is logged, stored in ``metrics.json`` and opens the report. A failed stage fails the demo.

    ``metrics.json``'s ``checks``: ``map_vs_kd_max_abs_prob_diff``, the largest change of a
    test probability when SVI continues the MAP search from the KD student (0 if KD had
    reached the posterior mode; constant-rate minibatch optimisers hover around it, so expect
    a few hundredths to tenths on single uncertain inputs); ``noise_md_rises_*``, whether the
    mean deviance of BKD and the KD student's ``2 H`` rise at every noise level.
    """
    DemoOptions(out, seed=seed, quick=quick, device=device, progress=progress)  # checks them
    preset = DEMO_QUICK if quick else DEMO
    dev = resolve_device(device)
    start = time.perf_counter()
    log("[1/3] teacher on scikit-learn digits (8x8 images, 10 classes)")
    dataset = load_data("digits", None, seed, preset)
    teacher = obtain_teacher(None, preset, dataset, seed, dev, progress, log)
    teacher_seconds = seconds(start)
    run = {"command": "pyro-bkd demo", "seed": seed, "quick": quick}
    with output_folder(out, run) as out_dir:  # moved into place once complete
        study = _demo_stages(dataset, teacher, preset, seed, dev, progress, log)
        study.rows["teacher"]["wall_seconds"] += teacher_seconds  # its training included
        log("[3/3] robustness to input noise, plots, posterior.nc, metrics.json, report")
        noise = _noise_test(
            study.inputs.warm_student,
            study.outputs[DEFAULT_METHOD].weights,
            study.inputs.x_test,
            seed,
        )
        values = _demo_values(study, preset, quick, seed, noise)
        values["plots"] = _demo_outputs(out_dir, study, noise, preset)
        values["wall_seconds"] = seconds(start)
        values = clean(values)
        write_json(out_dir / "metrics.json", values)
        write_report(out_dir, name=Path(out).absolute().name)
        return values


def _demo_stages(
    dataset: Dataset,
    teacher: tuple[nn.Module, str],
    preset: Preset,
    seed: int,
    dev: torch.device,
    progress: bool,
    log: Log,
) -> Study:
    """[2/3] ``compare``'s stages for :data:`DEMO_STAGES`, keeping the BKD weight draws (for
    the noise study); a failure fails the demo; logs the verdict."""
    log(f"[2/3] students alone and by KD, the MAP, BKD by {DEFAULT_METHOD}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the verdict is logged below
        study = run_stages(
            dataset,
            teacher,
            preset,
            DEMO_STAGES,
            seed=seed,
            device=dev,
            progress=progress,
            log=log,
            keep_weights=True,
            keep_going=False,
        )
    log(f"verdict: {study.outputs[DEFAULT_METHOD].config['convergence']['message']}")
    return study


def _demo_values(
    study: Study, preset: Preset, is_quick: bool, seed: int, noise: Mapping[str, Any]
) -> dict[str, Any]:
    """``metrics.json`` but for the plots and the wall time: the rows, the verdict, the
    settings, the MAP-vs-KD check and the noise study (:func:`_noise_test`)."""
    dataset, outputs = study.dataset, study.outputs
    bkd = outputs[DEFAULT_METHOD]
    kd_probs, map_probs = outputs["kd"].probs, outputs["map"].probs
    return {
        "command": "demo",
        "dataset": dataset.name,
        "quick": is_quick,
        "seed": seed,
        "num_train": len(study.inputs.train),
        "num_test": int(study.inputs.x_test.shape[0]),
        "num_classes": dataset.num_classes,
        "verdict": bkd.config["convergence"]["message"],
        "methods": {ROW_NAMES[m]: _demo_row(study, m) for m in ("teacher", *DEMO_STAGES)},
        "settings": _demo_settings(study, preset),
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
    }


def _demo_row(study: Study, method: str) -> dict[str, Any]:
    """One row of the demo's table: the point metrics (all metrics and the convergence
    verdict for BKD), the network's weights and the stage's wall time."""
    output, y = study.outputs[method], study.dataset.y_test
    network = study.teacher if method == "teacher" else study.inputs.warm_student
    row = {"weights": num_weights(network), "wall_seconds": study.rows[method]["wall_seconds"]}
    if method != DEFAULT_METHOD:
        return {**summary_of_point(output.probs, y), **row}
    return {
        **metrics.summarize(output.probs, y),
        "method": DEFAULT_METHOD,
        "convergence": output.config["convergence"],
        "draws": int(output.probs.shape[0] * output.probs.shape[1]),
        "step_size": output.config["step_size"],
        "sampling_seconds": output.config["sampling_seconds"],
        **row,
    }


def _demo_outputs(
    out_dir: Path, study: Study, noise: Mapping[str, Any], preset: Preset
) -> list[str]:
    """``posterior.nc`` (the BKD draws and weights) and the figures; returns the figures'
    paths relative to the run directory."""
    bkd, y = study.outputs[DEFAULT_METHOD], study.dataset.y_test
    idata = export.to_inference_data(
        bkd.probs,
        y_test=y,
        teacher_probs=study.t_test.softmax(-1),
        sample_stats=bkd.sample_stats,
        posterior=bkd.weights,
        class_names=list(study.dataset.class_names),
        attrs={
            **{k: v for k, v in bkd.config.items() if k != "convergence"},
            "dataset": study.dataset.name,
            "teacher": f"{preset.teacher} (MLL)",
            "student": preset.student,
            "kd_alpha": KD_ALPHA,
            "warm_start": "kd, dispersed",
            "command": "pyro-bkd demo",
        },
    )
    save_posterior(idata, out_dir / "posterior.nc")
    kd_probs = study.outputs["kd"].probs
    return _demo_plots(out_dir, bkd.probs, kd_probs, y, noise, study.dataset.class_names)


def _demo_settings(study: Study, preset: Preset) -> dict[str, Any]:
    """The ``settings`` of the demo's ``metrics.json``."""
    return {
        "temperature": TEMPERATURE,
        "kd_alpha": KD_ALPHA,
        "kd_convention": "tau2",
        "strength": study.inputs.strength,
        "prior_scale": PRIOR_SCALE,
        "teacher": preset.teacher,
        "student": preset.student,
        "teacher_epochs": preset.teacher_epochs,
        "teacher_lr": preset.teacher_lr,
        **{f"budget_{k}": v for k, v in asdict(preset.budget).items()},
        "device": str(study.inputs.device),
        "torch_threads": torch.get_num_threads(),
        "version": __version__,
    }


def _noise_test(
    kd_student: nn.Module,
    weights: Mapping[str, torch.Tensor] | None,
    x_test: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    """Mean deviance per test input at each noise level: the BKD draws ``weights`` of
    ``kd_student``'s network vs ``2 H(q_KD)``."""
    assert weights is not None  # run_stages(keep_weights=True)
    bkd, kd = [], []
    for level in NOISE_LEVELS:
        noisy = add_input_noise(x_test, level, seed=seed)
        bkd.append(uq.mean_deviance(predict_probs(kd_student, weights, noisy)))
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
