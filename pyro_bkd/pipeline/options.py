"""Options declared once: a job's options dataclass is also its command line.

Each field made by :func:`option` carries the ``argparse`` settings of its flag (help text,
type, choices...) in its metadata; its flag is ``--`` and the field's name with ``-`` for
``_`` (or ``flag=``), its default the field's default, and a field without default is a
required flag. :func:`pyro_bkd.cli.add_options` adds the flags of a dataclass to a parser,
in field order, and the parsed values go back into the dataclass by name. Each dataclass
checks its values in ``__post_init__`` and raises :class:`~pyro_bkd.InputError` naming the
flag, so the library and the command refuse the same values with the same message.

The argument types below only parse; ranges are checked by the dataclasses
(:data:`~pyro_bkd.pipeline.common.LIMITS`).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field
from typing import Any

#: Key of the command-line settings in a field's metadata.
CLI = "cli"


def option(default: Any = MISSING, **settings: Any) -> Any:
    """A dataclass field that is a command-line flag: ``settings`` are the keyword arguments
    of ``argparse``'s ``add_argument`` (``help``, ``type``, ``choices``, ``metavar``,
    ``action``), plus ``flag`` (the flag's name when it is not the field's) and ``group`` (the
    name of a mutually exclusive group)."""
    return field(default=default, metadata={CLI: settings})


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


OUT_HELP = "output directory (created if needed)"
SEED_HELP = "random seed (0)"
DATA_ROOT_HELP = "folder holding mnist/, fashion-mnist/, cifar10/"
