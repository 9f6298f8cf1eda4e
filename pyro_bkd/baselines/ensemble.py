"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, 2017) of KD students.

``M`` students of one architecture, each from its own initialisation and batch order, trained by
the same KD objective (SPEC §3). Member ``m`` gives the draw ``q^(m)(x) = softmax(f_m(x))``;
the ensemble's prediction is their mean. The members are modes of the same BKD posterior
(with the matched weight decay), not draws from it: the spread between them measures how much
training noise and initialisation matter, not posterior uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pyro_bkd import _checks
from pyro_bkd._torch import network_logits
from pyro_bkd.distill import train_student_kd

StudentFactory = Callable[[int], nn.Module]


def train_kd_ensemble(
    new_student: StudentFactory,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher_logits_train: torch.Tensor | None,
    *,
    size: int = 5,
    seed: int = 0,
    **kd_options: Any,
) -> list[nn.Module]:
    """Train ``size`` students by :func:`~pyro_bkd.distill.train_student_kd`.

    Member ``m`` is ``new_student(seed + m)`` (its initialisation) trained with
    ``seed = seed + m`` (its batch order); ``kd_options`` (``temperature``, ``alpha``,
    ``epochs``, ``lr``, ``weight_decay``, ``device``, ...) are the same for every member.

    Raises:
        ValueError: ``size < 1``.
        TypeError: ``new_student`` does not return an ``nn.Module``.
    """
    size = _checks.positive_int("size", size)
    members = []
    for member in range(size):
        student = new_student(seed + member)
        if not isinstance(student, nn.Module):
            raise TypeError(f"new_student must return an nn.Module, got {type(student).__name__}")
        train_student_kd(student, x, y, teacher_logits_train, seed=seed + member, **kd_options)
        members.append(student)
    return members


def ensemble_probs(
    members: Sequence[nn.Module], x: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """``q^(m)(x_n) = softmax(f_m(x_n) / T)`` of every member, ``[1, M, N, K]`` on the CPU.

    Each member runs in eval mode (its mode is restored), so members with batch norm use their
    own running statistics.

    Raises:
        ValueError: no members, members whose logits differ in shape, a bad temperature.
    """
    if len(members) == 0:
        raise ValueError("members must hold at least one network")
    temperature = _checks.positive_float("temperature", temperature)
    _checks.tensor("x", x)
    draws = [
        (network_logits(member, x).double() / temperature).softmax(-1).float() for member in members
    ]
    shapes = {tuple(draw.shape) for draw in draws}
    if len(shapes) != 1:
        raise ValueError(f"members must return logits of one shape, got {sorted(shapes)}")
    return torch.stack(draws)[None]
