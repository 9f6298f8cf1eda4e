"""What do BKD's credible intervals cover? The four synthetic scenarios with known ``p*(x)``.

For each scenario of :mod:`pyro_bkd.data.synthetic` (linear / non-linear boundary, 2 / 5
classes, ``n`` examples split 7:3:1) this script

1. trains a teacher on the training split (``--teacher mlp``: two small ReLU MLPs, the one with
   the lower validation NLL is kept) or uses the truth blurred by Gaussian noise on the log
   probabilities (``--teacher oracle``, ``--teacher-noise``);
2. distils a student (``--student mlp``: one hidden layer of 32 units, or ``linear``) by Hinton
   KD (``--alpha``, ``--temperature``) with the weight decay that matches the BKD weight prior,
   so the KD student is the BKD posterior mode (SPEC §3);
3. samples the BKD posterior from the KD weights (``pyro_bkd.sample`` with its default sampler,
   step size, draws, warm-up and thinning unless flags say otherwise; 4 chains);
4. prints a Markdown table: for BKD the coverage of the 95% equal-tailed intervals of ``p*(x)``
   over all (test input, class) pairs, their mean width, accuracy, the AUROC of the mean
   deviance for detecting errors, the largest R-hat (over the first 200 test inputs), the
   mean absolute error ``MAE(qbar, p*)`` of the posterior mean and the step size used
   (``eps * N``); for the KD plug-in student (a point estimate, no intervals) accuracy, ECE,
   NLL and ``MAE(q, p*)``; and the teacher's own ``MAE(p_T, p*)``. MAEs are averaged over all
   (test input, class) pairs.

Coverage is measured on one training set per scenario: the errors of the posterior at
different test inputs are strongly correlated, so one run's coverage is one draw of a noisy
quantity, not a frequentist rate. The teacher-informed prior pulls the posterior towards the
teacher (``lam = alpha tau^2 / (1 - alpha)``, 144 at the KD defaults ``alpha = 0.9, tau = 4``),
so the intervals cover ``p*`` only as well as the teacher approximates it; see the README's
"What BKD's intervals cover" for the numbers and the settings study.

Run ``python examples/synthetic_coverage.py`` (about 2 minutes on one CPU core, n = 5500) or
with ``--quick`` (a smoke run of a few seconds per scenario, for the tests). ``--out FILE``
also writes the table to ``FILE`` (replaced atomically).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from pyro_bkd import (
    BKDModel,
    DistillationData,
    fit_map,
    models,
    sample,
    strength_from_alpha,
    uq,
)
from pyro_bkd._atomic import write_text
from pyro_bkd.data.synthetic import (
    SCENARIOS,
    SyntheticData,
    oracle_teacher_logits,
    synthetic,
    train_mlp_teacher,
)
from pyro_bkd.infer import DEFAULT_METHOD, METHODS
from pyro_bkd.metrics import accuracy, expected_calibration_error, max_rhat, md_auroc, nll

LEVEL = 0.95  # credible level of the intervals
RHAT_INPUTS = 200  # R-hat over the q_k(x) of the first test inputs only (ArviZ is slow)
#: Teacher candidates ``(hidden, epochs)`` of ``--teacher mlp``; the lower validation NLL wins.
TEACHER_CANDIDATES: tuple[tuple[tuple[int, ...], int], ...] = (((32,), 300), ((64, 64), 100))
COLUMNS: tuple[str, ...] = (
    "scenario",
    "K",
    "teacher MAE(p_T,p*)",
    "BKD coverage",
    "BKD width",
    "BKD acc",
    "BKD MD-AUROC",
    "BKD max R-hat",
    "BKD MAE(qbar,p*)",
    "step*N",
    "KD acc",
    "KD ECE",
    "KD NLL",
    "KD MAE(q,p*)",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (tests)")
    parser.add_argument("--seed", type=int, default=0, help="data, training and sampling seed")
    parser.add_argument(
        "--n", type=int, default=None, help="examples per scenario (5500; quick 1100)"
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--teacher", choices=("mlp", "oracle"), default="mlp")
    parser.add_argument(
        "--teacher-noise", type=float, default=0.5, help="sd of the oracle's log-prob noise"
    )
    parser.add_argument("--student", choices=("mlp", "linear"), default="mlp")
    parser.add_argument("--alpha", type=float, default=0.9, help="KD weight of the teacher term")
    parser.add_argument("--temperature", type=float, default=4.0, help="KD temperature tau")
    parser.add_argument("--prior-scale", type=float, default=1.0, help="weight prior sd sigma")
    parser.add_argument("--kd-epochs", type=int, default=None, help="KD epochs (40; quick 10)")
    parser.add_argument("--kd-lr", type=float, default=3e-3)
    parser.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="a fixed step size (default: adapted in warm-up by sample())",
    )
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    parser.add_argument("--num-samples", type=int, default=None, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--thin", type=int, default=None)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 1100 if args.quick else 5500
    if args.kd_epochs is None:
        args.kd_epochs = 10 if args.quick else 40
    if args.quick:  # shorter chains unless asked otherwise; the step size stays the default
        args.num_samples = args.num_samples or 25
        args.warmup = 60 if args.warmup is None else args.warmup
        args.thin = args.thin or 2
    return args


def sampler_options(args: argparse.Namespace) -> dict:
    """The ``sample()`` keywords set by flags; the others keep the library's defaults."""
    options = {
        "num_samples": args.num_samples,
        "warmup_steps": args.warmup,
        "thin": args.thin,
        "step_size": args.step_size,
    }
    return {key: value for key, value in options.items() if value is not None}


def make_teacher_logits(data: SyntheticData, args: argparse.Namespace) -> tuple:
    """Teacher logits at the training inputs and teacher probabilities at the test inputs."""
    if args.teacher == "oracle":
        train = oracle_teacher_logits(data.p_train, args.teacher_noise, seed=args.seed + 1)
        test = oracle_teacher_logits(data.p_test, args.teacher_noise, seed=args.seed + 2)
        return train, test.softmax(-1)
    best = None
    for hidden, epochs in TEACHER_CANDIDATES:
        if args.quick:
            epochs = epochs // 3
        net = train_mlp_teacher(
            data.x_train, data.y_train, data.num_classes, hidden, epochs, seed=args.seed
        )
        with torch.no_grad():
            val_nll = F.cross_entropy(net(data.x_val), data.y_val).item()
        if best is None or val_nll < best[0]:
            best = (val_nll, net)
    teacher = best[1]
    with torch.no_grad():
        return teacher(data.x_train), teacher(data.x_test).softmax(-1)


class Clock:
    """Wall time of the phases of a scenario, for the progress lines on stderr."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.laps)


def run_scenario(scenario: str, args: argparse.Namespace) -> dict[str, object]:
    clock = Clock()
    data = synthetic(scenario, args.n, args.seed)
    num_classes, dim = data.num_classes, data.x_train.shape[1]
    teacher_logits, teacher_test = make_teacher_logits(data, args)
    clock.lap("teacher")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        hidden = {"hidden": (32,)} if args.student == "mlp" else {}
        student = models.build(args.student, num_classes, in_features=dim, **hidden)
    model = BKDModel(
        student,
        temperature=args.temperature,
        strength=strength_from_alpha(args.alpha, args.temperature),
        prior_scale=args.prior_scale,
    )
    train = DistillationData(data.x_train, data.y_train, teacher_logits)
    fit_map(  # KD = the MAP of the model: the warm start of the chains
        model,
        train,
        alpha=args.alpha,
        epochs=args.kd_epochs,
        batch_size=128,
        lr=args.kd_lr,
        seed=args.seed,
        device="cpu",
        progress=False,
    )
    kd_weights = {name: p.detach().clone() for name, p in student.named_parameters()}
    clock.lap("KD")
    with torch.no_grad():
        kd_probs = student(data.x_test).softmax(-1)[None, None]  # [1, 1, N, K]

    result = sample(
        model,
        train,
        method=args.method,
        num_chains=args.chains,
        x_test=data.x_test,
        warm_start=kd_weights,
        seed=args.seed,
        progress=False,
        **sampler_options(args),
    )
    clock.lap(args.method)
    probs = result.probs.numpy()
    intervals = uq.equal_tailed_interval(probs, LEVEL)
    clock.lap("summary")
    print(f"{scenario}: {clock}", file=sys.stderr)
    posterior_mean = result.probs.double().mean(dim=(0, 1))
    p_test = data.p_test.double()
    return {
        "scenario": scenario,
        "K": num_classes,
        "teacher MAE(p_T,p*)": (teacher_test.double() - p_test).abs().mean().item(),
        "BKD coverage": uq.interval_coverage(intervals, data.p_test),
        "BKD width": uq.mean_interval_width(intervals),
        "BKD acc": accuracy(probs, data.y_test),
        "BKD MD-AUROC": md_auroc(probs, data.y_test),
        "BKD max R-hat": max_rhat(probs[:, :, :RHAT_INPUTS]),
        "BKD MAE(qbar,p*)": (posterior_mean - p_test).abs().mean().item(),
        "step*N": float(result.sample_stats["step_size"][0, -1]) * len(train),
        "KD acc": accuracy(kd_probs, data.y_test),
        "KD ECE": expected_calibration_error(kd_probs, data.y_test),
        "KD NLL": nll(kd_probs, data.y_test),
        "KD MAE(q,p*)": (kd_probs[0, 0].double() - p_test).abs().mean().item(),
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3f}"
    return "n/a" if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c == "scenario" else "---:" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def settings_line(args: argparse.Namespace) -> str:
    teacher = args.teacher if args.teacher == "mlp" else f"oracle (noise {args.teacher_noise})"
    lam = strength_from_alpha(args.alpha, args.temperature)
    options = sampler_options(args)
    sampler = ", ".join(f"{k}={v}" for k, v in options.items()) or "the defaults of sample()"
    return (
        f"n={args.n}, seed={args.seed}, teacher={teacher}, student={args.student}, "
        f"KD alpha={args.alpha}, tau={args.temperature} (BKD lam={lam:g}), "
        f"sigma={args.prior_scale}; {args.method} with {args.chains} chains, {sampler}; "
        f"95% equal-tailed intervals"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for scenario in args.scenarios:
        rows.append(run_scenario(scenario, args))
        print(f"[{time.perf_counter() - start:6.1f}s total]", file=sys.stderr)
    text = f"{markdown_table(rows)}\n\n{settings_line(args)}\n"
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
