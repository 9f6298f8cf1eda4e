"""Coverage against teacher strength and posterior temperature, and choosing them on validation.

For each problem, the four synthetic scenarios of :mod:`pyro_bkd.data.synthetic` (known
``p*(x)``; ``n`` examples split 7:3:1 into train / validation / test) and MNIST (a stratified
training subset, a validation set from the rest of the training images, the first test
images), this script

1. trains a teacher on the training split (synthetic: ReLU MLP 5-32-K, 300 full-batch Adam
   epochs; MNIST: MLP 784-256-256-10, 10 SGD epochs) and a KD student (``alpha = 0.9``,
   ``tau = 4``, the weight decay of the ``Normal(0, 1)`` weight prior);
2. samples the BKD posterior (``pyro_bkd.sample``, default sampler, SGHMC; ``warm_start="map"``
   from the KD weights, so each run starts at its own posterior mode) for every teacher strength
   ``lam = alpha tau^2 / (1 - alpha)`` of ``--alphas`` (KD's alpha 0 to 0.9: lam 0 to 144) at
   posterior temperature ``T = 1``, and for every ``T`` of ``--posterior-temperatures`` at
   ``lam = 144``;
3. measures, on the test split, the coverage of the 95% credible label sets (share of test
   labels inside the set, binomial se ``sqrt(c (1 - c) / n)``, mean size) and, for the
   synthetic scenarios, the per-class interval coverage of ``p*`` (share of (input, class)
   pairs with ``p*_k(x)`` inside the 95% equal-tailed interval of ``q_k(x)``), each with the
   run's convergence verdict;
4. chooses ``lam`` (at ``T = 1``) and ``T`` (at ``lam = 144``) on the validation split with
   :func:`pyro_bkd.calibrate.choose_from_draws` (smallest sets among those whose validation
   coverage is not significantly below 95%) and reports the chosen run's *test* coverage next
   to the default's (``lam = 144, T = 1``): label sets, and ``p*`` intervals before and after.

Prints two Markdown tables; ``--out FILE`` writes them between
``<!-- coverage_vs_strength:begin/end -->``, ``--plot FILE`` draws test coverage against
``lam`` (:func:`pyro_bkd.plots.coverage_vs_strength`). Chains are short on a CPU budget: the
verdict column says which runs converged; read the others as "near the posterior mode".

Run: ``python examples/coverage_vs_strength.py --out docs/results.md --plot
docs/figures/coverage_vs_strength.png`` (about 15 minutes on one CPU thread); ``--quick`` is a
smoke run for the tests (two scenarios, tiny budgets; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pyro_bkd import (
    BKDModel,
    ConvergenceWarning,
    DistillationData,
    fit_map,
    metrics,
    models,
    plots,
    sample,
    strength_from_alpha,
    uq,
)
from pyro_bkd.calibrate import choose_from_draws
from pyro_bkd.data.loaders import load_mnist
from pyro_bkd.data.splits import few_shot_indices
from pyro_bkd.data.synthetic import SCENARIOS, synthetic, train_mlp_teacher
from pyro_bkd.report import write_marked_section
from pyro_bkd.teachers import teacher_logits, train_teacher

MARKER = "coverage_vs_strength"
LEVEL = 0.95
TAU = 4.0
KD_ALPHA = 0.9
PRIOR_SCALE = 1.0


@dataclass(frozen=True)
class Problem:
    """One data set with its train / validation / test splits (``p_*`` only if synthetic)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    p_val: torch.Tensor | None
    p_test: torch.Tensor | None
    num_classes: int


@dataclass(frozen=True)
class Budget:
    """Sampler budget of one run (``pyro_bkd.sample``) and KD epochs."""

    chains: int
    warmup: int
    draws: int
    thin: int
    kd_epochs: int


def synthetic_problem(scenario: str, n: int, seed: int) -> Problem:
    data = synthetic(scenario, n, seed)
    return Problem(
        scenario,
        data.x_train,
        data.y_train,
        data.x_val,
        data.y_val,
        data.x_test,
        data.y_test,
        data.p_val,
        data.p_test,
        data.num_classes,
    )


def mnist_problem(num_train: int, num_val: int, num_test: int, seed: int) -> Problem:
    """MNIST: stratified training and validation subsets of the training images (disjoint),
    the first ``num_test`` test images."""
    data = load_mnist(flatten=True)
    total = data.y_train.numel()
    train_idx = few_shot_indices(data.y_train, num_train / total, seed=seed)
    rest = torch.ones(total, dtype=torch.bool)
    rest[train_idx] = False
    rest_idx = rest.nonzero().squeeze(1)
    val_pick = few_shot_indices(data.y_train[rest_idx], num_val / rest_idx.numel(), seed=seed)
    val_idx = rest_idx[val_pick]
    return Problem(
        "mnist",
        data.x_train[train_idx],
        data.y_train[train_idx],
        data.x_train[val_idx],
        data.y_train[val_idx],
        data.x_test[:num_test],
        data.y_test[:num_test],
        None,
        None,
        10,
    )


def teacher_for(problem: Problem, quick: bool, seed: int) -> torch.Tensor:
    """Teacher logits at the training inputs."""
    if problem.p_test is not None:
        net = train_mlp_teacher(
            problem.x_train,
            problem.y_train,
            problem.num_classes,
            (32,),
            100 if quick else 300,
            seed=seed,
        )
        with torch.no_grad():
            return net(problem.x_train)
    torch.manual_seed(seed)
    net = models.build("mlp", 10, in_features=784, hidden=(256, 256))
    train_teacher(
        net,
        problem.x_train,
        problem.y_train,
        objective="mll",
        epochs=2 if quick else 10,
        lr=0.05,
        seed=seed,
        progress=False,
    )
    return teacher_logits(net, problem.x_train)


def kd_student(problem: Problem, train: DistillationData, budget: Budget, seed: int) -> nn.Module:
    """The KD student at ``alpha = 0.9`` (the BKD posterior mode at ``lam = 144``)."""
    torch.manual_seed(seed)
    in_features = problem.x_train.shape[1]
    student = models.build("mlp", problem.num_classes, in_features=in_features, hidden=(32,))
    model = BKDModel(
        student,
        temperature=TAU,
        strength=strength_from_alpha(KD_ALPHA, TAU),
        prior_scale=PRIOR_SCALE,
    )
    fit_map(  # KD = the MAP of the model
        model,
        train,
        alpha=KD_ALPHA,
        epochs=budget.kd_epochs,
        batch_size=128,
        lr=3e-3,
        seed=seed,
        progress=False,
    )
    return student


def run_problem(problem: Problem, args: argparse.Namespace) -> list[dict]:
    """One row per (lam, T) run: validation draws are kept for the choice."""
    started = time.perf_counter()
    logits = teacher_for(problem, args.quick, args.seed)
    train = DistillationData(problem.x_train, problem.y_train, logits)
    student = kd_student(problem, train, args.budget, args.seed)
    x_eval = torch.cat([problem.x_val, problem.x_test])
    num_val = problem.x_val.shape[0]
    grid = [(a, 1.0) for a in args.alphas]
    grid += [(KD_ALPHA, t) for t in args.posterior_temperatures if t != 1.0]
    rows = []
    with torch.no_grad():
        kd_probs = student(x_eval).softmax(-1)[None, None]
    rows.append(summarise(problem, "KD softmax", KD_ALPHA, None, kd_probs, None, num_val))
    for alpha, posterior_temperature in grid:
        lam = strength_from_alpha(alpha, TAU)
        model = BKDModel(
            copy.deepcopy(student), temperature=TAU, strength=lam, prior_scale=PRIOR_SCALE
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the verdict is reported
            result = sample(
                model,
                train,
                num_samples=args.budget.draws,
                warmup_steps=args.budget.warmup,
                thin=args.budget.thin,
                num_chains=args.budget.chains,
                posterior_temperature=posterior_temperature,
                x_test=x_eval,
                warm_start="map",
                seed=args.seed,
                progress=False,
            )
        assert result.probs is not None and result.convergence is not None
        verdict = str(result.convergence.status)
        kind = "lam" if posterior_temperature == 1.0 else "T"
        rows.append(
            summarise(problem, kind, alpha, posterior_temperature, result.probs, verdict, num_val)
        )
        print(
            f"[{problem.name}] alpha {alpha:g} (lam {lam:g}) T {posterior_temperature:g}: "
            f"{verdict}, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def summarise(
    problem: Problem,
    kind: str,
    alpha: float,
    posterior_temperature: float | None,
    probs: torch.Tensor,
    verdict: str | None,
    num_val: int,
) -> dict:
    """Validation and test label-set coverage, test ``p*`` interval coverage, test accuracy."""
    array = uq.to_numpy(probs)
    val, test = array[:, :, :num_val], array[:, :, num_val:]
    test_sets = metrics.label_set_coverage(test, problem.y_test, LEVEL)
    row = {
        "problem": problem.name,
        "kind": kind,
        "alpha": alpha,
        "lam": strength_from_alpha(alpha, TAU),
        "T": posterior_temperature,
        "verdict": verdict,
        "val_probs": val,
        "val_cov": metrics.label_set_coverage(val, problem.y_val, LEVEL).coverage,
        "test_cov": test_sets.coverage,
        "test_se": test_sets.se,
        "test_size": test_sets.mean_size,
        "test_acc": metrics.accuracy(test, problem.y_test),
        "p_cov": math.nan,
    }
    if problem.p_test is not None and array.shape[0] * array.shape[1] > 1:
        interval = uq.equal_tailed_interval(test, LEVEL)
        row["p_cov"] = uq.interval_coverage(interval, problem.p_test)
    return row


def choices(rows: list[dict], problem: Problem) -> dict:
    """The validation choice of lam (T = 1) and of T (lam = 144), with the default run."""
    by_lam = [r for r in rows if r["kind"] == "lam"]
    by_t = [r for r in rows if r["kind"] == "T" or (r["kind"] == "lam" and r["alpha"] == KD_ALPHA)]
    default = next(r for r in by_lam if r["alpha"] == KD_ALPHA)
    out = {"problem": problem.name, "default": default}
    for key, group, field, parameter in (
        ("lam", by_lam, "lam", "strength"),
        ("T", by_t, "T", "posterior_temperature"),
    ):
        if len(group) < 2:
            continue
        choice = choose_from_draws(
            {r[field]: r["val_probs"] for r in group},
            problem.y_val,
            LEVEL,
            parameter=parameter,
            verdicts={r[field]: r["verdict"] for r in group},
        )
        out[key] = (choice, next(r for r in group if r[field] == choice.value))
    return out


def pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def format_tables(rows: list[dict], picks: list[dict]) -> str:
    lines = [
        "| problem | run | lam | T | verdict | val set cov (%) | test set cov (%) ± se | "
        "test set size | test p* cov (%) | test acc (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        run = (
            "KD softmax (alpha 0.9)" if r["kind"] == "KD softmax" else f"BKD, alpha {r['alpha']:g}"
        )
        lam = f"{r['lam']:.3g}"
        t_cell = "–" if r["T"] is None else f"{r['T']:g}"
        lines.append(
            f"| {r['problem']} | {run} | {lam} | {t_cell} | {r['verdict'] or '–'} | "
            f"{pct(r['val_cov'])} | {pct(r['test_cov'])} ± {pct(r['test_se'])} | "
            f"{r['test_size']:.2f} | {pct(r['p_cov'])} | {pct(r['test_acc'])} |"
        )
    lines += [
        "",
        "| problem | default lam 144, T 1: test set cov (%) | p* cov (%) | chosen lam "
        "(val cov %) | test set cov (%) | p* cov (%) | chosen T (val cov %) | "
        "test set cov (%) | p* cov (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pick in picks:
        d = pick["default"]
        cells = [pick["problem"], f"{pct(d['test_cov'])} ± {pct(d['test_se'])}", pct(d["p_cov"])]
        for key in ("lam", "T"):
            if key not in pick:
                cells += ["–", "–", "–"]
                continue
            choice, row = pick[key]
            note = " (none admissible)" if choice.fallback else ""
            cells += [
                f"{choice.value:.3g} ({pct(choice.score(choice.value).coverage)}){note}",
                f"{pct(row['test_cov'])} ± {pct(row['test_se'])}",
                pct(row["p_cov"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    lams = sorted({r["lam"] for r in rows if r["kind"] == "lam"})
    series: dict[str, object] = {}
    for name in dict.fromkeys(r["problem"] for r in rows):
        mine = {r["lam"]: r for r in rows if r["problem"] == name and r["kind"] == "lam"}
        cov = [mine[lam]["test_cov"] if lam in mine else math.nan for lam in lams]
        se = [mine[lam]["test_se"] if lam in mine else math.nan for lam in lams]
        series[f"{name}: label sets"] = (cov, se)
        if any(math.isfinite(mine[lam]["p_cov"]) for lam in mine):
            series[f"{name}: p* intervals"] = [mine[lam]["p_cov"] for lam in lams]
    figure = plots.coverage_vs_strength(
        lams,
        series,
        nominal=LEVEL,
        xlabel="teacher strength lam = alpha tau^2 / (1 - alpha)  (tau = 4)",
        ylabel="test coverage of the 95% sets / intervals",
        title="BKD coverage against teacher strength (posterior temperature 1)",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", choices=(*SCENARIOS, "mnist"), default=None)
    parser.add_argument("--alphas", nargs="+", type=float, default=None)
    parser.add_argument("--posterior-temperatures", nargs="+", type=float, default=None)
    parser.add_argument("--n", type=int, default=None, help="synthetic examples (5500)")
    parser.add_argument(
        "--mnist-sizes", nargs=3, type=int, default=None, metavar=("TRAIN", "VAL", "TEST")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run for the tests")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    defaults = {
        "problems": ["nonlinear-5class"] if quick else [*SCENARIOS, "mnist"],
        "alphas": [0.0, 0.9] if quick else [0.0, 0.1, 0.3, 0.5, 0.7, 0.9],
        "posterior_temperatures": [1.0, 3.0] if quick else [1.0, 2.0, 4.0],
        "n": 880 if quick else 5500,
        "mnist_sizes": [300, 200, 300] if quick else [3000, 2000, 5000],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if any(not 0 <= a < 1 for a in args.alphas):
        parser.error("--alphas must be in [0, 1)")
    if any(t <= 0 for t in args.posterior_temperatures):
        parser.error("--posterior-temperatures must be > 0")
    if KD_ALPHA not in args.alphas:
        parser.error(f"--alphas must include the default {KD_ALPHA}")
    args.budget = Budget(2, 30, 10, 2, 3) if quick else Budget(4, 1000, 100, 10, 40)
    args.mnist_budget = Budget(2, 30, 10, 2, 2) if quick else Budget(2, 400, 50, 6, 15)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows, picks = [], []
    for name in args.problems:
        if name == "mnist":
            problem = mnist_problem(*args.mnist_sizes, seed=args.seed)
            problem_rows = run_problem(problem, replace_budget(args, args.mnist_budget))
        else:
            problem = synthetic_problem(name, args.n, args.seed)
            problem_rows = run_problem(problem, args)
        rows += problem_rows
        picks.append(choices(problem_rows, problem))
    wall = time.perf_counter() - start
    tables = format_tables(rows, picks)
    b, m = args.budget, args.mnist_budget
    block = (
        f"Command: `python examples/coverage_vs_strength.py {' '.join(args.argv)}`".rstrip()
        + f"; seed {args.seed}; {torch.get_num_threads()} torch thread(s); wall time "
        f"{wall / 60:.1f} min. Synthetic: n = {args.n} (7:3:1), {b.chains} chains x "
        f"({b.warmup} warm-up + {b.draws} x {b.thin}) SGHMC steps; MNIST: "
        f"{args.mnist_sizes[0]} / {args.mnist_sizes[1]} / {args.mnist_sizes[2]} "
        f"train / val / test, {m.chains} chains x ({m.warmup} + {m.draws} x {m.thin}). "
        "Label sets and p* intervals at 95%.\n\n" + tables
    )
    if args.plot is not None:
        plot(rows, args.plot)
        link = args.plot.as_posix()
        if args.out is not None:
            link = os.path.relpath(args.plot.resolve(), args.out.resolve().parent)
        block += f"\n![coverage against teacher strength]({Path(link).as_posix()})\n"
    print(block)
    if args.out is not None:
        write_marked_section(args.out, MARKER, block)
    return 0


def replace_budget(args: argparse.Namespace, budget: Budget) -> argparse.Namespace:
    copied = argparse.Namespace(**vars(args))
    copied.budget = budget
    return copied


if __name__ == "__main__":
    sys.exit(main())
