"""SGLD and pSGLD as Pyro ``MCMCKernel``s (SPEC §4), driven by ``pyro.infer.MCMC``.

The kernel adapts the pieces to Pyro's contract, it does no I/O:

- the potential (:mod:`pyro_bkd.infer.potential`) is built once in ``setup``;
- each step draws a fresh minibatch ``B_j`` (``N/m``-rescaled potential ``U_j``), a step size
  ``eps_j`` from a schedule (:mod:`pyro_bkd.infer.schedules`) and applies an update rule
  (:mod:`pyro_bkd.infer.integrators`): ``theta - (eps_j/2) grad U_j + sqrt(eps_j T) xi``;
- ``thin`` SGLD steps are taken per returned draw, because ``pyro.infer.MCMC`` keeps every draw.

What ``pyro.infer.MCMC`` needs from a kernel and how it is met here: ``sample`` returns new
detached tensors of fixed shapes; ``initial_params`` can be set before ``setup`` (warm starts)
and is respected; ``transforms`` and ``model`` are attributes (ArviZ's converter reads them);
``cleanup`` resets the start so chain 2 does not begin where chain 1 ended; ``logging`` is
cheap; ``diagnostics`` has a ``divergences`` list; the driver never calls ``end_warmup``, so
the kernel counts draws itself. Randomness comes from torch's global RNG: seed it with
``pyro.set_rng_seed``.

Per-draw diagnostics (log joint of the minibatch ``lp``, ``step_size``, ``grad_norm``) of the
sampling phase are returned by ``diagnostics()``, so ``mcmc.diagnostics()["lp"]["chain 0"]``
holds them; :func:`pyro_bkd.export.to_inference_data` turns them into ``sample_stats``.
For neural students prefer :func:`pyro_bkd.sample` (streamed predictive, vectorised chains)
and ``az.from_pyro(mcmc, log_likelihood=False)``: ArviZ otherwise recomputes the ESS of every
weight and fills ``log_likelihood`` by re-running the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from pyro_bkd import _checks
from pyro_bkd.infer.batches import EpochBatches
from pyro_bkd.infer.integrators import psgld_step, sgld_step
from pyro_bkd.infer.monitor import FiniteMonitor
from pyro_bkd.infer.potential import Potential, build_potential
from pyro_bkd.infer.schedules import RMSPropPreconditioner, StepSchedule, as_schedule


class SGLD(MCMCKernel):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Args:
        model: a :class:`~pyro_bkd.BKDModel` (fast trace-free potential) or any Pyro model;
            minibatching needs a ``pyro.plate("data", N)`` whose index site is conditioned.
        step_size: ``eps`` as a number, a :class:`~pyro_bkd.infer.schedules.StepSchedule`
            or a callable of the step index. It scales the full-data potential, so a
            learning rate ``lr`` on the *mean* loss corresponds to ``eps = 2 lr / N``.
        subsample_size: minibatch size ``m`` (``None``: full data, plain Langevin).
        temperature: posterior temperature ``T`` (noise ``sqrt(eps T)``), 1 by default.
        thin: SGLD steps per draw returned to ``MCMC``.
        check_every: steps between checks for NaN/inf potentials (one sync per check).
    """

    def __init__(
        self,
        model: Callable,
        step_size: float | StepSchedule | Callable[[int], float],
        subsample_size: int | None = None,
        *,
        temperature: float = 1.0,
        thin: int = 1,
        check_every: int = 100,
    ) -> None:
        if model is None:
            raise ValueError("model is required")
        self.model = model
        self.schedule = as_schedule(step_size)
        if subsample_size is not None:
            _checks.positive_int("subsample_size", subsample_size)
        self.subsample_size = subsample_size
        self.temperature = _checks.positive_float("temperature", temperature)
        self.thin = _checks.positive_int("thin", thin)
        self.check_every = _checks.positive_int("check_every", check_every)
        self.transforms: dict | None = None
        self._user_initial_params: dict[str, torch.Tensor] | None = None
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._potential: Potential | None = None
        self._reset_chain()

    # -- Pyro's contract ---------------------------------------------------------------------
    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._potential = build_potential(self.model, args, kwargs)
        self.transforms = self._potential.transforms
        n = self._potential.num_examples
        if self.subsample_size is not None:
            if n is None:
                raise ValueError(
                    "subsample_size needs a pyro.plate('data', N) in the model; none was found"
                )
            if self.subsample_size > n:
                raise ValueError(f"subsample_size must be <= N={n}, got {self.subsample_size}")
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
            theta = self._returned[0]  # MCMC passed back our last draw: views of this theta
        else:
            theta = layout.flatten(params).detach()
        for _ in range(self.thin):
            theta, log_joint, grad_norm = self._step(theta)
        if self._draw >= self._warmup_steps:
            self._lp.append(log_joint)
            self._grad_norm.append(grad_norm)
            self._step_sizes.append(self._last_step_size)
        self._draw += 1
        draw = layout.unflatten(theta)
        self._returned = (theta, draw)
        return draw

    def logging(self) -> dict[str, str]:
        return {"step size": f"{self._last_step_size:.2e}"}

    def diagnostics(self) -> dict:
        self._monitor.check()
        empty = torch.zeros(0)
        return {
            "divergences": [],
            "lp": torch.stack(self._lp).cpu() if self._lp else empty,
            "grad_norm": torch.stack(self._grad_norm).cpu() if self._grad_norm else empty,
            "step_size": torch.tensor(self._step_sizes),
        }

    def cleanup(self) -> None:
        self._initial_params = self._user_initial_params
        self._reset_chain()

    # -- one SGLD step -----------------------------------------------------------------------
    def _reset_chain(self) -> None:
        self._iteration = 0
        self._draw = 0
        self._last_step_size = float("nan")
        self._lp: list[torch.Tensor] = []
        self._grad_norm: list[torch.Tensor] = []
        self._step_sizes: list[float] = []
        self._monitor = FiniteMonitor(self.check_every)
        # (theta, its named views) of the last draw returned, to skip re-flattening it
        self._returned: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def _step(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One SGLD step; returns the new ``theta``, the minibatch log joint and ``|grad U|``."""
        idx = self._batches.next()
        potential, grad = self._potential.value_and_grad(theta, None if idx is None else idx[0])
        log_joint, grad_norm = -potential, grad.norm()
        if self._monitor.record(log_joint, grad_norm):
            self._monitor.check()
        eps = self.schedule(self._iteration)
        self._last_step_size = eps
        theta = self._update(theta, grad, torch.randn_like(theta), eps)
        self._iteration += 1
        return theta, log_joint, grad_norm

    def _update(self, theta, grad, noise, eps) -> torch.Tensor:
        return sgld_step(theta, grad, noise, eps, self.temperature)


class PSGLD(SGLD):
    """RMSprop-preconditioned SGLD (Li et al. 2016), without the ``Gamma`` correction term.

    ``theta - (eps/2) G grad U + sqrt(eps T G) xi`` with ``G = 1 / (delta + sqrt(v))``. The
    second-moment estimate ``v`` adapts during warm-up and is frozen afterwards, which makes
    ``Gamma`` exactly zero while sampling (see :class:`RMSPropPreconditioner`).
    """

    def __init__(
        self,
        model: Callable,
        step_size: float | StepSchedule | Callable[[int], float],
        subsample_size: int | None = None,
        *,
        preconditioner: RMSPropPreconditioner | None = None,
        **kwargs,
    ) -> None:
        self.preconditioner = preconditioner or RMSPropPreconditioner()
        super().__init__(model, step_size, subsample_size, **kwargs)

    def _reset_chain(self) -> None:
        super()._reset_chain()
        self._second_moment: torch.Tensor | None = None
        self._gain: torch.Tensor | None = None

    def diagnostics(self) -> dict:
        """Adds ``preconditioner``: the frozen gain ``G`` (flat, ``[D]``) of this chain."""
        gain = torch.zeros(0) if self._gain is None else self._gain.detach().cpu()
        return {**super().diagnostics(), "preconditioner": gain}

    def _update(self, theta, grad, noise, eps) -> torch.Tensor:
        self._second_moment, self._gain = self.preconditioner.adapt(
            self._second_moment, self._gain, grad, self._draw < self._warmup_steps
        )
        return psgld_step(theta, grad, noise, eps, self._gain, self.temperature)


def _same_tensors(params: dict[str, torch.Tensor], previous: dict[str, torch.Tensor]) -> bool:
    """Whether ``params`` holds exactly the tensor objects of ``previous`` (no copy, no edit)."""
    return len(params) == len(previous) and all(
        params.get(name) is value for name, value in previous.items()
    )
