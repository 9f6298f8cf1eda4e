"""The ``pyro-bkd`` command (README.md, "Command line").

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
from dataclasses import MISSING, asdict, fields
from typing import Any, NoReturn, TypeVar

import torch

from pyro_bkd import __version__
from pyro_bkd._checks import InputError
from pyro_bkd.infer.parallel import is_main_process

PROG = "pyro-bkd"
T = TypeVar("T")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
#: OS errors about a path (the user's ``--out``, ``--data``, ``--teacher``, ``--data-root``):
#: reported in one line, exit status 2, like :class:`~pyro_bkd.InputError`.
PATH_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
#: ``errno`` values of other OS errors reported the same way: a full disk or quota, a read-only
#: file system, a name too long.
PATH_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG})


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


# --------------------------------------------------------------------------- parser
# Each job's flags are the fields of its options dataclass (pyro_bkd.pipeline.options): name,
# default, type, choices and help are declared there once; ranges are checked when the
# dataclass is built, so the library and the command refuse the same values with the same
# message.


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
    _add_fit_command(commands)
    _add_teacher_command(commands)
    _add_compare_command(commands)
    return parser


def add_options(parser: argparse.ArgumentParser, options: type) -> None:
    """Add to ``parser`` a flag per field of the dataclass ``options`` that is an
    :func:`~pyro_bkd.pipeline.options.option`, in field order: ``--`` and the field's name
    with ``-`` for ``_`` (or its ``flag``), the parsed value stored under the field's name,
    the field's default (required without one) and its ``argparse`` settings."""
    from pyro_bkd.pipeline.options import CLI

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for field in fields(options):
        if CLI not in field.metadata:
            continue
        settings = dict(field.metadata[CLI])
        flag = settings.pop("flag", "--" + field.name.replace("_", "-"))
        group = settings.pop("group", None)
        if field.default is MISSING:
            settings["required"] = True
        elif field.default is not None:
            settings["default"] = field.default
        if group is not None and group not in groups:
            groups[group] = parser.add_mutually_exclusive_group()
        target = parser if group is None else groups[group]
        target.add_argument(flag, dest=field.name, **settings)


def options_from(options: type[T], args: argparse.Namespace, **given: Any) -> T:
    """The dataclass ``options`` from the parsed ``args``: each field the value stored under its
    name (:func:`add_options`, ``--device``), ``given`` the rest (checked on construction)."""
    names = [field.name for field in fields(options) if hasattr(args, field.name)]
    return options(**{**{name: getattr(args, name) for name in names}, **given})


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd demo``: the whole workflow on digits."""
    from pyro_bkd.pipeline import DemoOptions

    demo = commands.add_parser(
        "demo",
        help="the whole workflow on scikit-learn's digits",
        description=(
            "Teacher (MLP 64-256-256-10, MLL), student MLP 64-32-10 trained alone, by KD "
            "(tau 4, alpha 0.9) and as the MAP of the BKD model, then BKD by 4 chains of the "
            "default sampler (SGHMC, full batch). "
            "Writes posterior.nc, metrics.json, plots/ and report.html/report.md to --out."
        ),
    )
    add_options(demo, DemoOptions)
    _add_common(demo, default_threads="1")
    demo.set_defaults(handler=_demo)


def _add_fit_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd fit``: the fields of :class:`~pyro_bkd.pipeline.FitOptions`."""
    from pyro_bkd.pipeline import FitOptions

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
    add_options(fit, FitOptions)
    _add_common(fit, default_threads="1")
    fit.set_defaults(handler=_fit)


def _add_teacher_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd teacher``: train an MLL or MCMI teacher."""
    from pyro_bkd.pipeline import TeacherOptions

    teacher = commands.add_parser(
        "teacher",
        help="train an MLL or MCMI teacher and save its logits",
        description=(
            "Train a teacher by maximum likelihood (mll) or by MLL then MCMI fine-tuning "
            "(mcmi, SPEC section 6). Writes teacher.pt, teacher_logits.npz (ready for "
            "'pyro-bkd fit --data') and metrics.json to --out."
        ),
    )
    add_options(teacher, TeacherOptions)
    _add_common(teacher)
    teacher.set_defaults(handler=_teacher)


def _add_compare_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-bkd compare``: every method on one data set."""
    from pyro_bkd.pipeline import CompareOptions

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
    add_options(compare, CompareOptions)
    _add_common(compare, default_threads="1")
    compare.set_defaults(handler=_compare)


def _add_common(parser: argparse.ArgumentParser, default_threads: str | None = None) -> None:
    from pyro_bkd.pipeline.options import integer

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
    from pyro_bkd.pipeline import DEMO_METHODS, DemoOptions, run_demo

    start = time.perf_counter()
    options = options_from(DemoOptions, args, progress=not args.quiet)
    values = run_demo(**asdict(options), log=_log(args))
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

    options = options_from(FitOptions, args, progress=not args.quiet)
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

    options = options_from(TeacherOptions, args, progress=not args.quiet)
    values = run_teacher(options, log=_log(args))
    columns = ("accuracy", "nll", "ece", "brier", "train_accuracy", "cmi", "wall_seconds")
    print(format_table({f"{values['objective']} teacher": values}, columns, row_title="model"))
    print(f"wrote {args.out}/ (teacher.pt, teacher_logits.npz, metrics.json)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pyro_bkd.pipeline import CompareOptions, run_compare

    options = options_from(CompareOptions, args, progress=not args.quiet)
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
