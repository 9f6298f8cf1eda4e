"""Argument checks shared by the public API: each failure names the argument and the expectation.

Every check raises :class:`InputError` (a ``ValueError``), or :class:`InputTypeError` (also a
``TypeError``) when the value has the wrong type: callers catch ``InputError`` for any bad
input, and code written against the earlier ``ValueError``/``TypeError`` keeps working.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

#: Largest finite float32: inputs are computed in float32, so larger values overflow.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class InputError(ValueError):
    """Bad input to the library: a value out of range, a shape or file that does not fit.

    The message names the argument (or command-line flag, or file) and what was expected.
    """


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type (an :class:`InputError` that is also a ``TypeError``)."""


def float_in(
    name: str, value: object, low: float, high: float = math.inf, *, open_low: bool = False
) -> float:
    """Return ``value`` as a float after checking it is a finite number in ``[low, high]``.

    ``open_low=True`` excludes ``low`` itself (``(low, high]``).
    """
    number = _as_float(name, value)
    if (number <= low if open_low else number < low) or number > high:
        raise InputError(f"{name} must be {_interval(low, high, open_low)}, got {value!r}")
    return number


def positive_float(name: str, value: object, high: float = math.inf) -> float:
    """Return ``value`` as a float after checking it is a finite number in ``(0, high]``."""
    return float_in(name, value, 0.0, high, open_low=True)


def nonnegative_float(name: str, value: object, high: float = math.inf) -> float:
    """Return ``value`` as a float after checking it is a finite number in ``[0, high]``."""
    return float_in(name, value, 0.0, high)


def fraction(name: str, value: object, *, open_low: bool = False, note: str = "") -> float:
    """Return ``value`` as a float after checking it is a finite number in ``[0, 1)``
    (``(0, 1)`` with ``open_low``): a weight, a momentum, a probability. ``note`` follows the
    interval in the message."""
    number = _as_float(name, value)
    if (number <= 0 if open_low else number < 0) or number >= 1:
        raise InputError(f"{name} must be in {'(' if open_low else '['}0, 1){note}, got {value!r}")
    return number


def int_in(name: str, value: object, low: int, high: float = math.inf) -> int:
    """Return ``value`` after checking it is an ``int`` (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or value > high:
        raise InputError(f"{name} must be {_int_bounds(low, high)}, got {value}")
    return value


def positive_int(name: str, value: object, high: float = math.inf) -> int:
    """Return ``value`` after checking it is an ``int`` (not a bool) in ``[1, high]``."""
    return int_in(name, value, 1, high)


def _int_bounds(low: int, high: float) -> str:
    if math.isinf(high):
        return "> 0" if low == 1 else f"an integer >= {low}"
    return f"an integer in [{low}, {int(high)}]"


def _interval(low: float, high: float, open_low: bool) -> str:
    if math.isinf(high):
        return f"{'>' if open_low else '>='} {low:g}"
    return f"in {'(' if open_low else '['}{low:g}, {high:g}]"


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be finite, got {value!r}")
    return number


def tensor(name: str, value: object) -> torch.Tensor:
    """Check ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def inputs(name: str, value: object) -> torch.Tensor:
    """Check ``value`` is a real tensor ``[N, ...]`` with ``N >= 1`` and finite values."""
    tensor(name, value)
    assert isinstance(value, torch.Tensor)
    if value.dim() < 1 or value.shape[0] == 0:
        raise InputError(f"{name} must have a leading dimension N >= 1, got {tuple(value.shape)}")
    if value.dtype == torch.bool or value.is_complex():
        raise InputTypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    finite(name, value)
    return value


def finite(name: str, value: torch.Tensor) -> None:
    """Check a numeric tensor holds no NaN or inf and, if floating, fits in float32.

    Integer tensors always pass, and so do tensors on the ``meta`` device (they hold no values).
    """
    if not value.dtype.is_floating_point or value.device.type == "meta":
        return
    bad = ~torch.isfinite(value)
    if bad.any():
        raise InputError(f"{name} must be finite; {_count(bad, value)} hold NaN or inf")
    if value.dtype == torch.float64 and value.numel() and value.abs().max() > FLOAT32_MAX:
        raise InputError(f"{name} holds values beyond the float32 range (|x| > {FLOAT32_MAX:.3g})")


def _count(bad: torch.Tensor, value: torch.Tensor) -> str:
    if value.dim() < 2:
        return f"{int(bad.sum())} value(s)"
    return f"{int(bad.flatten(1).any(1).sum())} row(s)"


def labels(name: str, y: torch.Tensor, num_examples: int, num_classes: int | None) -> None:
    """Check ``y`` holds ``num_examples`` integer labels in ``[0, num_classes)``."""
    tensor(name, y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise InputTypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (num_examples,):
        raise InputError(
            f"{name} must have shape ({num_examples},) to match x, got {tuple(y.shape)}"
        )
    if num_classes is not None and y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise InputError(
            f"{name} must hold labels in [0, {num_classes}), "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )


def logits(name: str, value: torch.Tensor, num_examples: int) -> None:
    """Check ``value`` is a finite floating ``[num_examples, K]`` matrix with ``K >= 2``."""
    tensor(name, value)
    if value.dim() != 2 or value.shape[0] != num_examples or value.shape[1] < 2:
        raise InputError(
            f"{name} must have shape ({num_examples}, K) with K >= 2 classes, "
            f"got {tuple(value.shape)}"
        )
    if not value.dtype.is_floating_point:
        raise InputTypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    finite(name, value)


def same_device(reference: str, device: torch.device, **named: torch.Tensor | None) -> None:
    """Check every given tensor lives on ``device`` (the device of ``reference``)."""
    for name, value in named.items():
        if value is not None and value.device != device:
            raise InputError(
                f"{name} is on {value.device} but {reference} is on {device}; "
                f"move them to one device"
            )


def renamed(
    function: str, old_names: Mapping[str, str], given: Mapping[str, Any], /, **current: Any
) -> dict[str, Any]:
    """``current`` (the new keywords of ``function`` and their values) updated with the values
    given under old names: ``given`` holds the keywords passed under an old name, ``old_names``
    maps each old name to its new one. Each old name used issues a ``DeprecationWarning``
    naming the new keyword (attributed to the caller of ``function``); a keyword of ``given``
    that is no old name is an :class:`InputTypeError`."""
    unknown = set(given) - set(old_names)
    if unknown:
        raise InputTypeError(f"{function}() got unexpected keyword arguments {sorted(unknown)}")
    for old, value in given.items():
        new = old_names[old]
        warnings.warn(f"{function}({old}=) is renamed {new}=", DeprecationWarning, stacklevel=3)
        current[new] = value
    return current
