"""Helpers shared by the jobs of :mod:`pyro_bkd.pipeline`: devices, output folders, students
built from a name, point predictions, JSON and figure writing, option checks."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_bkd import _atomic, _checks, metrics, models
from pyro_bkd._checks import InputError
from pyro_bkd._torch import seeded

Log = Callable[[str], None]

#: Students that flatten their input (input size: features per example).
FULLY_CONNECTED: tuple[str, ...] = ("linear", "mlp")
#: Students whose size follows a colon: ``mlp:H1,H2,...`` (hidden widths), ``small_cnn:W``.
WIDTH_OPTION: dict[str, str] = {"mlp": "hidden", "small_cnn": "width"}


def quiet(_: str) -> None:
    """The default ``log``: say nothing."""


#: The range of every numeric option: wide enough for any sensible run, narrow enough that the
#: arithmetic stays finite in float32 and a run ends. ``(low, high)``, both included.
LIMITS: dict[str, tuple[float, float]] = {
    "--temperature": (1e-2, 1e2),
    "--strength": (0.0, 1e6),
    "--prior-scale": (1e-4, 1e4),
    "--step-size": (1e-12, 1e3),
    "--lr": (1e-8, 10.0),
    "--finetune-lr": (1e-8, 10.0),
    "--cmi-weight": (0.0, 1e3),
    "--num-samples": (1, 10**6),
    "--chains": (1, 1024),
    "--warmup": (0, 10**7),
    "--thin": (1, 10**4),
    "--batch-size": (1, 10**7),
    "--warm-epochs": (0, 10**5),
    "--epochs": (1, 10**5),
    "--mll-epochs": (1, 10**5),
    "--steps": (1, 10**7),
    "--num-train": (2, 10**7),
    "--num-test": (1, 10**7),
    "--seed": (0, 2**32 - 1),
    "--threads": (1, 1024),
}
#: Largest student or teacher (weights), checked before its weights are allocated.
MAX_WEIGHTS = 50_000_000
#: Largest buffer of draws (class probabilities, kept weights) a run may allocate.
MAX_BUFFER_BYTES = 4 * 2**30
#: Most iterations of one chain (warm-up plus kept draws times the thinning).
MAX_CHAIN_ITERATIONS = 10**8


def check_number(flag: str, value: object) -> float:
    """``value`` as a float after checking it lies in ``LIMITS[flag]``; the message names it."""
    low, high = LIMITS[flag]
    return _checks.float_in(flag, value, low, high)


def check_count(flag: str, value: object) -> int:
    """``value`` after checking it is an int in ``LIMITS[flag]``; the message names it."""
    low, high = LIMITS[flag]
    return _checks.int_in(flag, value, int(low), high)


def check_buffer(what: str, nbytes: int, advice: str) -> None:
    """Refuse a buffer of ``nbytes`` above :data:`MAX_BUFFER_BYTES` before allocating it."""
    if nbytes > MAX_BUFFER_BYTES:
        raise InputError(
            f"{what} would need {nbytes / 2**30:.3g} GiB (limit "
            f"{MAX_BUFFER_BYTES / 2**30:g} GiB); {advice}"
        )


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise the named device, which
    must exist (``cpu``, ``cpu:0``, ``cuda``, ``cuda:N`` with ``N`` below the device count)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"--device: unknown device {device!r}; use auto, cpu, cuda or cuda:N"
        ) from error
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"--device: unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r} was asked for but CUDA is not available")
    count = 1 if resolved.type == "cpu" else torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise InputError(
            f"--device {device!r} does not exist: {count} {resolved.type} device(s), "
            f"numbered from 0"
        )
    return resolved


def check_out_dir(out: object) -> Path:
    """Check ``--out`` names a folder this process can create or write, before any work.

    Refused: an empty or non-string path, the root, an existing file, a dangling symbolic
    link, a name longer than the file system allows, an existing folder that is not writable,
    and a parent (where the outputs are staged) whose nearest existing ancestor is not a
    writable folder.
    """
    if not isinstance(out, str | os.PathLike) or not os.fspath(out):
        raise InputError(f"--out must name a folder, got {out!r}")
    path = Path(out)
    try:
        _check_folder_path(path)
    except OSError as error:  # e.g. a name too long for the file system
        raise InputError(f"--out {os.fspath(out)!r}: {error.strerror or error}") from None
    return path


def _check_folder_path(path: Path) -> None:
    """The checks of :func:`check_out_dir`: the staging folder goes into ``path``'s parent
    (created if missing), whose nearest existing ancestor must be a writable folder, and the
    files then move into ``path``, which must be a writable folder if it exists."""
    shown = os.fspath(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"--out {shown!r} is a symbolic link to a missing target")
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {shown!r} exists and is not a directory")
    absolute = Path(os.path.abspath(path))
    ancestor = next((p for p in absolute.parents if p.exists() or p.is_symlink()), None)
    if ancestor is None:
        raise InputError(f"--out {shown!r} has no parent folder to stage the outputs in")
    if not ancestor.is_dir():
        raise InputError(f"--out {shown!r}: {os.fspath(ancestor)!r} is not a directory")
    limit = os.pathconf(ancestor, "PC_NAME_MAX")
    if any(len(os.fsencode(part)) > limit for part in absolute.parts):
        raise InputError(f"--out {shown!r}: a name in it is longer than {limit} bytes")
    for folder in (ancestor, path) if path.exists() else (ancestor,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"--out {shown!r}: cannot write in {os.fspath(folder)!r}")


@contextmanager
def output_folder(out: str | os.PathLike[str], run: Mapping[str, Any]) -> Iterator[Path]:
    """A staging folder whose files become ``out``'s when the block ends cleanly
    (:func:`pyro_bkd._atomic.staged_output`); ``run`` goes into ``manifest.json``."""
    with _atomic.staged_output(os.path.abspath(check_out_dir(out)), run) as staging:
        yield staging


def save_posterior(idata: Any, path: Path) -> None:
    """:func:`pyro_bkd.export.save` after checking the disk has room for the file: HDF5 may
    crash the process when a write fails on a full disk."""
    from pyro_bkd import export

    nbytes = sum(int(idata[group].nbytes) for group in idata.groups())
    _atomic.ensure_space(path, nbytes)
    export.save(idata, path)


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
        raise InputError(f"student must be a non-empty name; valid: {', '.join(valid)}")
    name, _, widths = spec.partition(":")
    sized = name in WIDTH_OPTION
    if name not in models.available() or (widths and not sized) or (":" in spec and not widths):
        raise InputError(f"unknown student {spec!r}; valid: {', '.join(valid)}")
    kwargs = _width_options(spec, name, widths)
    features = math.prod(x.shape[1:])
    if name in FULLY_CONNECTED:
        inputs = {"in_features": features}
    else:
        if x.dim() != 4:
            raise InputError(
                f"student {spec!r} is convolutional and needs image inputs x [N, C, H, W]; "
                f"got x of shape {tuple(x.shape)} (use linear or mlp for flat inputs)"
            )
        inputs = {"in_channels": int(x.shape[1])}
    with torch.device("meta"):  # count the weights before allocating them
        size = num_weights(models.build(name, num_classes, **inputs, **kwargs))
    if size > MAX_WEIGHTS:
        raise InputError(f"student {spec!r} has {size} weights; at most {MAX_WEIGHTS} are allowed")
    with seeded(seed):
        student = models.build(name, num_classes, **inputs, **kwargs)
    try:
        with torch.no_grad():
            logits = student.eval()(x[:2].float().cpu())
    except RuntimeError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(
            f"student {spec!r} does not accept inputs of shape {tuple(x.shape[1:])}: {message}"
        ) from None
    if tuple(logits.shape) != (min(2, x.shape[0]), num_classes):
        raise InputError(
            f"student {spec!r} returns logits of shape {tuple(logits.shape)}, expected "
            f"({min(2, x.shape[0])}, {num_classes})"
        )
    return student


def _width_options(spec: str, name: str, widths: str) -> dict[str, Any]:
    """The width keyword of ``models.build`` from ``spec``'s ``:W`` or ``:H1,H2,...`` part."""
    kwargs: dict[str, Any] = {}
    if widths:
        if name == "mlp":
            problem = f"student {spec!r}: hidden widths must be positive integers, e.g. mlp:128,128"
        else:
            problem = f"student {spec!r}: width must be one positive integer, e.g. {name}:16"
        try:
            sizes = tuple(int(width) for width in widths.split(","))
        except ValueError:
            raise InputError(problem) from None
        if not all(width > 0 for width in sizes) or (name != "mlp" and len(sizes) != 1):
            raise InputError(problem)
        kwargs[WIDTH_OPTION[name]] = sizes if name == "mlp" else sizes[0]
    return kwargs


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


#: The folder of a run's figures, relative to the run directory (the report shows its PNGs).
PLOT_DIR = "plots"


def write_figures(run_dir: Path, figures: Mapping[str, Callable[[], Any]]) -> list[str]:
    """Render each ``figures[name]()`` to ``run_dir/plots/<name>.png`` (atomically, in order);
    returns the paths relative to ``run_dir``, as :func:`pyro_bkd.report.write_report` links
    them. ArviZ's matplotlib deprecation warnings are silenced while drawing."""
    plot_dir = run_dir / PLOT_DIR
    plot_dir.mkdir(exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's matplotlib deprecation warnings
        for name, make in figures.items():
            save_figure(make(), plot_dir / f"{name}.png")
            written.append(f"{PLOT_DIR}/{name}.png")
    return written


def posterior_figures(
    probs: torch.Tensor,
    label: str,
    *,
    y: torch.Tensor | None = None,
    p_true: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Callable[[], Any]]:
    """The figures of one method's class-probability draws ``probs [chain, draw, N, K]``, to
    pass to :func:`write_figures` (``label`` ends their names):

    - ``reliability_<label>`` (with labels ``y``): accuracy against confidence of the
      posterior mean ``qbar(x_n) = mean_s q^(s)(x_n)`` (:func:`pyro_bkd.plots.reliability_diagram`);
    - ``intervals_highest_deviance``: 95% HDIs of every ``q_k(x_n)`` for the 6 inputs of
      largest mean deviance ``MD_n = (1/S) sum_s -2 sum_k q_k^(s) log q_k^(s)``, with the true
      label and ``p*`` when given (:func:`pyro_bkd.plots.interval_forest`);
    - ``trace_<label>``, ``rank_<label>`` (2 draws per chain or more): ArviZ trace and rank
      plots of ``q_k(x_n)`` at the predicted class of the 3 inputs of largest ``MD``.
    """
    from pyro_bkd import plots, uq

    deviance = uq.mean_deviance(probs)
    worst = [int(n) for n in np.argsort(-deviance, kind="stable")[:6]]
    predicted = uq.posterior_mean(probs).argmax(axis=1)
    pairs = [(n, int(predicted[n])) for n in worst[:3]]
    figures: dict[str, Callable[[], Any]] = {}
    if y is not None:
        figures[f"reliability_{label}"] = lambda: plots.reliability_diagram(
            probs, y, title=f"{label.upper()} reliability"
        )
    figures["intervals_highest_deviance"] = lambda: plots.interval_forest(
        probs, worst, y=y, p_true=p_true, class_names=class_names
    )
    if probs.shape[1] >= 2:
        figures[f"trace_{label}"] = lambda: plots.trace_plot(probs, pairs)
        figures[f"rank_{label}"] = lambda: plots.rank_plot(probs, pairs)
    return figures


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
