"""Pyro ``MCMCKernel`` adapters: ``pyro.infer.MCMC`` runs the driver's own update rules.

Each kernel holds one chain's state (``C = 1``) and calls the same ``Algorithm.step`` and
:class:`~pyro_bkd.infer.warmup.Warmup` as :func:`pyro_bkd.sample`, so the exact-law tests of
the algorithms cover what users run either way. The kernel does no I/O:

- the potential (:mod:`pyro_bkd.infer.potential`) is built once in ``setup``: the trace-free
  :class:`~pyro_bkd.infer.potential.BKDPotential` for a :class:`~pyro_bkd.BKDModel`, else
  Pyro's ``initialize_model`` potential conditioned on the ``data`` plate's indices;
- each call of ``sample`` makes ``thin`` iterations (``pyro.infer.MCMC`` keeps every draw);
  ``warmup_steps`` of ``MCMC`` counts such calls, so warm-up lasts ``warmup_steps * thin``
  iterations, during which the metric and step size adapt (unless ``step_size`` is given).

What ``pyro.infer.MCMC`` needs and how it is met: ``sample`` returns new detached tensors of
fixed shapes; ``initial_params`` set before ``setup`` is a warm start and is respected;
``transforms`` and ``model`` are attributes (ArviZ's converter reads them); ``cleanup``
resets the start so chain 2 does not begin where chain 1 ended; ``diagnostics`` has
``divergences`` and, per kept draw, the :data:`SAMPLE_STATS` ``lp``, ``step_size``,
``grad_norm``, ``accept_prob``. Randomness comes from torch's global RNG: seed it with
``pyro.set_rng_seed``.

To ArviZ: :func:`pyro_bkd.export.from_mcmc` turns a finished run on a
:class:`~pyro_bkd.BKDModel` into the ``InferenceData`` of :func:`pyro_bkd.sample` (class
probabilities at ``x_test`` in ``predictions``, these statistics in ``sample_stats``).
``az.from_pyro(mcmc)`` (ArviZ 0.23) runs too, but its ``sample_stats`` reads only
``divergences`` from the diagnostics (so holds only ``diverging``), and it lists every
observed site as data: ``y``, and ``teacher_prior``, whose value is the teacher's
probabilities ``p [N, K]`` and whose log-likelihood is the TIP term per example: use
``var_name="y"`` with ``az.loo`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from pyro_bkd import _checks
from pyro_bkd._checks import InputError
from pyro_bkd.batches import EpochBatches
from pyro_bkd.infer.base import Algorithm, ChainState
from pyro_bkd.infer.hmc import HMCStep
from pyro_bkd.infer.langevin import PSGLDStep, SGLDStep
from pyro_bkd.infer.monitor import FiniteMonitor
from pyro_bkd.infer.potential import Potential, build_potential
from pyro_bkd.infer.schedules import StepSchedule, as_schedule
from pyro_bkd.infer.sghmc import SGHMCStep
from pyro_bkd.infer.warmup import Warmup

#: The per-draw statistics of :meth:`BKDKernel.diagnostics`, ``sample_stats`` in ArviZ terms.
SAMPLE_STATS = ("lp", "step_size", "grad_norm", "accept_prob")

#: Old keyword of the kernels -> its new name (accepted for one release).
RENAMED = {"temperature": "posterior_temperature"}


class BKDKernel(MCMCKernel):
    """A ``pyro.infer.MCMC`` kernel around one :class:`~pyro_bkd.infer.base.Algorithm`.

    Args:
        model: a :class:`~pyro_bkd.BKDModel` or any Pyro model; minibatching needs a
            ``pyro.plate("data", N)`` without ``subsample_size`` (its index site is
            conditioned on each minibatch of the kernel's ``subsample_size``).
        step_size: a fixed ``eps`` (a number, a
            :class:`~pyro_bkd.infer.schedules.StepSchedule` or a callable of the iteration),
            or ``None`` to adapt it in warm-up as :func:`pyro_bkd.sample` does.
        subsample_size: minibatch size ``m`` (``None``: full data).
        posterior_temperature: ``T``, the target is ``pi^(1/T)`` (the KD temperature is the
            model's ``BKDModel(temperature=tau)``); ``temperature=`` is its deprecated old name.
        thin: iterations per draw returned to ``MCMC``.
        check_every: iterations between checks for NaN/inf potentials (one sync per check).
        **options: the algorithm's hyper-parameters.
    """

    algorithm_class: ClassVar[type[Algorithm]]

    def __init__(
        self,
        model: Callable,
        step_size: float | StepSchedule | Callable[[int], float] | None = None,
        subsample_size: int | None = None,
        *,
        posterior_temperature: float = 1.0,
        thin: int = 1,
        check_every: int = 100,
        **options: Any,
    ) -> None:
        old = {name: options.pop(name) for name in RENAMED if name in options}
        posterior_temperature = _checks.renamed(
            type(self).__name__, RENAMED, old, posterior_temperature=posterior_temperature
        )["posterior_temperature"]
        if model is None:
            raise InputError("model is required")
        self.model = model
        self.algorithm = self.algorithm_class(**options)
        self.schedule = None if step_size is None else as_schedule(step_size)
        if subsample_size is not None:
            _checks.positive_int("subsample_size", subsample_size)
            if self.algorithm.full_batch:
                raise InputError(
                    f"{type(self).__name__} needs full-batch gradients (a Metropolis test); "
                    "leave subsample_size=None"
                )
        self.subsample_size = subsample_size
        self.posterior_temperature = _checks.positive_float(
            "posterior_temperature", posterior_temperature
        )
        self.thin = _checks.positive_int("thin", thin)
        self.check_every = _checks.positive_int("check_every", check_every)
        self.transforms: dict | None = None
        self._user_initial_params: dict[str, torch.Tensor] | None = None
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._potential: Potential | None = None
        self._warmup_steps = 0
        self._reset_chain()

    # -- Pyro's contract ---------------------------------------------------------------------
    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._potential = build_potential(self.model, args, kwargs)
        self.transforms = self._potential.transforms
        n = self._potential.num_examples
        if self.subsample_size is not None:
            if n is None:
                raise InputError(
                    "subsample_size needs a pyro.plate('data', N) in the model; none was found"
                )
            if self.subsample_size > n:
                raise InputError(f"subsample_size must be <= N={n}, got {self.subsample_size}")
        theta0 = self._potential.initial_theta()
        self._batches = EpochBatches(n or 1, self.subsample_size, 1, device=theta0.device)
        self._warmup_steps = warmup_steps
        if self._initial_params is None:
            self._initial_params = self._potential.layout.unflatten(theta0)
        self._reset_chain()

    @property
    def initial_params(self) -> dict[str, torch.Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._initial_params = params
        if self._potential is None:  # set by the user before setup: a warm start for all chains
            self._user_initial_params = params

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layout = self._potential.layout
        if self._returned is not None and _same_tensors(params, self._returned[1]):
            state = self._state  # MCMC passed back our last draw
        else:
            state = self.algorithm.init(layout.flatten(params).detach()[None], self._value_and_grad)
            if self._warmup is None:
                self._start_warmup(state)
        for _ in range(self.thin):
            state = self._iterate(state)
        if self._draw >= self._warmup_steps:
            self._lp.append(-state.potential[0])
            self._grad_norm.append(self._last_grad_norm)
            self._step_sizes.append(self._last_step_size)
            self._accept.append(self._last_accept)
        self._draw += 1
        self._state = state
        draw = layout.unflatten(state.theta[0])
        self._returned = (state.theta, draw)
        return draw

    def logging(self) -> dict[str, str]:
        return {"step size": f"{_as_number(self._last_step_size):.2e}"}

    def diagnostics(self) -> dict:
        self._monitor.check()
        empty = torch.zeros(0)
        return {
            "divergences": [],
            "lp": torch.stack(self._lp).cpu() if self._lp else empty,
            "grad_norm": torch.stack(self._grad_norm).cpu() if self._grad_norm else empty,
            "step_size": torch.tensor([_as_number(e) for e in self._step_sizes]),
            "accept_prob": torch.stack(self._accept).cpu() if self._accept else empty,
        }

    def cleanup(self) -> None:
        self._initial_params = self._user_initial_params
        self._reset_chain()

    # -- one iteration -----------------------------------------------------------------------
    def _reset_chain(self) -> None:
        self._iteration = 0
        self._draw = 0
        self._last_step_size = float("nan")
        self._last_accept = torch.ones(())
        self._last_grad_norm = torch.zeros(())
        self._lp: list[torch.Tensor] = []
        self._grad_norm: list[torch.Tensor] = []
        self._step_sizes: list[float | torch.Tensor] = []
        self._accept: list[torch.Tensor] = []
        self._monitor = FiniteMonitor(self.check_every)
        self._warmup: Warmup | None = None
        self._state: ChainState | None = None
        # (theta, its named views) of the last draw returned, to skip re-flattening it
        self._returned: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def _value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U [1], grad [1, D])`` of the one chain on the next minibatch."""
        return self._potential.batched_value_and_grad(theta, self._batches.next())

    def _start_warmup(self, state: ChainState) -> None:
        sigma = getattr(self.model, "prior_scale", None)
        self._warmup = Warmup(
            self.algorithm,
            self._potential,
            self._warmup_steps * self.thin,
            self._value_and_grad,
            None,
            prior_variance=1.0 if sigma is None else sigma**2,
            step_size=None if self.schedule is None else self.schedule(0),
            minibatch=self.subsample_size is not None,
        )
        self._warmup.start(state)

    def _iterate(self, state: ChainState) -> ChainState:
        warm = self._warmup
        step_size = warm.step_size if self.schedule is None else self.schedule(self._iteration)
        state, info = warm.algorithm.step(
            state, self._value_and_grad, step_size, warm.metric, None, self.posterior_temperature
        )
        if self._iteration < warm.num_warmup:
            state = warm.observe(self._iteration, state, info)
        # a float or a one-chain tensor, read on the host only in logging()/diagnostics()
        self._last_step_size = step_size
        self._last_accept = info.accept_prob[0]
        self._last_grad_norm = state.grad[0].norm()  # once per iteration, kept if drawn
        if self._monitor.record(-state.potential[0], self._last_grad_norm):
            self._monitor.check()
        self._iteration += 1
        return state


class SGLD(BKDKernel):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011), :class:`SGLDStep`."""

    algorithm_class = SGLDStep


class PSGLD(BKDKernel):
    """Preconditioned SGLD (Li et al. 2016) with the windowed, floored RMSprop gain,
    :class:`~pyro_bkd.infer.langevin.PSGLDStep`."""

    algorithm_class = PSGLDStep


class SGHMC(BKDKernel):
    """Stochastic gradient HMC (Chen et al. 2014) with a diagonal preconditioner and the
    gradient-noise correction, :class:`~pyro_bkd.infer.sghmc.SGHMCStep`."""

    algorithm_class = SGHMCStep


class HMC(BKDKernel):
    """Metropolis-corrected full-batch HMC, :class:`~pyro_bkd.infer.hmc.HMCStep`."""

    algorithm_class = HMCStep


def _as_number(step_size: float | torch.Tensor) -> float:
    """A step size as a float (the one chain's entry of a per-chain tensor)."""
    if isinstance(step_size, torch.Tensor):
        return float(step_size.reshape(-1)[0])
    return float(step_size)


def _same_tensors(params: dict[str, torch.Tensor], previous: dict[str, torch.Tensor]) -> bool:
    """Whether ``params`` holds exactly the tensor objects of ``previous`` (no copy, no edit)."""
    return len(params) == len(previous) and all(
        params.get(name) is value for name, value in previous.items()
    )
