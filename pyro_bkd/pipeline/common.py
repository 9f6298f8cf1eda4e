"""Helpers shared by the jobs of :mod:`pyro_bkd.pipeline`: devices, output folders, students
built from a name, point predictions, JSON and figure writing, option checks."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_bkd import _atomic, metrics, models

Log = Callable[[str], None]

#: Students that flatten their input (input size: features per example).
FULLY_CONNECTED: tuple[str, ...] = ("linear", "mlp")
#: Students whose size follows a colon: ``mlp:H1,H2,...`` (hidden widths), ``small_cnn:W``.
WIDTH_OPTION: dict[str, str] = {"mlp": "hidden", "small_cnn": "width"}


def quiet(_: str) -> None:
    """The default ``log``: say nothing."""


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the named device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def prepare_out_dir(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` (and its parents) if needed; refuse a path that is an existing file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {os.fspath(out)!r} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_student(spec: str, x: torch.Tensor, num_classes: int, seed: int = 0) -> nn.Module:
    """The student network named by ``spec``, with initial weights drawn from ``seed``.

    ``spec`` is ``linear`` (softmax regression), ``mlp`` (hidden 256, 256), ``mlp:H1,H2,...``
    (ReLU MLP with those hidden widths), ``small_cnn:W`` (first convolution of ``W`` channels)
    or any name of :func:`models.available`. Fully
    connected students flatten their input, so their input size is the number of features per
    example of ``x``; convolutional ones need images ``x [N, C, H, W]``. The student is run on
    two examples of ``x`` to check it accepts them and returns ``[2, num_classes]`` logits.
    The global RNG state is left untouched.
    """
    valid = [
        "linear",
        "mlp",
        "mlp:H1,H2,...",
        "small_cnn:W",
        *(m for m in models.available() if m != "mlp"),
    ]
    valid = list(dict.fromkeys(valid))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"student must be a non-empty name; valid: {', '.join(valid)}")
    name, _, widths = spec.partition(":")
    sized = name in WIDTH_OPTION
    if name not in models.available() or (widths and not sized) or (":" in spec and not widths):
        raise ValueError(f"unknown student {spec!r}; valid: {', '.join(valid)}")
    kwargs: dict[str, Any] = {}
    if widths:
        if name == "mlp":
            problem = f"student {spec!r}: hidden widths must be positive integers, e.g. mlp:128,128"
        else:
            problem = f"student {spec!r}: width must be one positive integer, e.g. {name}:16"
        try:
            sizes = tuple(int(width) for width in widths.split(","))
        except ValueError:
            raise ValueError(problem) from None
        if not all(width > 0 for width in sizes) or (name != "mlp" and len(sizes) != 1):
            raise ValueError(problem)
        kwargs[WIDTH_OPTION[name]] = sizes if name == "mlp" else sizes[0]
    features = math.prod(x.shape[1:])
    if name in FULLY_CONNECTED:
        inputs = {"in_features": features}
    else:
        if x.dim() != 4:
            raise ValueError(
                f"student {spec!r} is convolutional and needs image inputs x [N, C, H, W]; "
                f"got x of shape {tuple(x.shape)} (use linear or mlp for flat inputs)"
            )
        inputs = {"in_channels": int(x.shape[1])}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = models.build(name, num_classes, **inputs, **kwargs)
    try:
        with torch.no_grad():
            logits = student.eval()(x[:2].float().cpu())
    except RuntimeError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"student {spec!r} does not accept inputs of shape {tuple(x.shape[1:])}: {message}"
        ) from None
    if tuple(logits.shape) != (min(2, x.shape[0]), num_classes):
        raise ValueError(
            f"student {spec!r} returns logits of shape {tuple(logits.shape)}, expected "
            f"({min(2, x.shape[0])}, {num_classes})"
        )
    return student


def point_probs(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)`` as one draw of one chain, ``[1, 1, N, K]``."""
    return logits.double().softmax(-1).float()[None, None]


def num_weights(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seconds(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def save_figure(figure: Any, path: Path) -> None:
    with _atomic.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def write_json(path: Path, values: Mapping[str, Any]) -> None:
    _atomic.write_text(path, json.dumps(values, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Non-finite floats become ``None`` (valid JSON), recursively."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            value = clean(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        cleaned[key] = value
    return cleaned


POINT_KEYS = ("accuracy", "nll", "ece", "brier", "md_auroc", "mean_deviance")


def summary_of_point(probs: Any, y: Any) -> dict[str, Any]:
    """The :func:`pyro_bkd.metrics.summarize` fields that make sense for one draw (a point
    estimate has no interval, so no coverage, and no convergence diagnostics)."""
    summary = metrics.summarize(probs, y)
    return {key: summary[key] for key in POINT_KEYS}


def point_metrics(logits: torch.Tensor, y: torch.Tensor | None) -> dict:
    """Accuracy, NLL, ECE, Brier, MD AUROC, mean deviance of a point prediction."""
    return summary_of_point(point_probs(logits), y)


def check_positive(flag: str, value: float) -> None:
    """``value`` must be a finite number ``> 0``; the message names ``flag``."""
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{flag} must be a finite number > 0, got {value!r}")


def check_int(flag: str, value: int, minimum: int) -> None:
    """``value`` must be an ``int >= minimum``; the message names ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def cuda_indices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG :func:`torch.random.fork_rng` must fork (none on CPU)."""
    if device.type != "cuda":
        return []
    return [torch.cuda.current_device() if device.index is None else device.index]
