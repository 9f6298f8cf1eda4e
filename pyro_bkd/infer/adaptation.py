"""Warm-up adaptation: objects with ``update``/``value``, active in warm-up, frozen after it.

- :class:`WarmupWindows`: Stan's schedule. A fast initial buffer (the chains travel from the
  start to the typical set: about ``D/2`` nats of log density for ``D`` weights), slow
  windows that double in length, at whose ends the metric is re-estimated and the step size
  re-tuned, and a terminal buffer where only the step size moves.
- :class:`VarianceMetric`: ``G`` = the per-chain variance of the draws of a window
  (Welford), shrunk towards the prior variance ``sigma^2`` as Stan shrinks towards 1e-3.
- :class:`GradientMetric`: pSGLD's RMSprop gain ``G = 1 / sqrt(v)`` with ``v`` the mean
  squared ``N``-scaled gradient of a window, floored at the prior precision.
- :class:`DualAveraging`: Nesterov dual averaging of ``log eps`` towards a target
  acceptance rate (Hoffman & Gelman 2014, Alg. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupWindows:
    """Stan's warm-up windows over ``num_warmup`` iterations.

    ``initial`` iterations (15%) of fast adaptation, then slow windows of 25, 50, 100, ...
    iterations (the last stretched to the end of the slow phase), then ``terminal`` (10%).
    With fewer than 20 warm-up iterations there are no windows (nothing is estimated).
    """

    num_warmup: int

    @property
    def ends(self) -> tuple[int, ...]:
        """Iterations (0-based, exclusive) at which a slow window ends."""
        if self.num_warmup < 20:
            return ()
        initial = int(0.15 * self.num_warmup)
        terminal = int(0.1 * self.num_warmup)
        last = self.num_warmup - terminal
        ends, size, start = [], max(5, int(0.05 * self.num_warmup)), initial
        while start < last:
            end = start + size
            if end + 2 * size > last:
                end = last
            ends.append(end)
            start, size = end, 2 * size
        return tuple(ends)

    @property
    def slow_start(self) -> int:
        return int(0.15 * self.num_warmup) if self.ends else self.num_warmup

    def collecting(self, iteration: int) -> bool:
        """Whether the draw after ``iteration`` feeds the metric estimate."""
        return bool(self.ends) and self.slow_start <= iteration < self.ends[-1]


class VarianceMetric:
    """Per-chain variance of the draws of one window (Welford), ``[C, D]``."""

    def __init__(self, prior_variance: float, shrinkage: float = 5.0) -> None:
        self.prior_variance = prior_variance
        self.shrinkage = shrinkage
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None

    def update(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.sum_sq = theta.clone(), torch.zeros_like(theta)
            return
        delta = theta - self.mean
        self.mean += delta / self.count
        self.sum_sq += delta * (theta - self.mean)

    def value(self) -> torch.Tensor:
        """``(n / (n + 5)) var + (5 / (n + 5)) * 1e-3 sigma^2``: Stan's regularisation, with
        the prior variance as the unit of the floor."""
        n = self.count
        variance = self.sum_sq / max(n - 1, 1)
        w = n / (n + self.shrinkage)
        return w * variance + (1 - w) * 1e-3 * self.prior_variance


class GradientMetric:
    """pSGLD's gain from the squared gradients of one window, ``[C, D]``.

    ``G = 1 / sqrt(max(v, 1 / sigma^2))`` with ``v`` the mean of ``g^2`` over the window: at
    stationarity ``E[g g'] = E[H]`` so ``G ~ H^(-1/2)`` per coordinate, and a coordinate whose
    gradient is near zero gets the prior's ``G = sigma`` instead of ``1 / delta``.
    """

    def __init__(self, prior_variance: float) -> None:
        self.floor = 1.0 / prior_variance
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.total: torch.Tensor | None = None

    def update(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        self.count += 1
        square = grad.square()
        self.total = square if self.total is None else self.total + square

    def value(self) -> torch.Tensor:
        return (self.total / self.count).clamp_min(self.floor).rsqrt()


class DualAveraging:
    """Dual averaging of ``log eps`` towards ``target`` acceptance (Hoffman & Gelman 2014).

    ``restart(eps)`` centres the search on ``log(10 eps)``; ``update(accept)`` returns the
    next ``eps``; ``final()`` the averaged ``eps`` used after warm-up.
    """

    def __init__(
        self, target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75
    ) -> None:
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(1.0)

    def restart(self, step_size: float) -> None:
        self.mu = math.log(10.0 * step_size)
        self.count = 0
        self.h_bar = 0.0
        self.log_eps_bar = math.log(step_size)

    def update(self, accept: float) -> float:
        self.count += 1
        k = self.count
        self.h_bar += ((self.target - accept) - self.h_bar) / (k + self.t0)
        log_eps = self.mu - math.sqrt(k) / self.gamma * self.h_bar
        eta = k ** (-self.kappa)
        self.log_eps_bar = eta * log_eps + (1 - eta) * self.log_eps_bar
        return math.exp(log_eps)

    def final(self) -> float:
        return math.exp(self.log_eps_bar)

    def state_dict(self) -> dict[str, float]:
        return {
            "mu": self.mu,
            "count": self.count,
            "h_bar": self.h_bar,
            "log_eps_bar": self.log_eps_bar,
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mu, self.count = state["mu"], int(state["count"])
        self.h_bar, self.log_eps_bar = state["h_bar"], state["log_eps_bar"]
