"""The ``pyro-bkd`` command (DESIGN.md, Command line).

- ``pyro-bkd demo --out DIR``: the whole workflow on scikit-learn's digits (a few minutes on a
  laptop CPU; ``--quick`` for a seconds-long smoke run);
- ``pyro-bkd fit --data FILE.npz --out DIR``: BKD with your own teacher logits;
- ``pyro-bkd teacher --dataset NAME --out DIR``: train an MLL or MCMI teacher and save its
  logits in the format ``fit`` reads;
- ``pyro-bkd compare --dataset NAME --methods M1,M2,... --out DIR``: every inference method on
  one data set, one comparison table.

This module parses arguments, calls :mod:`pyro_bkd.pipeline` and prints results. Exit status:
0 on success; 2 on bad input, with one line ``pyro-bkd: error: <message>`` on stderr naming
the flag or file and no traceback: an :class:`~pyro_bkd.InputError` (an option out of range, a
malformed file, an unknown name...) or an OS error on a path (missing, not a folder, no
permission, read-only file system, name too long, disk full); 1 with one such line when a
computation diverges (``FloatingPointError``: a non-finite potential, a diverged KD or teacher
training, NaN predictions). Every option is checked before any work. Other exceptions are bugs
and keep their traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import torch

from pyro_bkd import __version__
from pyro_bkd._checks import InputError
from pyro_bkd.infer.driver import DEFAULT_METHOD
from pyro_bkd.infer.parallel import is_main_process

PROG = "pyro-bkd"
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
#: OS errors about a path (the user's ``--out``, ``--data``, ``--teacher``, ``--data-root``):
#: reported in one line, exit status 2, like :class:`~pyro_bkd.InputError`.
PATH_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
#: ``errno`` values of other OS errors reported the same way: a full disk or quota, a read-only
#: file system, a name too long.
PATH_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG})

STUDENT_HELP = (
    "student network: linear, mlp, mlp:H1,H2,... (hidden widths), small_cnn:W (width), or a "
    "models name (lenet, small_cnn, resnet8, resnet20, ..., wrn_16_2, vgg8; convolutional "
    "students need x of shape [N, C, H, W]); input size from x_train"
)


class _Parser(argparse.ArgumentParser):
    """``argparse`` with the error format of the whole command: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(status)


def one_line(message: str) -> str:
    """``message`` with its lines joined by ``"; "`` and runs of spaces collapsed."""
    parts = [" ".join(line.split()) for line in str(message).splitlines()]
    return "; ".join(part for part in parts if part) or "unknown error"


def error_message(error: BaseException) -> str:
    """The text of a library error (its type's name when it has none)."""
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------- argument types
# These only parse; ranges are checked with the job's options (pyro_bkd.pipeline.common.LIMITS),
# so the library and the command refuse the same values with the same message.


def number(text: str) -> float:
    """A float (``nan``/``inf`` parse here and are refused by the range checks)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def integer(text: str) -> int:
    """A decimal integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def prior_scale(text: str) -> float | None:
    """A number, or ``none`` for a flat prior."""
    return None if text.strip().lower() == "none" else number(text)


# --------------------------------------------------------------------------- parser


def _defaults_help(field: str, chains_only: bool = False) -> str:
    """``fit``'s default of ``field`` per method, from the method registry: methods that share
    a value are grouped, e.g. ``hmc/sgld: 4; map: 1``."""
    from pyro_bkd.pipeline.methods import REGISTRY

    groups: dict[int, list[str]] = {}
    for name, spec in REGISTRY.items():
        if spec.markov_chain or not chains_only:
            groups.setdefault(getattr(spec.default_budget, field), []).append(name)
    return "; ".join(f"{'/'.join(names)}: {value}" for value, names in groups.items())


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyro-bkd`` and its subcommands: ``demo``, ``fit``, ``teacher``,
    ``compare``, each added by its own ``_add_*_command``."""
    parser = _Parser(
        prog=PROG,
        description="Bayesian knowledge distillation with uncertainty quantification, on Pyro.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo_command(commands)
    fit = _add_fit_command(commands)
    _add_fit_budget(fit)
    _add_fit_run_options(fit)
    _add_teacher_command(commands)
    _add_compare_command(commands)
    return parser


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd demo``: the whole workflow on digits."""
    demo = commands.add_parser(
        "demo",
        help="the whole workflow on scikit-learn's digits",
        description=(
            "Teacher (MLP 64-256-256-10, MLL), student MLP 64-32-10 trained alone, by KD "
            "(tau 4, alpha 0.9) and as the MAP of the BKD model, then BKD by 4 SGLD chains. "
            "Writes posterior.nc, metrics.json, plots/ and report.html/report.md to --out."
        ),
    )
    demo.add_argument("--out", required=True, help="output directory (created if needed)")
    demo.add_argument("--seed", type=integer, default=0, help="random seed (0)")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a tiny budget (seconds, for tests); numbers mean nothing",
    )
    _add_common(demo, default_threads="1")
    demo.set_defaults(handler=_demo)


def _add_fit_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``pyro-bkd fit``: its data, model and method options."""
    from pyro_bkd.pipeline import METHODS

    fit = commands.add_parser(
        "fit",
        help="BKD with your own teacher logits (.npz)",
        description=(
            "BKD with your own teacher. FILE.npz holds x_train [N, ...], y_train [N], "
            "teacher_logits_train [N, K], x_test [M, ...] and optionally y_test [M], "
            "teacher_logits_test [M, K], p_test [M, K] (true probabilities, for coverage). "
            "The student is warm-started by KD (--warm-epochs), then sampled or fitted by "
            "--method. Writes posterior.nc and metrics.json to --out (with --report also "
            "report.html, report.md and plots/)."
        ),
    )
    fit.add_argument("--data", required=True, metavar="FILE.npz", help="input arrays")
    fit.add_argument("--out", required=True, help="output directory (created if needed)")
    fit.add_argument("--student", default="linear", help=STUDENT_HELP + " (linear)")
    fit.add_argument("--temperature", type=number, default=4.0, help="tau > 0 of the TIP (4)")
    teacher_weight = fit.add_mutually_exclusive_group()
    teacher_weight.add_argument(
        "--alpha",
        type=number,
        help=(
            "KD's weight alpha in [0, 1) of the teacher term, mapped to the teacher strength "
            "lam = alpha tau^2 / (1 - alpha) (docs/spec.md section 3); default 0.9, as in demo "
            "and the README (lam = 144 at tau 4)"
        ),
    )
    teacher_weight.add_argument(
        "--strength",
        type=number,
        help="teacher strength lam >= 0 of the Dirichlet prior, instead of --alpha",
    )
    fit.add_argument(
        "--prior-scale",
        type=prior_scale,
        default=1.0,
        help="sigma > 0 of the Normal(0, sigma^2) weight prior, or 'none' for flat (1)",
    )
    from pyro_bkd.pipeline.methods import FULL_BATCH_MAX

    fit.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"inference method ({DEFAULT_METHOD}; the Markov chains use full-batch gradients "
        f"up to {FULL_BATCH_MAX} training examples and minibatches of --batch-size above; hmc "
        "is always "
        "full-batch and Metropolis-corrected)",
    )
    return fit


def _add_fit_budget(fit: argparse.ArgumentParser) -> None:
    """``pyro-bkd fit``: the budget of its method (draws, warm-up, steps, KD epochs)."""
    fit.add_argument(
        "--num-samples",
        type=integer,
        help=f"draws per chain; ensemble: members ({_defaults_help('num_samples')})",
    )
    fit.add_argument(
        "--warmup",
        type=integer,
        help=f"warm-up iterations per chain ({_defaults_help('warmup', chains_only=True)})",
    )
    fit.add_argument(
        "--chains",
        type=integer,
        help=f"chains ({_defaults_help('chains')})",
    )
    fit.add_argument(
        "--thin",
        type=integer,
        help=f"keep every thin-th iteration ({_defaults_help('thin', chains_only=True)})",
    )
    fit.add_argument("--batch-size", type=integer, default=128, help="minibatch size m (128)")
    fit.add_argument(
        "--step-size",
        type=number,
        help="step eps on the summed potential (default: pyro_bkd.sample's, from the curvature)",
    )
    fit.add_argument("--lr", type=number, default=3e-3, help="Adam learning rate of KD/SVI (0.003)")
    fit.add_argument(
        "--warm-epochs",
        type=integer,
        default=30,
        help=(
            "epochs of KD training before inference, 0 starts from the random init; "
            "mc-dropout/ensemble: epochs of each of their KD students (30)"
        ),
    )
    fit.add_argument(
        "--dropout",
        type=number,
        default=0.2,
        help="mc-dropout: dropout probability p in (0, 1) before hidden dense layers (0.2)",
    )
    fit.add_argument(
        "--steps", type=integer, default=2000, help="optimisation steps of map/svi (2000)"
    )


def _add_fit_run_options(fit: argparse.ArgumentParser) -> None:
    """``pyro-bkd fit``: seed, checkpoints, processes, outputs and the common options."""
    fit.add_argument("--seed", type=integer, default=0, help="random seed (0)")
    fit.add_argument(
        "--checkpoint",
        metavar="FILE",
        help=(
            "Markov chains: save the state to FILE every 50 draws and resume from it; a "
            "finished run's FILE with a larger --num-samples is extended"
        ),
    )
    fit.add_argument(
        "--distributed",
        choices=("auto", "off", "chains", "data"),
        default="auto",
        help=(
            "under torchrun: split the chains over the processes (chains; auto does so when "
            "more than one was launched) or the training data (data); see README 'Scaling out'"
        ),
    )
    fit.add_argument(
        "--keep-weights",
        action="store_true",
        help="store the weight draws in posterior.nc (large for big students)",
    )
    fit.add_argument(
        "--report",
        action="store_true",
        help="also write report.html, report.md and the figures they show (plots/*.png)",
    )
    _add_common(fit, default_threads="1")
    fit.set_defaults(handler=_fit)


def _add_teacher_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd teacher``: train an MLL or MCMI teacher."""
    from pyro_bkd.pipeline import TEACHER_DATASETS
    from pyro_bkd.teachers import OBJECTIVES

    teacher = commands.add_parser(
        "teacher",
        help="train an MLL or MCMI teacher and save its logits",
        description=(
            "Train a teacher by maximum likelihood (mll) or by MLL then MCMI fine-tuning "
            "(mcmi, SPEC section 6). Writes teacher.pt, teacher_logits.npz (ready for "
            "'pyro-bkd fit --data') and metrics.json to --out."
        ),
    )
    teacher.add_argument("--dataset", required=True, choices=TEACHER_DATASETS)
    teacher.add_argument("--out", required=True, help="output directory (created if needed)")
    teacher.add_argument("--objective", choices=OBJECTIVES, default="mll", help="(mll)")
    teacher.add_argument(
        "--cmi-weight",
        type=number,
        default=0.2,
        help="lam_cmi of the MCMI loss CE - lam_cmi KL(P_x || Q_y) (0.2)",
    )
    teacher.add_argument(
        "--epochs",
        type=integer,
        default=20,
        help="epochs of the objective (mcmi: of the fine-tuning) (20)",
    )
    teacher.add_argument(
        "--mll-epochs",
        type=integer,
        help="mcmi only: epochs of the MLL pre-training (default: --epochs)",
    )
    teacher.add_argument(
        "--arch", default="mlp", help="teacher network, names as for fit's --student (mlp)"
    )
    teacher.add_argument("--data-root", help="folder holding mnist/, fashion-mnist/, cifar10/")
    teacher.add_argument(
        "--test-only",
        action="store_true",
        help="mnist/fashion-mnist: split the official test images when the train files are missing",
    )
    teacher.add_argument("--lr", type=number, default=0.05, help="SGD learning rate of MLL (0.05)")
    teacher.add_argument(
        "--finetune-lr",
        type=number,
        default=0.01,
        help="SGD learning rate of the MCMI fine-tuning (0.01)",
    )
    teacher.add_argument("--batch-size", type=integer, default=128, help="(128)")
    teacher.add_argument("--seed", type=integer, default=0, help="random seed (0)")
    teacher.add_argument(
        "--no-inputs",
        action="store_true",
        help="leave x_train/x_test out of teacher_logits.npz (smaller file, not fit-ready)",
    )
    _add_common(teacher)
    teacher.set_defaults(handler=_teacher)


def _add_compare_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd compare``: every method on one data set."""
    from pyro_bkd.pipeline import COMPARE_DATASETS, COMPARE_METHODS, DEFAULT_METHODS

    compare = commands.add_parser(
        "compare",
        help="every inference method on one data set, one table",
        description=(
            "Train (or load) the teacher once, train the student alone and by KD, run each "
            "method from the KD student with the data set's fixed budget, and write "
            "comparison.csv, comparison.md, metrics.json, teacher.pt and <method>/posterior.nc "
            "to --out. A method that fails is marked failed with its reason."
        ),
    )
    compare.add_argument("--dataset", required=True, choices=COMPARE_DATASETS)
    compare.add_argument("--out", required=True, help="output directory (created if needed)")
    compare.add_argument(
        "--methods",
        type=method_list,
        default=DEFAULT_METHODS,
        metavar="M1,M2,...",
        help=(
            f"comma-separated, or 'all': {', '.join(COMPARE_METHODS)} "
            f"(default: {','.join(DEFAULT_METHODS)})"
        ),
    )
    compare.add_argument(
        "--teacher",
        metavar="TEACHER.pt",
        help="a teacher.pt of 'pyro-bkd teacher' or of an earlier compare (default: train one)",
    )
    compare.add_argument("--num-train", type=integer, help="stratified subset of the train split")
    compare.add_argument("--num-test", type=integer, help="first test examples only")
    compare.add_argument("--data-root", help="folder holding mnist/, fashion-mnist/, cifar10/")
    compare.add_argument("--seed", type=integer, default=0, help="random seed (0)")
    compare.add_argument("--quick", action="store_true", help="a tiny budget (seconds, for tests)")
    _add_common(compare, default_threads="1")
    compare.set_defaults(handler=_compare)


def method_list(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated names of ``compare``'s methods, or ``all``."""
    from pyro_bkd.pipeline import COMPARE_METHODS

    if text.strip().lower() == "all":
        return COMPARE_METHODS
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in COMPARE_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or repr(text)}; valid: "
            f"{', '.join(COMPARE_METHODS)} (or all)"
        )
    return names


def _add_common(parser: argparse.ArgumentParser, default_threads: str | None = None) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N"
    )
    threads_default = (
        "1 unless OMP_NUM_THREADS is set: small students run fastest on one thread, and "
        "threads contend badly on a busy machine"
        if default_threads
        else "PyTorch's"
    )
    parser.add_argument(
        "--threads",
        type=integer,
        help=f"CPU threads of PyTorch (default: {threads_default})",
    )
    parser.set_defaults(default_threads=default_threads)
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or stage messages"
    )


# --------------------------------------------------------------------------- commands


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-bkd`` with ``argv`` (default ``sys.argv[1:]``); returns 0 on success.

    Bad input raises ``SystemExit(2)`` after printing ``pyro-bkd: error: <message>`` to stderr.
    """
    args = build_parser().parse_args(argv)
    try:
        _set_threads(args)
        return args.handler(args)
    except FloatingPointError as error:  # NonFiniteError and diverged training among them
        _fail(error_message(error), status=EXIT_FAILED)
    except InputError as error:
        _fail(error_message(error))
    except OSError as error:
        if not is_path_error(error):
            raise
        _fail(path_error_message(error))


def is_path_error(error: OSError) -> bool:
    """Whether ``error`` is about a path or its file system (bad input), not a bug."""
    return isinstance(error, PATH_ERRORS) or error.errno in PATH_ERRNOS


def path_error_message(error: OSError) -> str:
    """``path: reason`` of an OS error (its text as it is when it names no file)."""
    if error.filename is None or not error.strerror:
        return error_message(error)
    return f"{os.fspath(error.filename)}: {error.strerror}"


def _set_threads(args: argparse.Namespace) -> None:
    from pyro_bkd.pipeline.common import check_count

    threads = args.threads
    if threads is not None:
        check_count("--threads", threads)
    if threads is None and args.default_threads and "OMP_NUM_THREADS" not in os.environ:
        threads = int(args.default_threads)
    if threads is not None:
        torch.set_num_threads(threads)


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    def log(message: str) -> None:
        if not args.quiet and is_main_process():
            print(f"{PROG} {args.command}: {message}", file=sys.stderr, flush=True)

    return log


def _demo(args: argparse.Namespace) -> int:
    from pyro_bkd.pipeline import DEMO_METHODS, run_demo

    start = time.perf_counter()
    values = run_demo(
        args.out,
        seed=args.seed,
        quick=args.quick,
        device=args.device,
        progress=not args.quiet,
        log=_log(args),
    )
    methods = values["methods"]
    print(
        format_table(
            {name: methods[name] for name in DEMO_METHODS},
            ("accuracy", "nll", "ece", "brier", "md_auroc", "wall_seconds"),
            row_title="method",
        )
    )
    bkd = methods["bkd"]
    print(
        f"BKD ({bkd['method']}): {bkd['num_chains']} chains x {bkd['num_draws']} draws, "
        f"mean 95% interval width {_fmt(bkd['mean_interval_width'])}"
    )
    print(f"verdict: {values['verdict']}")
    noise = values["noise"]
    print(
        "mean deviance at noise "
        + ", ".join(f"{level:g}" for level in noise["levels"])
        + f": BKD {_fmt_list(noise['bkd_mean_deviance'])}; "
        + f"KD 2xH {_fmt_list(noise['kd_2x_entropy'])}"
    )
    print(
        f"wrote {args.out}/ (posterior.nc, metrics.json, report.html, report.md, plots/) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _fit(args: argparse.Namespace) -> int:
    from pyro_bkd.pipeline import FitOptions, run_fit

    options = FitOptions(
        data=args.data,
        out=args.out,
        student=args.student,
        temperature=args.temperature,
        strength=args.strength,
        alpha=args.alpha,
        prior_scale=args.prior_scale,
        method=args.method,
        num_samples=args.num_samples,
        warmup=args.warmup,
        chains=args.chains,
        thin=args.thin,
        batch_size=args.batch_size,
        step_size=args.step_size,
        lr=args.lr,
        warm_epochs=args.warm_epochs,
        steps=args.steps,
        dropout=args.dropout,
        seed=args.seed,
        device=args.device,
        keep_weights=args.keep_weights,
        report=args.report,
        progress=not args.quiet,
        distributed=args.distributed,
        checkpoint=args.checkpoint,
    )
    values = run_fit(options, log=_log(args))
    if not is_main_process():
        return 0
    columns = (
        "accuracy",
        "nll",
        "ece",
        "coverage",
        "mean_interval_width",
        "max_rhat",
        "min_ess_bulk",
        "draws",
        "wall_seconds",
    )
    rows = {values["method"]: values}
    if "teacher" in values:
        rows["teacher"] = values["teacher"]
    print(format_table(rows, columns, row_title="method"))
    if "convergence" in values:
        print(f"verdict: {values['convergence']['message']}")
    written = "posterior.nc, metrics.json" + (
        ", report.html, report.md, plots/" if args.report else ""
    )
    print(f"wrote {args.out}/ ({written})")
    return 0


def _teacher(args: argparse.Namespace) -> int:
    from pyro_bkd.pipeline import TeacherOptions, run_teacher

    options = TeacherOptions(
        dataset=args.dataset,
        out=args.out,
        objective=args.objective,
        arch=args.arch,
        epochs=args.epochs,
        mll_epochs=args.mll_epochs,
        cmi_weight=args.cmi_weight,
        lr=args.lr,
        finetune_lr=args.finetune_lr,
        batch_size=args.batch_size,
        data_root=args.data_root,
        test_only=args.test_only,
        save_inputs=not args.no_inputs,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    values = run_teacher(options, log=_log(args))
    columns = ("accuracy", "nll", "ece", "brier", "train_accuracy", "cmi", "wall_seconds")
    print(format_table({f"{values['objective']} teacher": values}, columns, row_title="model"))
    print(f"wrote {args.out}/ (teacher.pt, teacher_logits.npz, metrics.json)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pyro_bkd.pipeline import CompareOptions, run_compare

    options = CompareOptions(
        dataset=args.dataset,
        out=args.out,
        methods=args.methods,
        teacher=args.teacher,
        seed=args.seed,
        quick=args.quick,
        num_train=args.num_train,
        num_test=args.num_test,
        data_root=args.data_root,
        device=args.device,
        progress=not args.quiet,
    )
    values = run_compare(options, log=_log(args))
    columns = (
        "status",
        "accuracy",
        "nll",
        "ece",
        "md_auroc",
        "mean_interval_width",
        "max_rhat",
        "elpd_test",
        "wall_seconds",
    )
    print(format_table({row["method"]: row for row in values["rows"]}, columns, "method"))
    for row in values["rows"]:
        if row["status"] != "ok":
            print(f"{row['method']} failed: {row['reason']}")
    print(f"wrote {args.out}/ (comparison.csv, comparison.md, metrics.json, */posterior.nc)")
    return 0


# --------------------------------------------------------------------------- printing


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _fmt_list(values: Sequence[Any]) -> str:
    return " ".join(_fmt(value) for value in values)


def format_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], row_title: str = ""
) -> str:
    """Plain-text table: a row per entry of ``rows``, the given ``columns`` (``-`` if absent)."""
    header = [row_title, *columns]
    body = [[name, *(_fmt(row.get(column)) for column in columns)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *body]
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
