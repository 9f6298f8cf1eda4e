"""Knowledge distillation of a student by plain PyTorch training (the KD baseline, SPEC §3).

The student minimises the mean Hinton loss over minibatches ``B``,
``L_B = mean_{i in B} [(1 - alpha) CE(y_i, q_i) + alpha c KL(p_i || q_i^tau)]``
(:func:`pyro_bkd.kd.kd_loss`), with ``p_i = softmax(t_i / tau)``, ``q_i = softmax(z_i)``,
``q_i^tau = softmax(z_i / tau)`` and ``c = tau^2`` or ``1``. Without a teacher, or with
``alpha = 0``, it is the mean cross entropy: the student trained alone.

With the weight decay of :func:`weight_decay_for_prior`, the gradient of ``L_B`` plus the decay
is ``(1 - alpha) / N`` times the gradient of the negative log joint of
:class:`~pyro_bkd.BKDModel` (strength ``lam = alpha c / (1 - alpha)``) on the same minibatch
with the data terms rescaled by ``N / m``: KD with that decay is a MAP search for BKD, and the
KD student is the natural warm start for sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pyro_bkd import _checks
from pyro_bkd._checks import InputError, InputTypeError
from pyro_bkd._torch import EVAL_BATCH, default_device, device_of, eval_mode, seeded
from pyro_bkd.batches import EpochBatches
from pyro_bkd.data.record import DistillationData
from pyro_bkd.kd import (
    CONVENTIONS,
    Convention,
    alpha_from_strength,
    check_alpha,
    kd_kl,
    kd_loss,
    kl_scale,
    strength_from_alpha,
)
from pyro_bkd.model import BKDModel

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
_EVAL_BATCH = EVAL_BATCH  # batch size of the no-grad passes of accuracy()


@dataclass
class KDResult:
    """Outcome of :func:`train_student_kd`.

    Attributes:
        student: the trained student (the module passed in, trained in place), in eval mode.
        history: one value per epoch, averaged over the epoch's examples as computed in train
            mode during the epoch: ``"loss"`` (the minimised mean loss ``L``, without the
            weight decay term), ``"ce"`` (mean ``CE(y, q)``), ``"kl"`` (mean
            ``KL(p || q^tau)``, only with a teacher), ``"train_acc"`` (running accuracy over the
            same batches) and, with validation data, ``"val_acc"`` (eval mode, after the epoch).
    """

    student: nn.Module
    history: dict[str, list[float]]


def weight_decay_for_prior(
    prior_scale: float | None, num_examples: int, alpha: float = 0.0
) -> float:
    """The weight decay on a *mean* loss that matches the weight prior ``Normal(0, sigma^2 I)``.

    Returns ``wd = (1 - alpha) / (N sigma^2)``, the coefficient of an L2 penalty
    ``(wd / 2) ||theta||^2`` added to the mean loss, i.e. the ``weight_decay`` of
    ``torch.optim.SGD`` / ``torch.optim.Adam`` (coupled L2: ``wd * theta`` is added to the
    gradient; *not* AdamW's decoupled decay). Which mean loss:

    - ``alpha = 0``: the mean cross entropy ``mean_i CE(y_i, q_i)``, since
      ``N * (mean CE + (wd/2) ||theta||^2) = sum_i CE + ||theta||^2 / (2 sigma^2)`` with
      ``wd = 1 / (N sigma^2)`` (SPEC §2);
    - ``0 < alpha < 1``: the KD mean loss ``L`` of :func:`pyro_bkd.kd.kd_loss`, because the
      negative log posterior is ``N L / (1 - alpha) + ||theta||^2 / (2 sigma^2) + const``
      (SPEC §3), so ``N / (1 - alpha) * (L + (wd/2) ||theta||^2)`` needs
      ``wd = (1 - alpha) / (N sigma^2)``.

    ``prior_scale=None`` (a flat prior) gives ``0.0``.

    Raises:
        ValueError: ``prior_scale <= 0``, ``num_examples <= 0`` or ``alpha`` outside ``[0, 1)``.
    """
    n = _checks.positive_int("num_examples", num_examples)
    a = check_alpha(alpha)
    if prior_scale is None:
        return 0.0
    sigma = _checks.positive_float("prior_scale", prior_scale)
    return (1.0 - a) / (n * sigma * sigma)


def accuracy(
    student: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = _EVAL_BATCH
) -> float:
    """Share of ``x`` whose arg-max logit is the label ``y``.

    Runs in eval mode under ``torch.no_grad`` in batches on the student's device; the
    student's train/eval mode is restored afterwards.
    """
    _checks.tensor("x", x)
    _checks.labels("y", y, x.shape[0], None)
    batch_size = _checks.positive_int("batch_size", batch_size)
    device = device_of(student)
    with eval_mode(student), torch.no_grad():
        hits = sum(
            (student(xb.to(device)).argmax(-1) == yb.to(device)).sum().item()
            for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True)
        )
    return hits / x.shape[0]


def train_student_kd(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    convention: Convention = "tau2",
    epochs: int,
    batch_size: int = 128,
    lr: float,
    weight_decay: float = 0.0,
    optimizer: OptimizerName = "adam",
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
) -> KDResult:
    """Train ``student`` in place by knowledge distillation (Hinton et al., 2015); eval mode after.

    Minimises, per minibatch ``B``, ``L_B = (1 - alpha) mean CE(y, q) + alpha c mean KL(p ||
    q^tau)`` (:func:`pyro_bkd.kd.kd_loss`) plus the optimiser's coupled weight decay
    ``(wd / 2) ||theta||^2``. ``teacher_logits=None`` or ``alpha=0`` trains on ``mean CE`` only.
    To match the BKD weight prior ``Normal(0, sigma^2 I)`` pass
    ``weight_decay=weight_decay_for_prior(sigma, N, alpha)``; the KD optimum is then the MAP
    of :class:`~pyro_bkd.BKDModel` with ``strength = strength_from_alpha(alpha, tau,
    convention)``.

    Args:
        student: network mapping ``x`` to logits ``z = f(x; theta)`` of shape ``[N, K]``.
        x, y: training inputs ``[N, ...]`` and labels ``[N]`` in ``[0, K)``.
        teacher_logits: ``t [N, K]`` computed once beforehand (detached), or ``None``.
        temperature: ``tau > 0``.
        alpha: KD weight in ``[0, 1)``.
        convention: ``"tau2"`` (``c = tau^2``) or ``"one"`` (``c = 1``).
        epochs: passes over the data. Each epoch splits a fresh permutation (drawn from a
            ``torch.Generator`` seeded with ``seed``) into ``ceil(N / batch_size)`` batches of
            near-equal size (:class:`~pyro_bkd.batches.EpochBatches`, ``split="even"``).
        batch_size: ``m``.
        lr, weight_decay: of the optimiser; ``weight_decay >= 0`` is coupled L2.
        optimizer: ``"adam"`` (``torch.optim.Adam``, default betas) or ``"sgd"`` (with
            ``momentum``). The learning rate is constant.
        momentum: of SGD, in ``[0, 1)``; ignored by Adam.
        seed: seeds the batch order and, inside a forked RNG (the global RNG state is left
            untouched), any randomness of the student (e.g. dropout).
        device: where to train; ``None`` means CUDA when available, else CPU. The student and
            all data are moved there.
        progress: show a tqdm bar over epochs.
        x_val, y_val: optional validation set; its accuracy is recorded after each epoch.

    Raises:
        ValueError: shapes that disagree, labels outside ``[0, K)``, non-finite inputs or
            teacher logits, or a hyper-parameter out of range (an :class:`~pyro_bkd.InputError`
            naming it).
        FloatingPointError: the training diverged (a NaN or inf loss or weight): ``lr`` is too
            large.
    """
    _check_kd_args(temperature, alpha, convention, epochs, batch_size, lr, weight_decay)
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    _checks.fraction("momentum", momentum)
    if not isinstance(student, nn.Module):
        raise InputTypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise InputError("student has no parameter that requires grad (frozen?); nothing to train")
    _check_data(x, y, teacher_logits)
    validation = None
    if (x_val is None) != (y_val is None):
        raise InputError("give both x_val and y_val, or neither")
    if x_val is not None and y_val is not None:
        _checks.tensor("x_val", x_val)
        _checks.labels("y_val", y_val, x_val.shape[0], None)
        if x_val.shape[1:] != x.shape[1:]:
            raise InputError(
                f"x_val must have feature shape {tuple(x.shape[1:])} like x, "
                f"got {tuple(x_val.shape[1:])}"
            )
        validation = (x_val, y_val)

    device = default_device(device)
    student.to(device)
    x, y = x.to(device), y.to(device=device, dtype=torch.long)
    if teacher_logits is not None:
        teacher_logits = teacher_logits.detach().to(device)
    if validation is not None:
        validation = (validation[0].to(device), validation[1].to(device))

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    settings = {"temperature": float(temperature), "alpha": float(alpha), "convention": convention}
    generator = torch.Generator().manual_seed(seed)
    batches = EpochBatches(
        x.shape[0], batch_size, generators=[generator], device=device, split="even"
    )
    history: dict[str, list[float]] = {}
    with seeded(seed, device):
        bar = tqdm(range(epochs), desc="KD student", disable=not progress)
        for epoch in bar:
            record = _train_epoch(student, x, y, teacher_logits, opt, batches, settings)
            _check_not_diverged(params, record["loss"], epoch, lr)
            if validation is not None:
                record["val_acc"] = accuracy(student, *validation)
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            bar.set_postfix({key: f"{value:.4g}" for key, value in record.items()})
    student.eval()
    return KDResult(student=student, history=history)


def kd_settings_for_map(
    temperature: float,
    strength: float,
    prior_scale: float | None,
    num_examples: int,
    alpha: float | None = None,
    convention: Convention = "tau2",
) -> dict[str, float]:
    """The ``temperature``, ``alpha`` and ``weight_decay`` of :func:`train_student_kd` under
    which KD is the MAP search of ``BKDModel(student, tau, lam, sigma)`` (docs/spec.md §3).

    ``alpha = lam / (lam + c)`` (:func:`~pyro_bkd.kd.alpha_from_strength`) and
    ``wd = (1 - alpha) / (N sigma^2)`` (:func:`weight_decay_for_prior`). A caller that chose
    ``lam = strength_from_alpha(alpha, tau)`` may pass that ``alpha`` to skip the float round
    trip; it must give back ``lam``.
    """
    if alpha is None:
        alpha = alpha_from_strength(strength, temperature, convention)
    elif not math.isclose(strength_from_alpha(alpha, temperature, convention), strength):
        raise InputError(
            f"alpha {alpha!r} does not match strength {strength!r} at temperature "
            f"{temperature!r}: KD would not be the MAP of the model"
        )
    return {
        "temperature": temperature,
        "alpha": alpha,
        "weight_decay": weight_decay_for_prior(prior_scale, num_examples, alpha),
    }


def fit_map(
    model: BKDModel,
    data: DistillationData,
    *,
    alpha: float | None = None,
    convention: Convention = "tau2",
    **training: Any,
) -> KDResult:
    """KD is the MAP of BKD: train ``model.student`` in place by :func:`train_student_kd` with
    the KD weight and weight decay that make the KD optimum the mode of ``model``'s posterior.

    The KD temperature is the model's ``tau``, ``alpha`` and the weight decay come from its
    ``tau``, ``lam`` and ``sigma`` (:func:`kd_settings_for_map`); ``data`` gives ``x``, ``y``
    and the teacher logits (``None`` for a student trained alone, with ``lam = 0``).
    ``training`` are the other keywords of :func:`train_student_kd` (``epochs``, ``lr``,
    ``batch_size``, ``optimizer``, ``seed``, ``device``, ...). The trained student is the
    natural warm start of :func:`pyro_bkd.sample`.
    """
    if not isinstance(model, BKDModel):
        raise InputTypeError(f"model must be a pyro_bkd.BKDModel, got {type(model).__name__}")
    settings = kd_settings_for_map(
        model.temperature, model.strength, model.prior_scale, len(data), alpha, convention
    )
    return train_student_kd(
        model.student,
        data.x,
        data.y,
        data.teacher_logits,
        convention=convention,
        **settings,
        **training,
    )


def _train_epoch(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    opt: torch.optim.Optimizer,
    batches: EpochBatches,
    settings: dict,
) -> dict[str, float]:
    """One pass over a fresh permutation; example-weighted means of the terms, one sync."""
    student.train()
    num_examples = x.shape[0]
    distil = teacher_logits is not None and settings["alpha"] > 0
    totals: dict[str, torch.Tensor] = {}
    for (idx,) in batches.epoch():
        logits = student(x[idx])
        if distil:
            loss = kd_loss(logits, teacher_logits[idx], y[idx], **settings)
        else:
            loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            terms = {"loss": loss.detach(), "ce": F.cross_entropy(logits, y[idx])}
            if teacher_logits is not None:
                terms["kl"] = kd_kl(logits, teacher_logits[idx], settings["temperature"]).mean()
            terms["train_acc"] = (logits.argmax(-1) == y[idx]).float().mean()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0) + value * len(idx)
    return {key: (total / num_examples).item() for key, total in totals.items()}


def _check_not_diverged(params: list[torch.Tensor], loss: float, epoch: int, lr: float) -> None:
    """Raise ``FloatingPointError`` if the epoch's loss is NaN or inf, or the weights' squared
    norm is (in float32: a weight prior or sampler could not evaluate them)."""
    with torch.no_grad():
        norm2 = torch.stack([p.float().pow(2).sum() for p in params]).sum()
    if math.isfinite(loss) and bool(torch.isfinite(norm2)):
        return
    raise FloatingPointError(
        f"KD training diverged in epoch {epoch + 1} (loss {loss:.3g}, squared weight norm "
        f"{float(norm2):.3g}): the learning rate lr = {lr:g} is too large"
    )


def _check_kd_args(
    temperature: float,
    alpha: float,
    convention: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
) -> None:
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    kl_scale(temperature, convention)  # checks temperature > 0
    check_alpha(alpha)
    _checks.positive_int("epochs", epochs)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_float("lr", lr)
    _checks.nonnegative_float("weight_decay", weight_decay)


def _check_data(x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None) -> None:
    _checks.inputs("x", x)
    num_classes = None
    if teacher_logits is not None:
        _checks.logits("teacher_logits", teacher_logits, x.shape[0])
        num_classes = teacher_logits.shape[1]
    _checks.labels("y", y, x.shape[0], num_classes)
