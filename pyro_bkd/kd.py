"""Hinton's knowledge-distillation loss and its equivalence with the BKD posterior (SPEC §3).

Per example, ``L = (1 - alpha) CE(y, q) + alpha * c * KL(p || q^tau)`` with
``p = softmax(t / tau)``, ``q = softmax(z)``, ``q^tau = softmax(z / tau)`` and
``c = tau^2`` (Hinton; RepDistiller's ``DistillKL``) or ``c = 1``.
Since ``KL(p || q^tau) = CE(p, q^tau) - H(p)``, ``N L / (1 - alpha)`` is the
negative log posterior of :class:`pyro_bkd.BKDModel` (without weight prior) up to a
constant when ``lam = alpha c / (1 - alpha)``, i.e. ``alpha = lam / (lam + c)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pyro_bkd import _checks
from pyro_bkd._checks import InputError

Convention = Literal["tau2", "one"]
CONVENTIONS: tuple[str, ...] = ("tau2", "one")


def kl_scale(temperature: float, convention: Convention = "tau2") -> float:
    """The factor ``c`` in front of the KL term: ``tau^2`` (``"tau2"``) or ``1`` (``"one"``)."""
    tau = _checks.positive_float("temperature", temperature)
    if convention == "tau2":
        return tau * tau
    if convention == "one":
        return 1.0
    raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def check_alpha(alpha: float) -> float:
    """KD's weight ``alpha`` as a float, checked to be in ``[0, 1)``."""
    return _checks.fraction("alpha", alpha, note=" (alpha = 1 drops the labels)")


def strength_from_alpha(alpha: float, temperature: float, convention: Convention = "tau2") -> float:
    """Teacher strength ``lam = alpha c / (1 - alpha)`` matching KD weight ``alpha in [0, 1)``."""
    a = check_alpha(alpha)
    return a * kl_scale(temperature, convention) / (1.0 - a)


def alpha_from_strength(
    strength: float, temperature: float, convention: Convention = "tau2"
) -> float:
    """KD weight ``alpha = lam / (lam + c)`` matching teacher strength ``lam >= 0``.

    Raises :class:`~pyro_bkd.InputError` naming ``strength`` when ``lam`` is so large against
    ``c`` that ``alpha`` rounds to 1 (KD would drop the labels).
    """
    lam = _checks.nonnegative_float("strength", strength)
    c = kl_scale(temperature, convention)
    alpha = lam / (lam + c)
    if alpha >= 1:
        raise InputError(
            f"strength {strength!r} is too large for temperature {temperature!r}: the KD weight "
            f"alpha = lam / (lam + {c:g}) rounds to 1"
        )
    return alpha


def kd_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``KL(p || q^tau)`` per example, ``p = softmax(t/tau)``, ``q^tau = softmax(z/tau)``."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    convention: Convention = "tau2",
) -> torch.Tensor:
    """Mean Hinton KD loss ``mean_i [(1 - alpha) CE(y_i, q_i) + alpha c KL(p_i || q_i^tau)]``.

    A pure function (mdistiller's rule): no module state, the teacher logits are
    detached so the teacher can never be trained through this loss.
    """
    c = kl_scale(temperature, convention)
    a = _checks.nonnegative_float("alpha", alpha)
    if a > 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha!r}")
    ce = F.cross_entropy(student_logits, labels)
    kl = kd_kl(student_logits, teacher_logits.detach(), temperature).mean()
    return (1.0 - a) * ce + a * c * kl
