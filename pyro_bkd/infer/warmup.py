"""Warm-up of any algorithm, shared by the driver and the Pyro kernels.

:class:`Warmup` owns what adapts: the diagonal metric ``G`` (from the draws' variance or the
squared gradients of each slow window), the step size (from the preconditioned curvature at
each window's end, or by dual averaging of the acceptance rate) and, for SGHMC on
minibatches, the gradient-noise estimate ``B``. After :meth:`Warmup.observe` has seen the
last warm-up iteration, :attr:`algorithm`, :attr:`step_size` and :attr:`metric` are frozen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from pyro_bkd.infer.adaptation import DualAveraging, GradientMetric, VarianceMetric, WarmupWindows
from pyro_bkd.infer.base import Algorithm, ChainState, StepInfo, ValueAndGrad
from pyro_bkd.infer.potential import Potential
from pyro_bkd.infer.sghmc import SGHMCStep
from pyro_bkd.infer.streams import RandomSource, Streams, chain_seed, random_int

Gather = Callable[[torch.Tensor], torch.Tensor]

#: Pairs of minibatch gradients per chain that estimate SGHMC's gradient noise.
NOISE_PAIRS = 8


class Warmup:
    """Adaptation over ``num_warmup`` iterations (module docstring).

    Args:
        algorithm: the update rule.
        potential: gives the curvature (``max_curvature``) for the curvature step rule.
        num_warmup: warm-up iterations.
        value_and_grad: the driver's estimator (next minibatch per call).
        rng: the run's random streams (the curvature probes come from the shared stream and
            the chain's index, so they are the same in every process).
        prior_variance: ``sigma^2``, the unit of the metric's floor.
        step_size: a fixed step (no step adaptation), or ``None``.
        minibatch: whether gradients are minibatch estimates (SGHMC then measures ``B``).
        gather: ``[c, ...] -> [C, ...]``, this process's chains to all chains (for what is
            pooled over chains: dual averaging's acceptance rate and its one step size);
            the identity in one process.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        potential: Potential,
        num_warmup: int,
        value_and_grad: ValueAndGrad,
        rng: RandomSource,
        prior_variance: float,
        step_size: float | None = None,
        minibatch: bool = False,
        gather: Gather | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.potential = potential
        self.windows = WarmupWindows(num_warmup)
        self.value_and_grad = value_and_grad
        self.rng = rng
        self.gather: Gather = gather if gather is not None else _identity
        self.fixed_step = step_size
        self.minibatch = minibatch
        self.num_warmup = num_warmup
        rule = algorithm.metric_rule
        self.estimator = (
            GradientMetric(prior_variance) if rule == "gradient" else VarianceMetric(prior_variance)
        )
        self.tuner = DualAveraging(getattr(algorithm, "target_accept", 0.8))
        self.metric: torch.Tensor | None = None
        self.step_size: float | torch.Tensor | None = None

    @property
    def adapts_by_acceptance(self) -> bool:
        return self.fixed_step is None and self.algorithm.step_size_rule == "acceptance"

    def start(self, state: ChainState) -> None:
        """Initial metric (``I``, kept as ``None`` for the identity rule, which lets the
        update skip the products; pSGLD: its gain from the first gradient) and step size."""
        rule = self.algorithm.metric_rule
        self.metric = None if rule == "identity" else torch.ones_like(state.theta)
        if rule == "gradient":
            self.estimator.update(state.theta, state.grad)
            self.metric = self.estimator.value()
            self.estimator.reset()
        self.step_size = self.fixed_step if self.fixed_step is not None else self._tuned(state)
        self.tuner.restart(as_float(self.step_size))

    def observe(self, iteration: int, state: ChainState, info: StepInfo) -> ChainState:
        """Adapt after warm-up iteration ``iteration`` (0-based) produced ``state``."""
        if self.adapts_by_acceptance:
            self.step_size = self.tuner.update(float(self.gather(info.accept_prob).mean()))
        if self.windows.collecting(iteration):
            self.estimator.update(state.theta, state.grad)
        if iteration + 1 in self.windows.ends:
            if self.algorithm.metric_rule != "identity":
                self.metric = self.estimator.value()
            self.estimator.reset()
            if (
                self.minibatch
                and isinstance(self.algorithm, SGHMCStep)
                and self.algorithm.correct_noise
            ):
                noise = self._gradient_noise(state.theta)
                self.algorithm = dataclasses.replace(self.algorithm, gradient_noise=noise)
            if self.fixed_step is None:
                self.step_size = self._tuned(state)
                self.tuner.restart(as_float(self.step_size))
            if state.momentum is not None:  # a velocity in the units of the old step and metric
                state = state.with_(momentum=torch.zeros_like(state.momentum))
        if iteration + 1 == self.num_warmup and self.adapts_by_acceptance:
            self.step_size = self.tuner.final()
        return state

    def _tuned(self, state: ChainState) -> float | torch.Tensor:
        """Per chain, ``algorithm.step_from_curvature`` of the largest eigenvalue of
        ``G^(1/2) H G^(1/2)`` at the chain's point; one float (the smallest) for the
        acceptance rule, whose dual averaging tunes one step for all chains."""
        base = random_int(0, 2**31, self.rng)
        theta = state.theta
        ids = self.rng.chain_ids if isinstance(self.rng, Streams) else range(theta.shape[0])
        curvatures = [
            self.potential.max_curvature(
                theta[row],
                metric=None if self.metric is None else self.metric[row],
                generator=torch.Generator().manual_seed(chain_seed(base, chain)),
            )
            for row, chain in enumerate(ids)
        ]
        if not all(k > 0 for k in curvatures):
            raise ValueError(
                "the potential has no positive curvature at the chains' points; "
                "pass step_size explicitly"
            )
        steps = torch.tensor(
            [self.algorithm.step_from_curvature(k) for k in curvatures],
            dtype=theta.dtype,
            device=theta.device,
        )
        noise = getattr(self.algorithm, "gradient_noise", None)
        if noise is not None:
            steps = torch.minimum(steps, self.algorithm.step_from_noise(self.metric * noise))
        if self.algorithm.step_size_rule == "acceptance":
            return float(self.gather(steps).min())
        return steps

    def _gradient_noise(self, theta: torch.Tensor) -> torch.Tensor:
        """Diagonal of ``B``, the covariance of the minibatch gradient, ``[C, D]``: half the
        mean squared difference of two independent minibatch gradients at the same point,
        over :data:`NOISE_PAIRS` pairs."""
        total = torch.zeros_like(theta)
        for _ in range(NOISE_PAIRS):
            _, first = self.value_and_grad(theta)
            _, second = self.value_and_grad(theta)
            total += (first - second).square()
        return total / (2 * NOISE_PAIRS)


def _identity(value: torch.Tensor) -> torch.Tensor:
    return value


def as_float(step_size: float | torch.Tensor) -> float:
    """A step size as one number (the median over chains of a per-chain step)."""
    if isinstance(step_size, torch.Tensor):
        return float(step_size.median())
    return float(step_size)
