"""The training record of a distillation: inputs, labels, teacher logits, known truth."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_bkd import _checks
from pyro_bkd._checks import InputError


@dataclass(frozen=True, eq=False)
class DistillationData:
    """``D = {(x_i, y_i)}`` with teacher logits ``t_i`` and, for synthetic data, ``p*(x_i)``.

    Args:
        x: inputs ``[N, ...]``.
        y: labels ``[N]`` in ``[0, K)``, or ``None`` (prediction only).
        teacher_logits: ``t [N, K]`` (finite), or ``None`` (no teacher).
        p_true: true class probabilities ``p* [N, K]`` when known, else ``None``.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    p_true: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _checks.inputs("x", self.x)
        n = self.x.shape[0]
        k = None
        if self.teacher_logits is not None:
            _checks.logits("teacher_logits", self.teacher_logits, n)
            k = self.teacher_logits.shape[1]
        if self.p_true is not None:
            _checks.tensor("p_true", self.p_true)
            if self.p_true.dim() != 2 or self.p_true.shape[0] != n:
                raise InputError(f"p_true must have shape ({n}, K), got {tuple(self.p_true.shape)}")
            if k is not None and self.p_true.shape[1] != k:
                raise InputError(
                    f"p_true has {self.p_true.shape[1]} classes but teacher_logits has {k}"
                )
            k = self.p_true.shape[1]
        if self.y is not None:
            _checks.labels("y", self.y, n, k)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def num_classes(self) -> int | None:
        """``K`` from the teacher, the known truth or the labels (``max(y) + 1``)."""
        for probs in (self.teacher_logits, self.p_true):
            if probs is not None:
                return probs.shape[1]
        return None if self.y is None else int(self.y.max()) + 1

    @property
    def teacher_probs(self) -> torch.Tensor | None:
        """``softmax(t)`` at temperature 1 (for reports), or ``None``."""
        return None if self.teacher_logits is None else self.teacher_logits.softmax(-1)

    def to(self, device: torch.device | str) -> DistillationData:
        """The same record with every tensor on ``device``."""
        return DistillationData(*(None if t is None else t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return (self.x, self.y, self.teacher_logits, self.p_true)
