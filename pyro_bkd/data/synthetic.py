"""Synthetic classification scenarios with known true class probabilities ``p*(x)`` (SPEC §7).

BKD's four scenarios: a linear or non-linear decision boundary, with 2 or 5 classes.
Inputs are standard Gaussian, ``x ~ N(0, I_d)``; labels are drawn from the true model,
``y | x ~ Categorical(p*(x))`` with ``p*(x) = softmax(g(x))`` and true logits ``g``:

- ``linear-*``: ``g_k(x) = 2 w_k . x + b_k``;
- ``nonlinear-*``: ``g_k(x) = 2 sin(2 u_k . x) + (v_k . x)^2 - 1``;

with unit vectors ``w_k, u_k, v_k`` and offsets ``b_k ~ N(0, 1/4)`` drawn once from a
generator of fixed seed (:data:`FUNCTION_SEED`), so ``p*`` is the same function for every data
seed. ``w . x`` is then ``N(0, 1)``: logits of spread about 2, so ``p*`` ranges from confident
to ambiguous. Binary scenarios use class 0 as reference, ``g_0(x) = 0``, and ``g_1`` as above.

The ``n`` examples are split train:validation:test as ``7:3:1`` (as in BKD): ``n_test =
floor(n/11)``, ``n_val = floor(3n/11)``, the rest for training. Teachers for these data:
:func:`oracle_teacher_logits` (the truth, optionally blurred) and :func:`train_mlp_teacher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyro_bkd._torch import seeded

SCENARIOS: tuple[str, ...] = (
    "linear-binary",
    "nonlinear-binary",
    "linear-5class",
    "nonlinear-5class",
)
FUNCTION_SEED = 20240711  # seed of the true functions' coefficients; fixed, never the data seed
_SPLIT_PARTS = (7, 3, 1)  # train : validation : test
_SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """One draw of a scenario: inputs ``x``, labels ``y`` and true probabilities ``p*(x)``.

    Attributes:
        x_train, x_val, x_test: ``[n_split, d]`` float32 inputs.
        y_train, y_val, y_test: ``[n_split]`` int64 labels, ``y ~ Categorical(p*(x))``.
        p_train, p_val, p_test: ``[n_split, K]`` float32 true probabilities ``p*(x)``.
        num_classes: ``K``.
        scenario: the scenario's name (one of :data:`SCENARIOS`).

    Equality is identity (tensors have no single truth value).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    p_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    p_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    p_test: torch.Tensor
    num_classes: int
    scenario: str


def synthetic(scenario: str, n: int = 11_000, seed: int = 0, *, dim: int = 5) -> SyntheticData:
    """Draw ``n`` examples ``(x, y, p*(x))`` of ``scenario`` and split them ``7:3:1``.

    Args:
        scenario: one of :data:`SCENARIOS`.
        n: total number of examples, ``>= 11`` so every split is non-empty.
        seed: seed of the inputs and labels (the true function does not depend on it).
        dim: input dimension ``d >= 1``.

    Raises:
        ValueError: unknown scenario, ``n < 11`` or ``dim < 1``.
    """
    _check_scenario(scenario)
    if n < sum(_SPLIT_PARTS):
        raise ValueError(f"n must be >= 11 so the 7:3:1 split leaves every part non-empty, got {n}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator)
    p64 = _true_probs64(scenario, x.double())
    y = torch.multinomial(p64, 1, generator=generator).squeeze(1)
    n_val, n_test = (n * part // sum(_SPLIT_PARTS) for part in _SPLIT_PARTS[1:])
    sizes = [n - n_val - n_test, n_val, n_test]
    fields = {
        f"{kind}_{split}": part
        for kind, values in (("x", x), ("y", y), ("p", p64.float()))
        for split, part in zip(_SPLIT_NAMES, values.split(sizes), strict=True)
    }
    return SyntheticData(**fields, num_classes=p64.shape[1], scenario=scenario)


def true_probs(scenario: str, x: torch.Tensor) -> torch.Tensor:
    """``p*(x) = softmax(g(x))``, shape ``[N, K]``, for any inputs ``x`` of shape ``[N, d]``."""
    _check_scenario(scenario)
    if x.dim() != 2:
        raise ValueError(f"x must have shape [N, d], got {tuple(x.shape)}")
    return _true_probs64(scenario, x.double()).to(x.dtype)


def oracle_teacher_logits(p_true: torch.Tensor, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Teacher logits ``t = log p*(x) + noise * eps``, ``eps ~ N(0, I)``, shape of ``p_true``.

    ``noise = 0`` is the oracle (``softmax(t) = p*``); larger ``noise`` a worse teacher.
    Probabilities are floored at the dtype's smallest normal number so ``log`` stays finite.
    """
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(p_true.shape, generator=generator, dtype=p_true.dtype)
    log_p = p_true.clamp_min(torch.finfo(p_true.dtype).tiny).log()
    return log_p + noise * eps.to(p_true.device)


def train_mlp_teacher(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden: Sequence[int] = (64, 64),
    epochs: int = 300,
    *,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """A ReLU MLP ``d -> hidden -> K`` fit by full-batch Adam on the mean cross entropy.

    The initial weights come from ``seed`` (the global RNG state is restored afterwards).
    Returns the trained network, frozen (``requires_grad=False``) and in eval mode:
    ``teacher(x)`` gives the logits ``t(x)``.
    """
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"x must be [N, d] and y [N], got {tuple(x.shape)}, {tuple(y.shape)}")
    widths = [x.shape[1], *hidden]
    with seeded(seed):
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        net = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes)).to(x.device, x.dtype)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.requires_grad_(False).eval()


def _true_probs64(scenario: str, x: torch.Tensor) -> torch.Tensor:
    """``p*(x)`` in float64 for float64 inputs ``[N, d]``."""
    boundary, classes = scenario.split("-")
    num_logits = 1 if classes == "binary" else 5
    rng = np.random.default_rng(FUNCTION_SEED)
    dim = x.shape[1]
    w, u, v = (torch.from_numpy(_unit_rows(rng, num_logits, dim)) for _ in range(3))
    b = torch.from_numpy(rng.normal(0.0, 0.5, num_logits))
    if boundary == "linear":
        logits = 2.0 * x @ w.T + b
    else:
        logits = 2.0 * torch.sin(2.0 * x @ u.T) + (x @ v.T) ** 2 - 1.0
    if num_logits == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return torch.softmax(logits, dim=1)


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """``rows`` directions uniform on the unit sphere of ``R^dim``."""
    directions = rng.normal(size=(rows, dim))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
