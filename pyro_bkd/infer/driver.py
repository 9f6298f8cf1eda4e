"""The sampling driver: any algorithm, ``C`` vectorised chains, one run from start to verdict.

:func:`sample` runs an :class:`~pyro_bkd.infer.base.Algorithm` (SGLD, pSGLD, SGHMC or HMC)
over the BKD potential's ``batched_value_and_grad``:

- chains start dispersed around the warm start (:func:`~pyro_bkd.infer.starts.dispersed`),
  so that R-hat compares chains that began apart;
- warm-up in Stan's windows (:mod:`pyro_bkd.infer.adaptation`): the diagonal metric ``G``
  and the step size are re-estimated at each window's end and frozen afterwards; the step
  size comes from the preconditioned curvature (SGLD, pSGLD, SGHMC) or from dual averaging
  of the acceptance rate (HMC); SGHMC with minibatches measures its gradient noise there;
- thinning, with the test-input class probabilities computed in chunks of retained draws
  instead of storing weights (``keep_weights=True`` keeps them too);
- a random stream per chain seeded from ``(seed, chain)`` for its minibatches and noise, and
  a shared one for run-level choices (:mod:`~pyro_bkd.infer.streams`), so a chain's draws do
  not depend on the chains beside it or on the process running it; chains or data split over
  processes with ``torch.distributed`` (:mod:`~pyro_bkd.infer.parallel`);
- checkpoint/resume: the state is saved atomically every ``checkpoint_every`` draws; a
  resumed run continues exactly as an uninterrupted one, and a finished run's checkpoint
  asked for more ``num_samples`` is extended as if the run had been that long;
- NaN/inf and runaway detection once per chunk (no host sync per step), with the first bad
  step; ``on_nonfinite="backoff"`` returns to the last good state with half the step, at most
  ``MAX_BACKOFFS`` times;
- a convergence verdict at the end (:mod:`pyro_bkd.infer.verdict`), warned about when the
  chains did not converge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from pyro_bkd import _checks
from pyro_bkd._atomic import atomic_path
from pyro_bkd._checks import InputError, InputTypeError
from pyro_bkd._torch import device_of
from pyro_bkd.batches import EpochBatches
from pyro_bkd.data.record import DistillationData
from pyro_bkd.infer.base import Algorithm, ChainState
from pyro_bkd.infer.hmc import HMCStep
from pyro_bkd.infer.langevin import PSGLDStep, SGLDStep
from pyro_bkd.infer.map import find_map
from pyro_bkd.infer.monitor import FiniteMonitor, NonFiniteError, runaway_floor
from pyro_bkd.infer.parallel import Partition, ShardedPotential
from pyro_bkd.infer.potential import BKDPotential, Potential
from pyro_bkd.infer.result import SamplingResult
from pyro_bkd.infer.schedules import StepSchedule
from pyro_bkd.infer.sghmc import SGHMCStep
from pyro_bkd.infer.starts import dispersed
from pyro_bkd.infer.streams import Streams
from pyro_bkd.infer.verdict import ConvergenceWarning, diagnose
from pyro_bkd.infer.warmup import Warmup, as_float
from pyro_bkd.model import BKDModel
from pyro_bkd.predictive import predict_probs

#: The algorithms of ``sample(method=...)``.
ALGORITHMS: dict[str, type[Algorithm]] = {
    "sgld": SGLDStep,
    "psgld": PSGLDStep,
    "sghmc": SGHMCStep,
    "hmc": HMCStep,
}
METHODS: tuple[str, ...] = tuple(ALGORITHMS)
#: The default method and budget, chosen by ``benchmarks/bench_mixing.py`` (see README).
DEFAULT_METHOD = "sghmc"
#: Step-size halvings ``on_nonfinite="backoff"`` tries before it gives up.
MAX_BACKOFFS = 10
#: The layout of checkpoints (part of their identity: files of another layout are refused).
CHECKPOINT_FORMAT = 3
#: Warm-up iterations between checks for a non-finite potential (each check syncs the device).
WARMUP_CHECK_EVERY = 50


def sample(
    model: BKDModel,
    data: DistillationData,
    *,
    method: str = DEFAULT_METHOD,
    num_samples: int = 200,
    warmup_steps: int | None = None,
    thin: int | None = None,
    num_chains: int = 4,
    batch_size: int | None = None,
    step_size: float | StepSchedule | None = None,
    posterior_temperature: float = 1.0,
    x_test: torch.Tensor | None = None,
    keep_weights: bool = False,
    warm_start: Literal["map"] | Mapping[str, torch.Tensor] | SamplingResult | None = "map",
    init_spread: float = 1.0,
    map_steps: int = 500,
    map_lr: float = 1e-3,
    algorithm_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    on_nonfinite: Literal["raise", "backoff"] = "raise",
    device: torch.device | str | None = None,
    progress: bool = True,
    distributed: bool | Literal["chains", "data"] | None = None,
    **deprecated: Any,
) -> SamplingResult:
    """Sample the BKD posterior of ``model`` given ``data`` with ``num_chains`` chains.

    Args:
        method: ``"sghmc"`` (default; full-batch gradients unless ``batch_size`` is given,
            then minibatches with the gradient-noise correction), ``"hmc"`` (exact,
            Metropolis-corrected, full batch only), ``"sgld"`` or ``"psgld"``.
        num_samples: draws kept per chain.
        warmup_steps: warm-up iterations (HMC iterations or gradient steps); default per
            method, :data:`DEFAULT_BUDGETS`.
        thin: iterations per kept draw; default per method.
        batch_size: minibatch size ``m`` (``None``: all ``N`` points, exact gradients; HMC
            needs them).
        step_size: a fixed ``eps``, or a :class:`~pyro_bkd.infer.schedules.StepSchedule` of
            the iteration (e.g. :class:`~pyro_bkd.CyclicalStep`), counted over warm-up and
            sampling (no step-size adaptation then); ``None`` adapts it in warm-up.
        posterior_temperature: ``T``, the target is ``pi^(1/T)`` (cold posteriors: ``T < 1``);
            the KD temperature is the model's ``BKDModel(temperature=tau)``.
        x_test: inputs at which ``q^(s)(x) = softmax(f(x; theta_s))`` is kept per draw.
        keep_weights: keep the weight draws too.
        warm_start: ``"map"`` (find the MAP from the student's weights, then disperse the
            chains around it), weights ``{name: tensor}`` (dispersed around them), weights
            with a leading chain dimension ``{name: [C, ...]}`` or a :class:`SamplingResult`
            with ``keep_weights`` (continue those chains; no dispersion), or ``None`` (the
            student's weights, dispersed).
        init_spread: scale of the dispersion (multiples of the diagonal Laplace sd; 0: all
            chains start at the same point).
        map_steps, map_lr: Adam steps and learning rate of the MAP search.
        algorithm_options: hyper-parameters of the algorithm (e.g. ``num_steps`` of HMC,
            ``friction`` of SGHMC, ``step_factor``).
        seed: fixes every random choice (starts, minibatches, noise, accept/reject).
        checkpoint: a file to save the state to every ``checkpoint_every`` draws; an existing
            one written with the same settings is resumed, or extended when it finished with
            fewer ``num_samples`` (the result equals one run of the larger ``num_samples``).
            Split over processes, each rank keeps ``<checkpoint>.rank<r>-of-<K>``.
        on_nonfinite: ``"raise"`` :class:`~pyro_bkd.infer.monitor.NonFiniteError`, or
            ``"backoff"``: restart from the last good state with half the step.
        distributed: split the run over the processes of ``torch.distributed`` (launched by
            ``torchrun``): ``"chains"`` (each rank runs ``num_chains / K`` chains on its own
            device; on CPUs the draws equal a one-process run's bit for bit), ``"data"`` (each rank
            holds ``N / K`` training points, gradients are summed over ranks), ``True``
            (``"chains"``), ``False``, or ``None``: ``"chains"`` when a process group of
            more than one process is initialised. Every rank returns the whole result; write
            outputs on rank 0 only. See :mod:`pyro_bkd.infer.parallel`.
        deprecated: ``warmup=``, ``chains=`` and ``temperature=`` (old names of
            ``warmup_steps``, ``num_chains`` and ``posterior_temperature``).

    Returns:
        :class:`SamplingResult`, whose ``convergence`` holds the verdict; a
        :class:`~pyro_bkd.infer.verdict.ConvergenceWarning` is issued when it is not
        ``"converged"``.
    """
    renamed = _checks.renamed(
        "sample",
        RENAMED,
        deprecated,
        warmup_steps=warmup_steps,
        num_chains=num_chains,
        posterior_temperature=posterior_temperature,
    )
    warmup_steps, num_chains = renamed["warmup_steps"], renamed["num_chains"]
    posterior_temperature = renamed["posterior_temperature"]
    if not isinstance(model, BKDModel):
        raise InputTypeError(f"model must be a pyro_bkd.BKDModel, got {type(model).__name__}")
    if not isinstance(data, DistillationData):
        raise InputTypeError(f"data must be a DistillationData, got {type(data).__name__}")
    if data.y is None:
        raise InputError("data.y is None: sampling the posterior needs labels")
    if x_test is not None:
        _checks.tensor("x_test", x_test)
        _checks.finite("x_test", x_test)
    partition = Partition.resolve(distributed)
    dev = torch.device(device) if device is not None else device_of(model.student)
    model.student.to(dev)
    data = data.to(dev)
    potential = _potential(model, data, partition)
    predict = None
    if x_test is not None:
        x_test = x_test.to(dev)
        _check_test_inputs(model, x_test, data)

        def predict(thetas: torch.Tensor) -> torch.Tensor:
            return predict_probs(model.student, potential.layout.unflatten(thetas), x_test)

    identity = fingerprint(model, data, x_test)

    sigma = model.prior_scale
    return sample_potential(
        potential,
        method=method,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        thin=thin,
        num_chains=num_chains,
        batch_size=batch_size,
        step_size=step_size,
        posterior_temperature=posterior_temperature,
        keep_weights=keep_weights,
        warm_start=warm_start,
        init_spread=init_spread,
        map_steps=map_steps,
        map_lr=map_lr,
        algorithm_options=algorithm_options,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        on_nonfinite=on_nonfinite,
        progress=progress,
        predict=predict,
        prior_variance=1.0 if sigma is None else sigma**2,
        config={
            "tau": model.temperature,
            "strength": model.strength,
            "prior_scale": sigma,
            "num_train": len(data),
            "fingerprint": identity,
        },
        partition=partition,
    )


def _potential(model: BKDModel, data: DistillationData, partition: Partition) -> Potential:
    """The BKD potential of ``data``, or of this process's shard of it when the data are
    split over processes."""
    lo, hi = partition.shard(len(data))
    teacher = data.teacher_logits
    local = BKDPotential(
        model, data.x[lo:hi], data.y[lo:hi], None if teacher is None else teacher[lo:hi]
    )
    return ShardedPotential(local, lo, len(data)) if partition.mode == "data" else local


def _check_test_inputs(model: BKDModel, x_test: torch.Tensor, data: DistillationData) -> None:
    """``x_test`` must fit the student before any sampling (not only at the first draw's
    prediction): its rows have the training inputs' shape and dtype."""
    if x_test.dim() < 1 or x_test.shape[1:] != data.x.shape[1:] or x_test.dtype != data.x.dtype:
        raise InputError(
            f"x_test must have rows like x's ({tuple(data.x.shape[1:])}, {data.x.dtype}), got "
            f"{tuple(x_test.shape)}, {x_test.dtype}"
        )


def fingerprint(
    model: BKDModel, data: DistillationData, x_test: torch.Tensor | None
) -> dict[str, str | int]:
    """What determines the draws besides the settings, for a checkpoint's identity: a
    SHA-256 of the training data, teacher logits, test inputs, the student's architecture
    (its ``repr``) and starting weights, and torch's thread count (a different count can
    change the float rounding, hence the draws)."""
    digest = hashlib.sha256()
    tensors = [data.x, data.y, data.teacher_logits, x_test, *model.initial_values().values()]
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(model.student).encode())
    return {"sha256": digest.hexdigest(), "threads": torch.get_num_threads()}


def sample_potential(
    potential: Potential,
    *,
    method: str = DEFAULT_METHOD,
    num_samples: int = 200,
    warmup_steps: int | None = None,
    thin: int | None = None,
    num_chains: int = 4,
    batch_size: int | None = None,
    step_size: float | StepSchedule | None = None,
    posterior_temperature: float = 1.0,
    keep_weights: bool = True,
    warm_start: str | torch.Tensor | Mapping[str, torch.Tensor] | SamplingResult | None = None,
    init_spread: float = 1.0,
    map_steps: int = 500,
    map_lr: float = 1e-3,
    algorithm_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    on_nonfinite: Literal["raise", "backoff"] = "raise",
    progress: bool = True,
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prior_variance: float = 1.0,
    config: Mapping[str, Any] | None = None,
    partition: Partition | None = None,
) -> SamplingResult:
    """:func:`sample` on any :class:`~pyro_bkd.infer.potential.Potential` (the engine behind
    it, also used by the tests' exact Gaussian targets).

    ``warm_start`` may also be a flat ``theta [D]`` or ``[C, D]``; ``predict(thetas [C, S,
    D]) -> [C, S, ...]`` gives the quantities kept per draw (``probs``, and the verdict's
    subject); ``prior_variance`` is the unit of the metric's floor and of the dispersion's
    floor; ``config`` is added to the result's config (and to the checkpoint's identity);
    ``partition`` splits the run over processes (:class:`~pyro_bkd.infer.parallel.Partition`).
    """
    setup = _Setup.check(
        potential,
        method,
        num_samples,
        warmup_steps,
        thin,
        num_chains,
        batch_size,
        step_size,
        posterior_temperature,
        checkpoint_every,
        on_nonfinite,
        seed,
        algorithm_options,
    )
    run = _Run(
        setup,
        potential,
        predict,
        prior_variance,
        dict(config or {}),
        warm_start,
        init_spread,
        map_steps,
        map_lr,
        keep_weights,
        checkpoint,
        progress,
        partition or Partition(),
    )
    return run.execute()


#: ``(warmup_steps, thin)`` by method, measured in ``benchmarks/bench_mixing.py``.
DEFAULT_BUDGETS: dict[str, tuple[int, int]] = {
    "hmc": (300, 1),
    "sghmc": (16000, 120),
    "sgld": (8000, 40),
    "psgld": (8000, 40),
}


@dataclasses.dataclass(frozen=True)
class _Setup:
    """The checked settings of one run."""

    algorithm: Algorithm
    num_samples: int
    warmup_steps: int
    thin: int
    num_chains: int
    batch_size: int | None
    step_size: float | StepSchedule | None
    posterior_temperature: float
    checkpoint_every: int
    on_nonfinite: str
    seed: int

    @classmethod
    def check(
        cls,
        potential,
        method,
        num_samples,
        warmup_steps,
        thin,
        num_chains,
        batch_size,
        step_size,
        posterior_temperature,
        checkpoint_every,
        on_nonfinite,
        seed,
        algorithm_options,
    ) -> _Setup:
        if method not in ALGORITHMS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        if on_nonfinite not in ("raise", "backoff"):
            raise InputError(f"on_nonfinite must be 'raise' or 'backoff', got {on_nonfinite!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be an int >= 0, got {seed!r}")
        default_warmup, default_thin = DEFAULT_BUDGETS[method]
        warmup_steps = default_warmup if warmup_steps is None else warmup_steps
        thin = default_thin if thin is None else thin
        for name, value in (
            ("num_samples", num_samples),
            ("thin", thin),
            ("num_chains", num_chains),
            ("checkpoint_every", checkpoint_every),
        ):
            _checks.positive_int(name, value)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise InputError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        posterior_temperature = _checks.positive_float(
            "posterior_temperature", posterior_temperature
        )
        if step_size is not None and not isinstance(step_size, StepSchedule):
            step_size = _checks.positive_float("step_size", step_size)
        n = potential.num_examples
        if batch_size is not None:
            _checks.positive_int("batch_size", batch_size)
            if n is None:
                raise InputError("batch_size needs a potential with a data plate")
            if batch_size > n:
                raise InputError(f"batch_size must be <= N={n}, got {batch_size}")
            batch_size = None if batch_size == n else batch_size
        algorithm = ALGORITHMS[method](**dict(algorithm_options or {}))
        if algorithm.full_batch and batch_size is not None:
            raise InputError(
                f"method {method!r} needs exact full-batch gradients (a Metropolis test); "
                f"use batch_size=None, or method='sghmc' for minibatches"
            )
        return cls(
            algorithm,
            num_samples,
            warmup_steps,
            thin,
            num_chains,
            batch_size,
            step_size,
            posterior_temperature,
            checkpoint_every,
            on_nonfinite,
            seed,
        )

    @property
    def config(self) -> dict[str, Any]:
        """The settings that determine the draws (checkpoint identity, InferenceData attrs)."""
        options = {
            f.name: getattr(self.algorithm, f.name)
            for f in dataclasses.fields(self.algorithm)
            if not isinstance(getattr(self.algorithm, f.name), torch.Tensor | type(None))
        }
        return {
            "method": self.algorithm.name,
            "algorithm_options": options,
            "num_samples": self.num_samples,
            "warmup_steps": self.warmup_steps,
            "thin": self.thin,
            "num_chains": self.num_chains,
            "batch_size": self.batch_size,
            "fixed_step_size": (
                self.step_size
                if not isinstance(self.step_size, StepSchedule)
                else repr(self.step_size)
            ),
            "posterior_temperature": self.posterior_temperature,
            "seed": self.seed,
        }


class _Run:
    """One execution of :func:`sample`: set-up, warm-up, sampling, verdict."""

    def __init__(
        self,
        setup: _Setup,
        potential: Potential,
        predict,
        prior_variance: float,
        config: dict,
        warm_start,
        init_spread,
        map_steps,
        map_lr,
        keep_weights,
        checkpoint,
        progress,
        partition: Partition,
    ) -> None:
        self.s = setup
        self.potential = potential
        self.predict = predict
        self.prior_variance = _checks.positive_float("prior_variance", prior_variance)
        self.keep_weights = keep_weights
        self.partition = partition
        self.checkpoint = None if checkpoint is None else partition.checkpoint_path(checkpoint)
        self.progress = progress and partition.is_main
        self.device = potential.initial_theta().device
        self.streams = Streams(setup.seed, partition.chain_ids(setup.num_chains), self.device)
        self.batches = EpochBatches(
            potential.num_examples or 1,
            setup.batch_size,
            len(self.streams.chains),
            generators=self.streams.chains,
            device=self.device,
        )
        self.config = {
            **setup.config,
            **config,
            "keep_weights": keep_weights,
            "distributed": partition.config(potential.num_examples, setup.batch_size),
        }
        self.warm_start = warm_start
        self.init_spread = _checks.nonnegative_float("init_spread", init_spread)
        self.map_steps = _checks.positive_int("map_steps", map_steps)
        self.map_lr = _checks.positive_float("map_lr", map_lr)

    # -- the estimator, bound to the next minibatch --------------------------------------------
    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.potential.batched_value_and_grad(theta, self.batches.next())

    def execute(self) -> SamplingResult:
        start_time = time.perf_counter()
        resumed = _load_checkpoint(self.checkpoint, self.config)
        if resumed is None:
            theta0 = self._starts()
            algorithm, state, step_size, metric = self._warmup(theta0)
            progress = _Progress(iteration=0, draws_done=0, step_scale=1.0, backoffs=[])
            buffers = _new_buffers(
                len(self.streams.chains),
                self.s.num_samples,
                self.keep_weights,
                self.potential.layout.dim,
            )
            elapsed = 0.0
        else:
            algorithm, state, step_size, metric, progress, buffers, elapsed = self._restore(resumed)
        result = self._sampling(
            algorithm, state, step_size, metric, progress, buffers, start_time - elapsed
        )
        converged = result.convergence is None or result.convergence.converged
        if not converged and self.partition.is_main:
            warnings.warn(result.convergence.message, ConvergenceWarning, stacklevel=4)
        return result

    # -- starting points -----------------------------------------------------------------------
    def _starts(self) -> torch.Tensor:
        """``theta [c, D]`` of this process's chains: the given per-chain starts, or one start
        dispersed over all ``C`` chains (from the shared stream, the same in every process)."""
        return self._all_starts()[list(self.streams.chain_ids)]

    def _all_starts(self) -> torch.Tensor:
        """``theta [C, D]``: per-chain starts, or one start dispersed over the chains."""
        layout, c = self.potential.layout, self.s.num_chains
        warm = self.warm_start
        if isinstance(warm, SamplingResult):
            if warm.weights is None:
                raise InputError(
                    "warm_start: the SamplingResult kept no weights "
                    "(sample it with keep_weights=True to continue its chains)"
                )
            warm = {name: value[:, -1] for name, value in warm.weights.items()}
        if isinstance(warm, Mapping):
            values = {k: torch.as_tensor(v).to(self.device) for k, v in warm.items()}
            first = layout.names[0]
            per_chain = first in values and values[first].dim() == len(layout.shapes[0]) + 1
            warm = layout.flatten(values)
            if not per_chain:
                warm = warm.reshape(-1)
        if isinstance(warm, torch.Tensor):
            warm = warm.to(self.device, torch.get_default_dtype()).detach()
            if warm.dim() == 2:
                if warm.shape != (c, layout.dim):
                    raise InputError(
                        f"warm_start must have {c} chains of {layout.dim} "
                        f"weights, got shape {tuple(warm.shape)}"
                    )
                return warm.clone()
            if warm.shape != (layout.dim,):
                raise InputError(
                    f"warm_start must have {layout.dim} weights, got shape {tuple(warm.shape)}"
                )
            center = warm
        elif warm is None:
            center = self.potential.initial_theta()
        elif warm == "map":
            center = find_map(
                self.potential,
                self.potential.initial_theta(),
                steps=self.map_steps,
                lr=self.map_lr,
                batch_size=self.s.batch_size,
                generator=self.streams.shared,
            )
        else:
            raise InputError(
                f"warm_start must be 'map', weights, a SamplingResult or None, got {warm!r}"
            )
        return dispersed(
            self.potential, center, c, self.init_spread, self.streams.shared, self.prior_variance
        )

    # -- warm-up ---------------------------------------------------------------------------------
    def _warmup(self, theta0: torch.Tensor):
        s = self.s
        schedule = s.step_size if isinstance(s.step_size, StepSchedule) else None
        warmup = Warmup(
            s.algorithm,
            self.potential,
            s.warmup_steps,
            self.value_and_grad,
            self.streams,
            self.prior_variance,
            s.step_size if schedule is None else schedule(0),
            minibatch=s.batch_size is not None,
            gather=self.partition.gather,
        )
        state = s.algorithm.init(theta0, self.value_and_grad)
        warmup.start(state)
        bar = tqdm(
            total=s.warmup_steps, disable=not self.progress, desc=f"BKD {s.algorithm.name} warm-up"
        )
        for iteration in range(s.warmup_steps):
            state, info = warmup.algorithm.step(
                state,
                self.value_and_grad,
                warmup.step_size if schedule is None else schedule(iteration),
                warmup.metric,
                self.streams,
                s.posterior_temperature,
            )
            state = warmup.observe(iteration, state, info)
            if (iteration + 1) % WARMUP_CHECK_EVERY == 0 and not bool(
                torch.isfinite(state.potential).all()
            ):
                raise NonFiniteError(
                    iteration + 1,
                    None,
                    detail="in warm-up; lower step_size "
                    "or check the data and the student for NaN/inf",
                )
            bar.update(1)
        bar.close()
        return warmup.algorithm, state, warmup.step_size, warmup.metric

    # -- sampling ------------------------------------------------------------------------------
    def _sampling(self, algorithm, state, step_size, metric, progress, buffers, started):
        s = self.s
        total = s.num_samples * s.thin
        chunk = _draw_chunk(s.num_chains, self.potential.layout.dim)
        floor = _runaway_floor(
            self.potential, state.theta, s.batch_size, s.posterior_temperature, s.seed
        )
        good = _Snapshot.take(state, progress, self)
        monitor = FiniteMonitor(block=10**9, first_step=progress.iteration, floor=floor)
        pending: list[tuple[torch.Tensor, ...]] = []
        bar = tqdm(
            total=total,
            initial=progress.iteration,
            disable=not self.progress,
            desc=f"BKD {algorithm.name}",
        )
        while progress.iteration < total:
            if isinstance(s.step_size, StepSchedule):
                step_size = s.step_size(s.warmup_steps + progress.iteration)
            eps = _scaled(step_size, progress.step_scale)
            state, info = algorithm.step(
                state, self.value_and_grad, eps, metric, self.streams, s.posterior_temperature
            )
            grad_norm = state.grad.norm(dim=-1)
            monitor.record(-state.potential, grad_norm)
            progress.iteration += 1
            kept = progress.iteration % s.thin == 0
            if kept:  # stays on the device until the chunk is flushed: no sync per draw
                pending.append(
                    (
                        state.theta,
                        -state.potential,
                        grad_norm,
                        info.accept_prob,
                        eps,  # a float or [C]: made a tensor when the chunk is flushed
                    )
                )
                progress.draws_done += 1
            at_checkpoint = (
                self.checkpoint is not None
                and kept
                and progress.draws_done % s.checkpoint_every == 0
            )
            if len(pending) == chunk or at_checkpoint or progress.iteration == total:
                try:
                    monitor.check()
                except NonFiniteError as error:
                    if s.on_nonfinite == "raise" or len(progress.backoffs) >= MAX_BACKOFFS:
                        if s.on_nonfinite == "backoff":
                            raise NonFiniteError(
                                error.step,
                                error.last_finite_log_joint,
                                error.chain,
                                detail=f"gave up after {MAX_BACKOFFS} step-size halvings; the "
                                "fault does not go away with smaller steps: check the data "
                                "and the student for NaN/inf",
                            ) from error
                        raise
                    state, progress = good.restore(self, progress, error.step)
                    pending = []
                    monitor = FiniteMonitor(block=10**9, first_step=progress.iteration, floor=floor)
                    bar.n = progress.iteration
                    continue
                _flush(pending, buffers, progress.draws_done, self.predict, self.keep_weights)
                pending = []
                good = _Snapshot.take(state, progress, self)
                if self.checkpoint is not None and (at_checkpoint or progress.iteration == total):
                    _save_checkpoint(
                        self.checkpoint,
                        self.config,
                        good,
                        algorithm,
                        step_size,
                        metric,
                        buffers,
                        time.perf_counter() - started,
                    )
            if progress.iteration % 50 == 0 or progress.iteration == total:
                bar.n = progress.iteration
                bar.refresh()
        bar.close()
        buffers = {k: self.partition.gather(v) for k, v in buffers.items()}
        if metric is not None:
            metric = self.partition.gather(metric)
        if isinstance(step_size, torch.Tensor):
            step_size = self.partition.gather(step_size)
        weights = self.potential.layout.unflatten(buffers["weights"]) if self.keep_weights else None
        stats = {k: buffers[k] for k in ("lp", "grad_norm", "step_size", "accept_prob")}
        probs = buffers.get("probs")
        config = {**self.config, "step_size": as_float(step_size)}
        return SamplingResult(
            probs=probs,
            sample_stats=stats,
            weights=weights,
            config=config,
            wall_seconds=time.perf_counter() - started,
            backoffs=list(progress.backoffs),
            convergence=None if probs is None else diagnose(probs),
            metric=None if metric is None else metric.detach().cpu(),
        )

    def _restore(self, payload: dict):
        saved = payload["state"]
        dev = self.device
        state = ChainState(
            **{k: None if v is None else v.to(dev) for k, v in saved["chain"].items()}
        )
        algorithm = self.s.algorithm
        if saved["gradient_noise"] is not None:
            algorithm = dataclasses.replace(
                algorithm, gradient_noise=saved["gradient_noise"].to(dev)
            )
        step_size = saved["step_size"]
        if isinstance(step_size, torch.Tensor):
            step_size = step_size.to(dev)
        metric = None if saved["metric"] is None else saved["metric"].to(dev)
        progress = _Progress(
            int(saved["iteration"]),
            int(saved["draws_done"]),
            float(saved["step_scale"]),
            list(saved["backoffs"]),
        )
        self.streams.load_state_dict(saved["streams"])
        self.batches.load_state_dict(
            {
                k: v.to(dev) if isinstance(v, torch.Tensor) else v
                for k, v in saved["batches"].items()
            }
        )
        return (
            algorithm,
            state,
            step_size,
            metric,
            progress,
            _extended(payload["buffers"], self.s.num_samples),
            payload["wall_seconds"],
        )


@dataclasses.dataclass
class _Progress:
    iteration: int
    draws_done: int
    step_scale: float
    backoffs: list[int]


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """The last state known good, to return to on a back-off or to save in a checkpoint."""

    state: ChainState
    progress: _Progress
    streams: dict
    batches: dict

    @classmethod
    def take(cls, state: ChainState, progress: _Progress, run: _Run) -> _Snapshot:
        return cls(
            state,
            dataclasses.replace(progress, backoffs=list(progress.backoffs)),
            run.streams.state_dict(),
            dict(run.batches.state_dict()),
        )

    def restore(self, run: _Run, current: _Progress, bad_step: int) -> tuple[ChainState, _Progress]:
        """Back to this snapshot with ``bad_step`` added to the back-offs of ``current`` and
        the step halved once per back-off since the snapshot (so repeated back-offs from one
        snapshot keep halving)."""
        run.streams.load_state_dict(self.streams)
        run.batches.load_state_dict(dict(self.batches))
        backoffs = [*current.backoffs, bad_step]
        since = len(backoffs) - len(self.progress.backoffs)
        progress = dataclasses.replace(
            self.progress, backoffs=backoffs, step_scale=self.progress.step_scale / 2**since
        )
        return self.state, progress


#: Old keyword of :func:`sample` -> its new name (accepted for one release).
RENAMED = {"warmup": "warmup_steps", "chains": "num_chains", "temperature": "posterior_temperature"}


def _scaled(step_size: float | torch.Tensor, scale: float) -> float | torch.Tensor:
    return step_size if scale == 1.0 else step_size * scale


def _runaway_floor(
    potential, theta, batch_size, posterior_temperature, seed, num_batches=16
) -> float:
    """:func:`~pyro_bkd.infer.monitor.runaway_floor` below the lowest chain at the start of
    sampling (``theta [C, D]``), widened to 20 standard deviations of the minibatch estimate
    of the log joint there (estimated from ``num_batches`` minibatches drawn with their own
    generator, so the chains' random stream is untouched)."""
    with torch.no_grad():
        joints = torch.stack([potential.log_joint(t) for t in theta])
        theta0 = theta[int(joints.argmin())]
        start = float(joints.min())
        floor = runaway_floor(start, potential.layout.dim, posterior_temperature)
        n = potential.num_examples
        if batch_size is None or batch_size >= n:
            return floor
        generator = torch.Generator().manual_seed(seed)
        estimates = torch.stack(
            [
                potential.log_joint(
                    theta0, torch.randperm(n, generator=generator)[:batch_size].to(theta0.device)
                )
                for _ in range(num_batches)
            ]
        )
    return min(floor, start - 20.0 * float(estimates.std()))


def _new_buffers(chains: int, num_samples: int, keep_weights: bool, dim: int) -> dict:
    names = ("lp", "grad_norm", "step_size", "accept_prob")
    buffers = {k: torch.zeros(chains, num_samples) for k in names}
    if keep_weights:
        buffers["weights"] = torch.zeros(chains, num_samples, dim)
    return buffers


def _extended(buffers: dict, num_samples: int) -> dict:
    """``buffers`` (``[c, S, ...]`` each) with room for ``num_samples >= S`` draws."""
    out = {}
    for name, value in buffers.items():
        grown = value.new_zeros(value.shape[0], num_samples, *value.shape[2:])
        grown[:, : value.shape[1]] = value
        out[name] = grown
    return out


def _draw_chunk(chains: int, dim: int) -> int:
    """Retained draws buffered on the device before the predictive runs (bounded memory)."""
    return max(1, min(32, (1 << 24) // max(1, chains * dim)))


def _flush(pending, buffers, draws_done, predict, keep_weights) -> None:
    """Move a chunk of retained draws ``(theta, lp, grad_norm, accept_prob, step_size)``
    to their host buffers and through the predictive."""
    if not pending:
        return
    *tensors, step_sizes = zip(*pending, strict=True)
    thetas, log_joints, grad_norms, accepts = (torch.stack(parts, dim=1) for parts in tensors)
    steps = torch.stack(
        [torch.as_tensor(e, dtype=thetas.dtype).cpu().expand(thetas.shape[0]) for e in step_sizes],
        dim=1,
    )
    lo, hi = draws_done - thetas.shape[1], draws_done
    buffers["lp"][:, lo:hi] = log_joints.cpu()
    buffers["grad_norm"][:, lo:hi] = grad_norms.cpu()
    buffers["accept_prob"][:, lo:hi] = accepts.cpu()
    buffers["step_size"][:, lo:hi] = steps.cpu()
    if keep_weights:
        buffers["weights"][:, lo:hi] = thetas.cpu()
    if predict is not None:
        probs = predict(thetas)
        if "probs" not in buffers:
            c, s = buffers["lp"].shape
            buffers["probs"] = torch.zeros(c, s, *probs.shape[2:])
        buffers["probs"][:, lo:hi] = probs


def _save_checkpoint(
    path, config, good: _Snapshot, algorithm, step_size, metric, buffers, wall_seconds: float
) -> None:
    noise = getattr(algorithm, "gradient_noise", None)
    state = {
        "chain": good.state.to_dict(),
        "iteration": good.progress.iteration,
        "draws_done": good.progress.draws_done,
        "step_scale": good.progress.step_scale,
        "backoffs": list(good.progress.backoffs),
        "step_size": step_size,
        "metric": metric,
        "gradient_noise": noise,
        "streams": good.streams,
        "batches": good.batches,
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "state": state,
        "buffers": buffers,
        "wall_seconds": wall_seconds,
    }
    payload["sha256"] = _checksum(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _checksum(payload: dict) -> str:
    """SHA-256 of every tensor and number in a checkpoint (not of ``sha256`` itself), in a
    fixed order: a flipped bit in a stored weight or draw is caught on resume."""
    digest = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if key != "sha256":
                    digest.update(str(key).encode())
                    visit(value[key])
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)
        else:
            digest.update(repr(value).encode())

    visit(payload)
    return digest.hexdigest()


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.<id>.tmp`` files next to ``path`` left by interrupted checkpoint
    writes (:func:`~pyro_bkd._atomic.atomic_path` names them so)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _load_checkpoint(path, config) -> dict | None:
    if path is None:
        return None
    _remove_stale_temporaries(Path(path))
    if not Path(path).exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated, foreign or corrupt file: name it
        raise InputError(
            f"checkpoint {os.fspath(path)!r} cannot be read as a pyro-bkd checkpoint "
            f"({type(error).__name__}); remove it to start afresh"
        ) from error
    if not isinstance(payload, dict) or "config" not in payload:
        raise InputError(f"checkpoint {os.fspath(path)!r} is not a pyro-bkd checkpoint")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"checkpoint {os.fspath(path)!r} was written by another version of pyro-bkd "
            f"(layout {payload.get('format', 1)}, this one reads {CHECKPOINT_FORMAT}); remove it "
            "to start afresh"
        )
    saved = payload["config"]
    changed = sorted(k for k in config if saved.get(k) != config[k])
    if changed == ["num_samples"] and saved["num_samples"] < config["num_samples"]:
        changed = []  # more draws of the same run: extended on restore
    if changed:
        raise InputError(
            f"checkpoint {os.fspath(path)!r} was written with other settings ({changed}); "
            f"remove it or use the same settings to resume (num_samples may only grow)"
        )
    if payload.get("sha256") != _checksum(payload):
        raise InputError(
            f"checkpoint {os.fspath(path)!r} is corrupt (its checksum does not match its "
            "contents); remove it to start afresh"
        )
    return payload
