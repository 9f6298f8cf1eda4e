"""MCMI dose-response: teacher CMI and accuracy against the CMI weight and the fine-tune length,
then KD and BKD students from teachers across that range (few-shot and zero-shot).

The MCMI paper's mechanism (Ye et al., ICLR 2024; SPEC §6): fine-tuning a maximum-likelihood
(MLL) teacher on ``CE - lam_cmi KL(P_x || Q_y)`` raises its conditional mutual information
``I(X; Yhat | Y)``, and students distilled from a higher-CMI teacher learn more, most in
few-shot and zero-shot distillation. Our earlier single-weight run (``mcmi_fewshot.py``,
``lam_cmi = 0.2``, 5 epochs) *lowered* the MNIST teacher's CMI, so it never tested that. This
script measures the dose first:

1. **Teachers.** An MLL teacher (the configuration of ``mcmi_fewshot.py``, seed 0), then for
   each fine-tune length ``E`` (``--lengths`` epochs) and CMI weight ``w`` (``--weights``) a
   copy fine-tuned on ``CE - w KL(P_x || Q_y)`` with the centroids ``Q_y`` fixed at the MLL
   teacher's (SGD, cosine schedule, the MCMI learning rate of the configuration). ``w = 0`` is
   the control: the same fine-tune without the CMI term, so ``CMI(w, E) - CMI(0, E)`` is the
   effect of the CMI term and ``CMI(w, E) - CMI(MLL)`` that of the whole fine-tune. Reported:
   plug-in CMI (``T = 1``) on the training set and on the test set, test accuracy.
2. **Students.** At the length ``E*`` where the largest weight raises the training CMI most
   above its control (or ``--student-length``), teachers of weights ``--student-weights``
   distil KD and BKD students (``mcmi_fewshot.distil``: KD ``tau = 4``,
   ``alpha = 0.9``; BKD 2 short chains of the default sampler around the KD student,
   posterior-mean prediction, each run's convergence verdict counted) in the few-shot
   (``--fractions``) and zero-shot (``--omit``) settings over ``--seeds``.

Prints the tables (``--out FILE``: between ``<!-- mcmi_dose:begin/end -->``, or the
``--marker`` given) and plots the
training CMI against the weight, one line per length (``--plot FILE``).

CPU run (about 20 minutes on one thread): ``python examples/mcmi_dose_response.py --out
docs/results.md --plot docs/figures/mcmi_dose_cmi.png``. Paper-scale protocol for a GPU
(documented, not run here): ``python examples/mcmi_dose_response.py --paper-scale --device cuda
--datasets cifar10-subset --lengths 20 --seeds 0 1 2`` (teacher ``resnet56`` 240 epochs,
student ``resnet20``, MCMI 20 epochs at lr 0.01, the authors' ``lam_cmi`` range; CIFAR-100
itself is not in the local data). ``--quick --datasets digits`` is the test's smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcmi_fewshot as base

from pyro_bkd import ConvergenceWarning, cmi, plots
from pyro_bkd.data.splits import few_shot_indices, zero_shot_indices
from pyro_bkd.report import mean_sd, write_marked_section
from pyro_bkd.teachers import teacher_logits

MARKER = "mcmi_dose"
PAPER_SCALE = base.Config(
    teacher="resnet56",
    teacher_kwargs={},
    student="resnet20",
    student_kwargs={},
    train_size=None,
    test_size=None,
    teacher_epochs=240,
    teacher_lr=0.05,
    mcmi_epochs=20,
    mcmi_lr=0.01,
    kd_steps=240 * 40,
    kd_lr=1e-3,
    chain_batch=128,
    chain_warmup=2000,
    chain_draws=200,
    chain_thin=20,
)


def measure(net: torch.nn.Module, data: base.Dataset, device: str | None) -> dict:
    """Training and test CMI (plug-in, ``T = 1``) and test accuracy; training logits kept."""
    train_logits = teacher_logits(net, data.x_train, device=device).cpu()
    test_logits = teacher_logits(net, data.x_test, device=device).cpu()
    return {
        "logits": train_logits,
        "train_cmi": cmi(train_logits.double().softmax(-1), data.y_train).item(),
        "test_cmi": cmi(test_logits.double().softmax(-1), data.y_test).item(),
        "acc": (test_logits.argmax(-1) == data.y_test).double().mean().item(),
    }


def teachers(data: base.Dataset, config: base.Config, args: argparse.Namespace) -> dict:
    """``{"mll": info, (length, weight): info}`` for every fine-tune of the grid."""
    mll = base.train_mll_teacher(data, config, args.progress, args.device)
    out = {"mll": measure(mll, data, args.device)}
    for length in args.lengths:
        for weight in args.weights:
            net = base.fine_tune_mcmi(mll, data, config, length, weight, args.progress, args.device)
            out[(length, weight)] = measure(net, data, args.device)
            info = out[(length, weight)]
            print(
                f"[{data.name}] E={length} w={weight:g}: train CMI {info['train_cmi']:.4f}, "
                f"acc {info['acc']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    return out


def student_length(found: dict, args: argparse.Namespace) -> int:
    """``--student-length``, else the length where the largest weight's training CMI exceeds
    its ``w = 0`` control the most."""
    if args.student_length is not None:
        return args.student_length
    top = max(args.weights)
    return max(
        args.lengths, key=lambda e: found[(e, top)]["train_cmi"] - found[(e, 0.0)]["train_cmi"]
    )


def students(
    data: base.Dataset, config: base.Config, found: dict, length: int, args: argparse.Namespace
) -> list[str]:
    """Student rows: KD and BKD accuracy (and omitted-class accuracy) per teacher weight."""
    rows = []
    for kind, value in base.settings(args.fractions, args.omit):
        omitted = torch.isin(data.y_test, torch.tensor(value)) if kind == "zero" else None
        for weight in args.student_weights:
            info = found[(length, weight)]
            results: dict[str, list[float]] = {}
            verdicts: list[str] = []
            for seed in args.seeds:
                if kind == "few":
                    idx = few_shot_indices(data.y_train, value, seed=seed)
                else:
                    idx = zero_shot_indices(data.y_train, value)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    preds, verdict = base.distil(
                        data, config, info["logits"], idx, seed, args.progress
                    )
                verdicts.append(verdict)
                for method, pred in preds.items():
                    if pred is None:
                        continue
                    hits = (pred == data.y_test).double()
                    results.setdefault(method, []).append(hits.mean().item())
                    if omitted is not None:
                        results.setdefault(f"{method} omit", []).append(hits[omitted].mean().item())
            counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
            verdict_cell = ", ".join(f"{v} ({n}/{len(verdicts)})" for v, n in counts.items())
            cells = [
                data.name,
                base.setting_label(kind, value),
                f"{weight:g}",
                f"{info['train_cmi']:.4f}",
                mean_sd(results.get("KD", []), 100),
                mean_sd(results.get("BKD", []), 100),
                mean_sd(results.get("KD omit", []), 100),
                mean_sd(results.get("BKD omit", []), 100),
                verdict_cell,
            ]
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def teacher_rows(name: str, found: dict, args: argparse.Namespace) -> list[str]:
    start = found["mll"]
    rows = [
        f"| {name} | MLL (start) | – | {start['train_cmi']:.4f} | – | – | "
        f"{start['test_cmi']:.4f} | {100 * start['acc']:.2f} |"
    ]
    for length in args.lengths:
        control = found[(length, 0.0)]["train_cmi"]
        for weight in args.weights:
            info = found[(length, weight)]
            rows.append(
                f"| {name} | {length} | {weight:g} | {info['train_cmi']:.4f} | "
                f"{info['train_cmi'] - start['train_cmi']:+.4f} | "
                f"{info['train_cmi'] - control:+.4f} | {info['test_cmi']:.4f} | "
                f"{100 * info['acc']:.2f} |"
            )
    return rows


def plot(curves: dict[str, tuple[list[float], dict[str, list[float]]]], path: Path) -> None:
    """Training CMI against the weight, one line per (data set, length)."""
    for index, (name, (weights, series)) in enumerate(curves.items()):
        lines = {key: value for key, value in series.items() if key != "_start"}
        figure = plots.coverage_vs_strength(
            weights,
            lines,
            xlabel="CMI weight lam_cmi of the fine-tune",
            ylabel="teacher CMI on the training set (nats)",
            title=f"{name}: MCMI dose-response (dashed: the MLL teacher before fine-tuning)",
        )
        axes = figure.axes[0]
        axes.axhline(series["_start"][0], color="black", linestyle="--", label="MLL start")
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        target = path if index == 0 else path.with_name(f"{path.stem}_{name}{path.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=110)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=base.DATASETS, default=None)
    parser.add_argument("--weights", nargs="+", type=float, default=None)
    parser.add_argument("--lengths", nargs="+", type=int, default=None)
    parser.add_argument("--student-weights", nargs="+", type=float, default=None)
    parser.add_argument("--student-length", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--fractions", nargs="+", type=float, default=None)
    parser.add_argument("--omit", nargs="+", type=int, default=None)
    parser.add_argument("--no-students", action="store_true", help="teachers only")
    parser.add_argument("--paper-scale", action="store_true", help="resnet56 -> resnet20 (GPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    parser.add_argument("--quick", action="store_true", help="smoke run for the tests")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--marker", default=MARKER, help="section of --out: <!-- MARKER:begin/end -->"
    )
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    defaults = {
        "datasets": ["digits"] if quick else ["mnist"],
        "weights": [0.0, 0.4] if quick else [0.0, 0.05, 0.1, 0.2, 0.4],
        "lengths": [2] if quick else [2, 5, 10],
        "seeds": [0] if quick else [0, 1, 2],
        "fractions": [0.1] if quick else [0.05],
        "omit": [1] if quick else [3],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.student_weights is None:
        args.student_weights = list(args.weights) if quick else [0.0, 0.1, 0.2, 0.4]
    if 0.0 not in args.weights:
        parser.error("--weights must include 0 (the control fine-tune)")
    if any(w < 0 for w in args.weights) or not set(args.student_weights) <= set(args.weights):
        parser.error("--weights must be >= 0 and include every --student-weights value")
    if any(e < 1 for e in args.lengths):
        parser.error("--lengths must be >= 1 epoch")
    if args.student_length is not None and args.student_length not in args.lengths:
        parser.error("--student-length must be one of --lengths")
    return args


def config_for(name: str, args: argparse.Namespace) -> base.Config:
    config = base.CONFIGS[name]
    if args.quick:
        return base.quick_config(config)
    if args.paper_scale:
        in_channels = 1 if name in ("mnist", "digits") else 3
        return replace(
            PAPER_SCALE,
            teacher_kwargs={"in_channels": in_channels},
            student_kwargs={"in_channels": in_channels},
        )
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    teacher_lines, student_lines, curves, picked = [], [], {}, {}
    for name in args.datasets:
        config = config_for(name, args)
        data = base.load(name, config)
        found = teachers(data, config, args)
        teacher_lines += teacher_rows(name, found, args)
        series: dict[str, list[float]] = {
            f"{e} epochs": [found[(e, w)]["train_cmi"] for w in args.weights] for e in args.lengths
        }
        series["_start"] = [found["mll"]["train_cmi"]] * len(args.weights)
        curves[name] = (list(args.weights), series)
        if not args.no_students:
            picked[name] = student_length(found, args)
            student_lines += students(data, config, found, picked[name], args)
    wall = time.perf_counter() - start
    command = "python examples/mcmi_dose_response.py " + " ".join(args.argv)
    lines = [
        f"Command: `{command.strip()}`; {torch.get_num_threads()} torch thread(s); wall time "
        f"{wall / 60:.1f} min. Teachers: seed 0; students: seeds {list(args.seeds)}.",
        "",
        "| data set | fine-tune epochs | CMI weight | train CMI (nats) | vs MLL start | "
        "vs w = 0 control | test CMI | test acc (%) |",
        "|---|---|---|---|---|---|---|---|",
        *teacher_lines,
    ]
    if student_lines:
        lengths = ", ".join(f"{n}: {e} epochs" for n, e in picked.items())
        lines += [
            "",
            f"Students from the teachers fine-tuned for E* ({lengths}); mean ± sd over seeds; "
            "BKD verdicts per run (short chains: read 'not converged' rows as BKD near the "
            "KD mode).",
            "",
            "| data set | setting | CMI weight | teacher train CMI | KD acc (%) | BKD acc (%) | "
            "KD omitted-class acc (%) | BKD omitted-class acc (%) | BKD verdicts |",
            "|---|---|---|---|---|---|---|---|---|",
            *student_lines,
        ]
    if args.plot is not None:
        plot(curves, args.plot)
        link = args.plot.as_posix()
        if args.out is not None:
            link = Path(os.path.relpath(args.plot.resolve(), args.out.resolve().parent)).as_posix()
        lines += ["", f"![MCMI dose-response]({link})"]
    block = "\n".join(lines) + "\n"
    print(block)
    if args.out is not None:
        write_marked_section(args.out, args.marker, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
