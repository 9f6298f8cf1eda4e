"""Teachers: maximum-likelihood (MLL) and maximum-CMI (MCMI) training, logits, CMI (SPEC §6).

Teacher output ``P_x = softmax(t(x))`` (``T = 1``), class centroids ``Q_y = E[P_X | Y = y]``.

- MLL minimises the mean cross entropy ``CE(y, P_x) = -log P_x[y]``.
- MCMI (Ye et al., ICLR 2024) fine-tunes an MLL teacher on
  ``mean_batch [CE(y, P_x) - lam_cmi KL(P_x || Q_y)]``: the minus sign *maximises* the
  conditional mutual information ``I(X; Yhat | Y) = E KL(P_X || Q_Y)``. As in the authors' code,
  ``Q_y`` is computed once with the starting teacher over the whole training set and kept fixed;
  an EMA of the batch means is an option.

Once trained, a teacher is only read: :func:`teacher_logits` runs it in eval mode without
gradients, and :func:`freeze` makes sure it can never be trained by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pyro_bkd import _checks
from pyro_bkd._checks import InputError
from pyro_bkd._torch import (
    EVAL_BATCH,
    batched_logits,
    default_device,
    eval_mode,
    network_logits,
    run_device,
    seeded,
)
from pyro_bkd.batches import EpochBatches
from pyro_bkd.cmi import (
    centroids_from_sums,
    class_centroids,
    class_sums,
    ema_centroids,
    kl_to_centroids,
)

Objective = Literal["mll", "mcmi"]
CentroidRule = Literal["fixed", "ema"]
OBJECTIVES: tuple[str, ...] = ("mll", "mcmi")
CENTROID_RULES: tuple[str, ...] = ("fixed", "ema")

LossTerms = dict[str, torch.Tensor]
_EVAL_BATCH = EVAL_BATCH  # batch size of the no-grad passes inside train_teacher


@dataclass
class TrainResult:
    """Outcome of :func:`train_teacher`.

    Attributes:
        model: the trained teacher (the module passed in, trained in place), in eval mode.
        history: one value per epoch under ``"loss"``, ``"ce"`` (and ``"kl"``, the mean
            ``KL(P_x || Q_y)`` of the MCMI term), all averaged over the epoch's examples as
            computed in train mode during the epoch; ``"train_acc"`` (running accuracy over
            the same batches); ``"lr"`` (the learning rate used in the epoch) and, when
            validation data are given, ``"val_acc"`` (eval mode, after the epoch).
    """

    model: nn.Module
    history: dict[str, list[float]]


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and turn off ``requires_grad`` of every parameter; return it.

    A frozen teacher cannot be trained by accident: :func:`train_teacher` refuses it and
    gradients never reach it.
    """
    model.eval()
    model.requires_grad_(False)
    return model


def teacher_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Teacher logits ``t(x_i)``, shape ``[N, K]``, on the CPU: the
    :func:`pyro_bkd._torch.network_logits` of the teacher (eval mode, no gradients, in
    batches; ``device=None`` runs on the model's device)."""
    return network_logits(model, x, batch_size, device)


def streaming_cmi(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Plug-in CMI ``(1/N) sum_i KL(P_{x_i} || Q_{y_i})`` of ``model`` over a loader of batches.

    Two passes over ``loader`` (which must yield the same examples both times, so no random
    augmentation): the first accumulates per-class sums of ``P_x`` to get the centroids
    ``Q_y``, the second sums the KL terms; no more than one batch of outputs is held at a time.
    Runs in eval mode under ``torch.no_grad`` (mode restored), accumulates in float64 and
    returns a 0-dim float64 CPU tensor. ``device`` as in :func:`teacher_logits`.
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    device = run_device(model, device)
    with eval_mode(model), torch.no_grad():
        sums, counts = None, None
        for probs, labels in _probs_batches(model, loader, device, num_classes):
            batch_sums, batch_counts = class_sums(probs, labels, num_classes)
            sums = batch_sums if sums is None else sums + batch_sums
            counts = batch_counts if counts is None else counts + batch_counts
        if sums is None or counts is None:
            raise InputError("loader yielded no batches")
        centroids = centroids_from_sums(sums, counts)
        total = sums.new_zeros(())
        for probs, labels in _probs_batches(model, loader, device, num_classes):
            total += kl_to_centroids(probs, labels, centroids).sum()
    return (total / counts.sum()).cpu()


def mcmi_loss(
    logits: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, cmi_weight: float
) -> LossTerms:
    """MCMI loss terms ``{"loss", "ce", "kl"}``, each a batch mean.

    ``loss = mean_i [CE(y_i, P_{x_i}) - lam_cmi KL(P_{x_i} || Q_{y_i})]`` with
    ``P_x = softmax(logits)`` and ``lam_cmi = cmi_weight``. ``KL`` is computed from
    ``log_softmax`` (finite gradients even when ``P_x`` underflows) against
    ``log Q`` clamped at the dtype's smallest normal number; ``centroids`` are treated as
    constants. A pure function: no checks, no host-device sync.
    """
    log_p = F.log_softmax(logits, dim=-1)
    log_q = centroids.detach().clamp_min(torch.finfo(centroids.dtype).tiny).log()
    kl = (log_p.exp() * (log_p - log_q[labels])).sum(-1).mean()
    ce = F.nll_loss(log_p, labels)
    return {"loss": ce - cmi_weight * kl, "ce": ce, "kl": kl}


def mll_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossTerms:
    """MLL loss terms ``{"loss", "ce"}``: the batch mean of ``CE(y_i, P_{x_i})``, twice."""
    ce = F.cross_entropy(logits, labels)
    return {"loss": ce, "ce": ce}


class _MCMIObjective:
    """MCMI loss with centroids ``Q_y`` kept fixed, or moved by EMA after each batch."""

    def __init__(
        self, centroids: torch.Tensor, cmi_weight: float, ema_momentum: float | None
    ) -> None:
        self.centroids = centroids
        self.cmi_weight = cmi_weight
        self.ema_momentum = ema_momentum

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        terms = mcmi_loss(logits, labels, self.centroids, self.cmi_weight)
        if self.ema_momentum is not None:
            probs = logits.detach().softmax(-1)
            self.centroids = ema_centroids(self.centroids, probs, labels, self.ema_momentum)
        return terms


def train_teacher(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    objective: Objective = "mll",
    epochs: int,
    lr: float,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    cmi_weight: float = 0.2,
    centroids: CentroidRule = "fixed",
    ema_momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` in place as a teacher by MLL or MCMI (SPEC §6); return it in eval mode.

    Args:
        model: network mapping ``x`` to logits ``t(x)`` of shape ``[N, K]``. For
            ``objective="mcmi"`` it should already be trained by MLL (the authors' recipe).
        x, y: training inputs ``[N, ...]`` and labels ``[N]`` in ``[0, K)``.
        objective: ``"mll"`` minimises ``mean CE(y, P_x)``; ``"mcmi"`` minimises
            ``mean [CE(y, P_x) - lam_cmi KL(P_x || Q_y)]`` (:func:`mcmi_loss`).
        epochs, lr, batch_size, weight_decay, momentum: SGD with momentum and weight decay,
            learning rate annealed by ``CosineAnnealingLR(T_max=epochs)`` stepped per epoch.
            Each epoch splits a fresh permutation of the data into ``ceil(N / batch_size)``
            batches of near-equal size (so no tiny last batch).
        cmi_weight: ``lam_cmi >= 0`` (the authors use 0.1-0.25). Ignored by ``"mll"``.
        centroids: ``"fixed"``: ``Q_y`` is computed once, with the starting model in eval mode
            over the whole training set, and kept; ``"ema"``: starts there and after each
            batch moves ``Q_y <- m Q_y + (1 - m) mean_batch(P_x | y)`` (detached) for the
            classes in the batch. Ignored by ``"mll"``.
        ema_momentum: ``m in [0, 1)`` of the EMA.
        seed: seeds batch order and any randomness of the model (e.g. dropout) inside a
            forked RNG, so the global RNG state is left untouched.
        device: where to train; ``None`` means CUDA when available, else CPU. The model and
            the data (all of ``x``, ``y`` and the validation set) are moved there.
        progress: show a tqdm bar over epochs.
        x_val, y_val: optional validation set; its accuracy is recorded after each epoch.
    """
    _check_choice("objective", objective, OBJECTIVES)
    _check_choice("centroids", centroids, CENTROID_RULES)
    _check_hyperparameters(objective, epochs, lr, batch_size, weight_decay, momentum, cmi_weight)
    ema = _checks.fraction("ema_momentum", ema_momentum)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("model has no parameter that requires grad (frozen?); nothing to train")
    device = default_device(device)
    model.to(device)
    x, y = _training_data(model, device, x, y, "x", "y", None)
    validation = None
    if x_val is not None or y_val is not None:
        validation = _training_data(model, device, x_val, y_val, "x_val", "y_val", x.shape[1:])

    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossTerms] = mll_loss
    if objective == "mcmi":
        start_probs = batched_logits(model, x, _EVAL_BATCH, device).softmax(-1)
        start = class_centroids(start_probs, y, start_probs.shape[-1])
        loss_fn = _MCMIObjective(start, float(cmi_weight), ema if centroids == "ema" else None)

    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    batches = EpochBatches(x.shape[0], batch_size, device=x.device, split="even")
    history: dict[str, list[float]] = {}
    with seeded(seed, device):
        bar = tqdm(range(epochs), desc=f"{objective} teacher", disable=not progress)
        for _ in bar:
            record = {"lr": optimizer.param_groups[0]["lr"]}
            record |= _train_epoch(model, x, y, loss_fn, optimizer, batches)
            scheduler.step()
            if validation is not None:
                record["val_acc"] = _accuracy(model, *validation)
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            bar.set_postfix({key: f"{value:.4g}" for key, value in record.items() if key != "lr"})
    model.eval()
    return TrainResult(model=model, history=history)


def _train_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossTerms],
    optimizer: torch.optim.Optimizer,
    batches: EpochBatches,
) -> dict[str, float]:
    """One pass over a fresh permutation; example-weighted means of the terms and accuracy."""
    model.train()
    num_examples = x.shape[0]
    totals: dict[str, torch.Tensor] = {}
    for (idx,) in batches.epoch():  # from the global RNG, which ``seeded`` fixes
        logits = model(x[idx])
        terms = loss_fn(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        terms["train_acc"] = (logits.argmax(-1) == y[idx]).float().mean()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0) + value.detach() * len(idx)
    return {key: (total / num_examples).item() for key, total in totals.items()}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (batched_logits(model, x, _EVAL_BATCH, y.device).argmax(-1) == y).double().mean().item()


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """``K``: the width of the model's output on the first example."""
    return batched_logits(model, x[:1], 1, x.device).shape[-1]


def _probs_batches(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    num_classes: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(P_x in float64, y)`` per batch of ``loader``, labels checked, on ``device``."""
    for x, y in loader:
        _checks.labels("y", y, x.shape[0], num_classes)
        yield model(x.to(device)).double().softmax(-1), y.to(device=device, dtype=torch.long)


def _training_data(
    model: nn.Module,
    device: torch.device,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    x_name: str,
    y_name: str,
    feature_shape: torch.Size | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``x [N, ...]`` and ``y [N]`` with labels in ``[0, K)``; return both on ``device``."""
    if x is None or y is None:
        raise InputError(f"give both {x_name} and {y_name}, or neither")
    _checks.tensor(x_name, x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise InputError(f"{x_name} must hold at least one example, got shape {tuple(x.shape)}")
    if feature_shape is not None and x.shape[1:] != feature_shape:
        raise InputError(
            f"{x_name} must have feature shape {tuple(feature_shape)} like x, "
            f"got {tuple(x.shape[1:])}"
        )
    x = x.to(device)
    _checks.labels(y_name, y, x.shape[0], _num_classes(model, x))
    return x, y.to(device=device, dtype=torch.long)


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InputError(f"{name} must be one of {valid}, got {value!r}")


def _check_hyperparameters(
    objective: str,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    momentum: float,
    cmi_weight: float,
) -> None:
    _checks.positive_int("epochs", epochs)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_float("lr", lr)
    _checks.nonnegative_float("weight_decay", weight_decay)
    _checks.fraction("momentum", momentum)
    if objective != "mcmi":
        return
    if isinstance(cmi_weight, int | float) and cmi_weight < 0:
        raise InputError(
            f"cmi_weight must be >= 0 with objective='mcmi', got {cmi_weight!r}: the MCMI loss "
            "is CE - cmi_weight * KL(P_x || Q_y), so a negative weight would minimise the "
            "conditional mutual information instead of maximising it"
        )
    _checks.nonnegative_float("cmi_weight", cmi_weight)
