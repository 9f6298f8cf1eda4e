"""Few-shot and zero-shot subsets of a training set for the student (SPEC §6).

- Few-shot: the student sees a stratified fraction of every class (MCMI: 5%, 10%, 25%).
- Zero-shot: every example of the omitted classes is removed from the student's data.

Both take labels as a torch tensor or a numpy array (any integer dtype, one dimension,
class indices ``>= 0``) and return sorted ``int64`` indices into them as a ``torch.LongTensor``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from pyro_bkd._checks import InputError, InputTypeError


def few_shot_indices(y: torch.Tensor | np.ndarray, fraction: float, seed: int = 0) -> torch.Tensor:
    """Stratified subset: ``n_c' = max(1, floor(fraction * n_c + 1/2))`` examples of each class.

    Args:
        y: ``[N]`` integer labels; every class present in ``y`` keeps at least one example.
        fraction: share of each class to keep, in ``(0, 1]`` (``1`` keeps everything).
        seed: seed of the draw without replacement; equal seeds give equal subsets.

    Returns:
        Sorted indices into ``y``.
    """
    labels = _labels(y)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InputTypeError(f"fraction must be a number, got {type(fraction).__name__}")
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        size = max(1, math.floor(fraction * members.size + 0.5))
        chosen.append(rng.choice(members, size=size, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def zero_shot_indices(
    y: torch.Tensor | np.ndarray, omit_classes: int | Iterable[int]
) -> torch.Tensor:
    """All indices ``i`` with ``y_i`` not in ``omit_classes``, sorted.

    Args:
        y: ``[N]`` integer labels in ``[0, K)``, ``K = max(y) + 1``.
        omit_classes: the class or classes to remove, each in ``[0, K)``; may be empty.

    Raises:
        ValueError: a class outside ``[0, K)``, or nothing left (every class omitted).
    """
    labels = _labels(y)
    num_classes = int(labels.max()) + 1
    omitted = _classes(omit_classes)
    outside = omitted[(omitted < 0) | (omitted >= num_classes)]
    if outside.size:
        raise InputError(
            f"omit_classes must be in [0, {num_classes}) (the classes of y), "
            f"got {sorted(outside.tolist())}"
        )
    kept = np.flatnonzero(~np.isin(labels, omitted))
    if kept.size == 0:
        raise InputError(f"omit_classes {sorted(set(omitted.tolist()))} removes every example")
    return torch.from_numpy(kept.astype(np.int64))


def _classes(omit_classes: int | Iterable[int]) -> np.ndarray:
    """``omit_classes`` (an int, an iterable of ints, an array or a tensor) as a 1-D array."""
    if isinstance(omit_classes, torch.Tensor):
        omit_classes = omit_classes.detach().cpu().numpy()
    if isinstance(omit_classes, int | np.integer):
        omit_classes = [omit_classes]
    if not isinstance(omit_classes, np.ndarray):
        omit_classes = np.asarray(list(omit_classes))
    omitted = omit_classes.ravel()
    if omitted.size and not np.issubdtype(omitted.dtype, np.integer):
        raise InputTypeError(f"omit_classes must hold integer classes, got {omitted.tolist()!r}")
    return omitted.astype(np.int64)


def _labels(y: torch.Tensor | np.ndarray) -> np.ndarray:
    """``y`` as a 1-D ``int64`` numpy array of class indices ``>= 0``, checked."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if not isinstance(y, np.ndarray):
        raise InputTypeError(f"y must be a torch.Tensor or numpy array, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputTypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"y must be a non-empty 1-D array of labels, got shape {y.shape}")
    if y.min() < 0:
        raise InputError(f"y must hold class indices >= 0, got minimum {int(y.min())}")
    return y.astype(np.int64)
