"""Conditional mutual information of a classifier's outputs given the labels (SPEC §6).

For outputs ``P_x = softmax(t(x))`` (``T = 1``) and labels ``y``, the class centroid is
``Q_y = E[P_X | Y = y]`` and the conditional mutual information is
``I(X; Yhat | Y) = E_(X,Y) KL(P_X || Q_Y)``. The plug-in estimate over ``N`` examples uses
per-class means of ``P_x`` as centroids and averages ``KL(P_{x_i} || Q_{y_i})`` over ``i``.
Everything here is pure tensor math; running a model over data lives in
:mod:`pyro_bkd.teachers` (:func:`pyro_bkd.teachers.streaming_cmi`).
"""

from __future__ import annotations

import torch

from pyro_bkd import _checks


def class_sums(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums ``S_c = sum_{i: y_i = c} P_{x_i}`` (``[C, D]``) and counts ``n_c`` (``[C]``).

    No checks and no host-device sync: the building block of :func:`class_centroids`, of the
    streaming estimate and of the EMA centroid update during MCMI training.
    """
    sums = probs.new_zeros(num_classes, probs.shape[-1]).index_add_(0, labels, probs)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums, counts


def centroids_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``Q_c = S_c / n_c``; a class with ``n_c = 0`` gets a row of NaN (``0 / 0``)."""
    return sums / counts.unsqueeze(-1).to(sums.dtype)


def class_centroids(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class centroids ``Q_c = (1 / n_c) sum_{i: y_i = c} P_{x_i}``, shape ``[num_classes, D]``.

    Args:
        probs: ``[N, D]`` rows ``P_{x_i}`` (probability vectors for the CMI).
        labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: number ``C`` of centroid rows.

    A class without examples has no centroid: its row is NaN. Such rows are harmless to
    :func:`cmi` and :func:`kl_to_centroids`, which only read the rows of classes present in
    ``labels`` (a zero-shot subset legitimately misses classes); :func:`cmi` raises if a label
    points at a NaN row.
    """
    _check_probs("probs", probs)
    num_classes = _checks.positive_int("num_classes", num_classes)
    _checks.labels("labels", labels, probs.shape[0], num_classes)
    return centroids_from_sums(*class_sums(probs, labels.long(), num_classes))


def kl_to_centroids(
    probs: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor
) -> torch.Tensor:
    """Per-example ``KL(P_{x_i} || Q_{y_i}) = sum_k P_ik (log P_ik - log Q_{y_i,k})``, ``[N]``.

    ``0 log 0 = 0`` (``torch.xlogy``); ``log Q`` is clamped at the smallest normal number of the
    dtype so a zero in a centroid gives a large finite value instead of ``inf``. No checks:
    see :func:`cmi` for the checked estimate.
    """
    log_q = centroids.clamp_min(torch.finfo(centroids.dtype).tiny).log()
    return (torch.xlogy(probs, probs) - probs * log_q[labels]).sum(-1)


def cmi(
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    centroids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plug-in CMI ``(1/N) sum_i KL(P_{x_i} || Q_{y_i})``, a 0-dim tensor of ``probs``' dtype.

    Args:
        probs: ``[N, K]`` probabilities ``P_{x_i}`` (e.g. ``softmax`` of teacher logits, ``T = 1``).
        labels: ``[N]`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes; default ``centroids.shape[0]`` when centroids are given,
            else ``K``.
        centroids: ``[num_classes, K]`` centroids ``Q_y`` to measure against (e.g. the ones fixed
            at the start of MCMI training); default: the per-class means of ``probs``
            (:func:`class_centroids`), which makes this the plug-in estimate of SPEC §6.

    It is ``0`` exactly when every example's output equals its class centroid.
    """
    _check_probs("probs", probs)
    if num_classes is None:
        num_classes = probs.shape[1] if centroids is None else centroids.shape[0]
    num_classes = _checks.positive_int("num_classes", num_classes)
    _checks.labels("labels", labels, probs.shape[0], num_classes)
    labels = labels.long()
    if centroids is None:
        centroids = centroids_from_sums(*class_sums(probs, labels, num_classes))
    else:
        _check_centroids(centroids, labels, (num_classes, probs.shape[1]))
    return kl_to_centroids(probs, labels, centroids).mean()


def ema_centroids(
    centroids: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, momentum: float
) -> torch.Tensor:
    """EMA update ``Q_c <- m Q_c + (1 - m) mean_{i in batch: y_i = c} P_{x_i}``, shape ``[C, D]``.

    Only the classes present in the batch move; the others keep their centroid. ``probs`` is
    used as given: detach it first when it carries gradients. No checks, no host-device sync.
    """
    batch_means = centroids_from_sums(*class_sums(probs, labels, centroids.shape[0]))
    moved = momentum * centroids + (1.0 - momentum) * batch_means
    return torch.where(batch_means.isnan(), centroids, moved)


def _check_probs(name: str, probs: torch.Tensor) -> None:
    _checks.tensor(name, probs)
    if probs.dim() != 2 or not probs.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a floating [N, K] matrix, got shape {tuple(probs.shape)} "
            f"and dtype {probs.dtype}"
        )


def _check_centroids(centroids: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int]) -> None:
    _check_probs("centroids", centroids)
    if centroids.shape != shape:
        raise ValueError(f"centroids must have shape {shape}, got {tuple(centroids.shape)}")
    missing = torch.unique(labels[centroids[labels].isnan().any(-1)])
    if missing.numel():
        raise ValueError(
            f"centroids has no value (NaN row) for classes {missing.tolist()} present in labels"
        )
