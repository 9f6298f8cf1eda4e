"""Argument checks shared by the public API: each failure names the argument and the expectation."""

from __future__ import annotations

import math

import torch


def positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float after checking it is a finite number ``> 0``."""
    number = _as_float(name, value)
    if not number > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float after checking it is a finite number ``>= 0``."""
    number = _as_float(name, value)
    if not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def positive_int(name: str, value: object) -> int:
    """Return ``value`` after checking it is an ``int`` (not a bool) ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def tensor(name: str, value: object) -> torch.Tensor:
    """Check ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def labels(name: str, y: torch.Tensor, num_examples: int, num_classes: int | None) -> None:
    """Check ``y`` holds ``num_examples`` integer labels in ``[0, num_classes)``."""
    tensor(name, y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (num_examples,):
        raise ValueError(
            f"{name} must have shape ({num_examples},) to match x, got {tuple(y.shape)}"
        )
    if num_classes is not None and y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must hold labels in [0, {num_classes}), "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )


def logits(name: str, value: torch.Tensor, num_examples: int) -> None:
    """Check ``value`` is a finite floating ``[num_examples, K]`` matrix with ``K >= 2``."""
    tensor(name, value)
    if value.dim() != 2 or value.shape[0] != num_examples or value.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape ({num_examples}, K) with K >= 2 classes, "
            f"got {tuple(value.shape)}"
        )
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite; it holds NaN or inf")


def same_device(reference: str, device: torch.device, **named: torch.Tensor | None) -> None:
    """Check every given tensor lives on ``device`` (the device of ``reference``)."""
    for name, value in named.items():
        if value is not None and value.device != device:
            raise ValueError(
                f"{name} is on {value.device} but {reference} is on {device}; "
                f"move them to one device"
            )
