"""What every sampling algorithm shares: the chain state, the step record and the interface.

An algorithm is a small frozen object holding its hyper-parameters, with two pure methods
(BlackJAX ``sgmcmc/``, posteriors ``sgmcmc/``):

- ``init(theta [C, D], value_and_grad) -> ChainState``;
- ``step(state, value_and_grad, step_size, metric, rng, posterior_temperature)
  -> (ChainState, StepInfo)``.

``value_and_grad(theta [C, D]) -> (U [C], grad U [C, D])`` is the gradient estimator: the
driver binds it to the next minibatch (or to the full data), so the update rule never sees
data, and the Pyro kernels (:mod:`pyro_bkd.infer.kernels`) call the very same ``step`` with
``C = 1``. ``metric [C, D]`` is the diagonal preconditioner ``G`` (inverse mass matrix;
``None`` means the identity, for plain SGLD),
``step_size`` the step ``eps`` (a float or one per chain, ``[C]``) and
``posterior_temperature`` the posterior temperature ``T`` (the target is ``pi^(1/T)``, noise
scaled by ``sqrt(T)``; not the KD temperature ``tau`` of :class:`~pyro_bkd.BKDModel`).

Conventions (one page: ``docs/sampling.md``): ``U = -log p(theta, D)`` on the full data, its
minibatch estimate rescaled by ``N/m``; ``eps`` multiplies the full-data gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Literal

import torch

from pyro_bkd.infer.streams import RandomSource

ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ChainState:
    """The state of ``C`` chains.

    Attributes:
        theta: weights ``[C, D]``.
        potential: ``U(theta)`` (its minibatch estimate for stochastic-gradient methods), ``[C]``.
        grad: ``grad U(theta)`` from the same estimate, ``[C, D]``.
        momentum: ``[C, D]`` for the momentum methods (SGHMC's velocity), else ``None``.
    """

    theta: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor
    momentum: torch.Tensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, keep: torch.Tensor, other: ChainState) -> ChainState:
        """Per chain: this state where ``keep [C]`` is True, else ``other``'s."""

        def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            if a is None or b is None:
                return a
            mask = keep.reshape(keep.shape + (1,) * (a.dim() - 1))
            return torch.where(mask, a, b)

        return ChainState(
            **{f.name: pick(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        )

    def with_(self, **changes: torch.Tensor | None) -> ChainState:
        return replace(self, **changes)


@dataclass(frozen=True)
class StepInfo:
    """What one step reports: the Metropolis acceptance probability ``[C]`` (1 for the
    unadjusted methods) and the number of gradient evaluations it made."""

    accept_prob: torch.Tensor
    num_grads: int


class Algorithm:
    """Interface of an update rule (see the module docstring).

    Class attributes:
        name: the method's name in ``sample(method=...)``.
        full_batch: whether it needs exact gradients (a Metropolis test does).
        step_size_rule: ``"curvature"`` (``eps`` from the largest eigenvalue of the
            preconditioned Hessian) or ``"acceptance"`` (dual averaging towards a target
            acceptance rate).
        metric_rule: ``"identity"`` (``G = I``), ``"variance"`` (``G`` = variance of the
            warm-up draws, Stan's rule) or ``"gradient"`` (``G`` from the mean squared
            gradient, pSGLD's rule); see :mod:`pyro_bkd.infer.adaptation`.
    """

    name: ClassVar[str]
    full_batch: ClassVar[bool] = False
    step_size_rule: ClassVar[Literal["curvature", "acceptance"]] = "curvature"
    metric_rule: ClassVar[Literal["identity", "variance", "gradient"]] = "variance"

    def init(self, theta: torch.Tensor, value_and_grad: ValueAndGrad) -> ChainState:
        potential, grad = value_and_grad(theta)
        return ChainState(theta=theta, potential=potential, grad=grad)

    def step(
        self,
        state: ChainState,
        value_and_grad: ValueAndGrad,
        step_size: float | torch.Tensor,
        metric: torch.Tensor | None,
        rng: RandomSource,
        posterior_temperature: float = 1.0,
    ) -> tuple[ChainState, StepInfo]:
        raise NotImplementedError

    def step_from_curvature(self, curvature: float) -> float:
        """The step size for a preconditioned largest Hessian eigenvalue ``curvature``."""
        raise NotImplementedError


def per_chain(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """``value`` broadcastable against ``like [C, D]``: a float, or ``[C] -> [C, 1]``."""
    if isinstance(value, torch.Tensor):
        return value.to(like.dtype).reshape(-1, 1)
    return value
