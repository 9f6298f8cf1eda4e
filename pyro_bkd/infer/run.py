"""The sampling driver: vectorised SGLD/pSGLD chains for students too large to keep every draw.

What it adds to ``pyro.infer.MCMC`` + :class:`~pyro_bkd.infer.sgld.SGLD`:

- all chains advance together: weights ``theta [C, D]``, one ``vmap`` of the potential's
  gradient per step, each chain with its own minibatch and noise;
- warm start at the MAP/KD solution (``warm_start="map"``), or at given weights;
- thinning, and the test-input class probabilities ``q^(s)(x)`` computed in chunks of retained
  draws instead of storing weights (``keep_weights=True`` keeps them too);
- a seeded ``torch.Generator`` for minibatches and noise, so a run is repeatable, and
  checkpoint/resume: the state is saved atomically every ``checkpoint_every`` draws and a
  resumed run continues exactly as an uninterrupted one;
- NaN/inf detection once per chunk (no host sync per step), and of runaway chains whose log
  joint fell far below the start's (:func:`~pyro_bkd.infer.monitor.runaway_floor`; a blow-up
  before it reaches inf): stop with the step and the last log joint, or
  (``on_nonfinite="backoff"``) return to the last good state and halve the step size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from pyro_bkd import _checks
from pyro_bkd._atomic import atomic_path
from pyro_bkd.data.record import DistillationData
from pyro_bkd.infer.batches import EpochBatches
from pyro_bkd.infer.integrators import psgld_step, sgld_step
from pyro_bkd.infer.map import find_map
from pyro_bkd.infer.monitor import FiniteMonitor, NonFiniteError, runaway_floor
from pyro_bkd.infer.potential import BKDPotential
from pyro_bkd.infer.schedules import RMSPropPreconditioner, StepSchedule, as_schedule
from pyro_bkd.model import BKDModel
from pyro_bkd.predictive import predict_probs

METHODS = ("sgld", "psgld")


@dataclass(frozen=True, eq=False)
class SamplingResult:
    """Output of :func:`sample`.

    Attributes:
        probs: ``q^(s)(x_test)`` of shape ``[chain, draw, N_test, K]`` (CPU), or ``None``.
        sample_stats: ``lp`` (minibatch log joint), ``step_size``, ``grad_norm``; ``[chain, draw]``.
        weights: ``{name: [chain, draw, *shape]}`` when ``keep_weights``, else ``None``.
        config: method and hyper-parameters, for ``InferenceData`` attributes.
        wall_seconds: sampling time, warm start included.
        backoffs: steps at which a non-finite value made the step size halve.
    """

    probs: torch.Tensor | None
    sample_stats: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None
    config: dict[str, Any]
    wall_seconds: float
    backoffs: list[int] = field(default_factory=list)

    def to_inference_data(
        self,
        *,
        y: torch.Tensor | None = None,
        p_true: torch.Tensor | None = None,
        teacher_probs: torch.Tensor | None = None,
        class_names: list[str] | None = None,
        log_likelihood: bool | None = None,
    ):
        """An ``arviz.InferenceData`` (see :func:`pyro_bkd.export.to_inference_data`)."""
        from pyro_bkd.export import to_inference_data

        if self.probs is None:
            raise ValueError("no test inputs were given to sample(), so there are no probs")
        return to_inference_data(
            self.probs,
            y=y,
            p_true=p_true,
            teacher_probs=teacher_probs,
            sample_stats=self.sample_stats,
            posterior=self.weights,
            log_likelihood=log_likelihood,
            class_names=class_names,
            attrs={**self.config, "wall_seconds": self.wall_seconds},
        )


@dataclass
class _ChainState:
    """Everything a resumed run needs (posteriors' frozen-state idea, mutable for speed)."""

    theta: torch.Tensor  # [C, D]
    iteration: int
    draws_done: int
    step_scale: float
    second_moment: torch.Tensor | None
    gain: torch.Tensor | None
    generator_state: torch.Tensor
    batches: dict

    def snapshot(self) -> dict:
        return {
            "theta": self.theta.clone(),
            "iteration": self.iteration,
            "draws_done": self.draws_done,
            "step_scale": self.step_scale,
            "second_moment": None if self.second_moment is None else self.second_moment.clone(),
            "gain": None if self.gain is None else self.gain.clone(),
            "generator_state": self.generator_state.clone(),
            "batches": dict(self.batches),
        }


def sample(
    model: BKDModel,
    data: DistillationData,
    *,
    method: Literal["sgld", "psgld"] = "sgld",
    num_samples: int = 200,
    warmup: int = 1000,
    thin: int = 10,
    chains: int = 4,
    batch_size: int | None = None,
    step_size: float | StepSchedule | None = None,
    temperature: float = 1.0,
    x_test: torch.Tensor | None = None,
    keep_weights: bool = False,
    warm_start: Literal["map"] | Mapping[str, torch.Tensor] | None = None,
    map_steps: int = 500,
    map_lr: float = 1e-3,
    preconditioner: RMSPropPreconditioner | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    on_nonfinite: Literal["raise", "backoff"] = "raise",
    device: torch.device | str | None = None,
    progress: bool = True,
) -> SamplingResult:
    """Sample the BKD posterior with ``chains`` vectorised SGLD or pSGLD chains.

    Steps: ``warmup`` SGLD iterations (pSGLD adapts its preconditioner there), then
    ``num_samples * thin`` iterations keeping every ``thin``-th. ``batch_size=None`` uses all
    ``N`` points per step (Langevin without minibatch noise). The default step size is
    :func:`default_step_size`; the defaults pass simulation-based calibration and agree with
    NUTS on a small softmax regression (``tests/test_sgld.py``).
    """
    if not isinstance(model, BKDModel):
        raise TypeError(f"model must be a pyro_bkd.BKDModel, got {type(model).__name__}")
    if not isinstance(data, DistillationData):
        raise TypeError(f"data must be a DistillationData, got {type(data).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if on_nonfinite not in ("raise", "backoff"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'backoff', got {on_nonfinite!r}")
    for name, value in (
        ("num_samples", num_samples),
        ("thin", thin),
        ("chains", chains),
        ("checkpoint_every", checkpoint_every),
    ):
        _checks.positive_int(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    temperature = _checks.positive_float("temperature", temperature)
    device = torch.device(device) if device is not None else next(model.student.parameters()).device
    model.student.to(device)
    data = data.to(device)
    potential = BKDPotential(model, data.x, data.y, data.teacher_logits)
    n = potential.num_examples
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(seed)
    # The start and the default step are recomputed on resume: both are deterministic given
    # the seed, and the generator state is restored from the checkpoint afterwards.
    theta0 = _starting_point(model, potential, warm_start, map_steps, map_lr, batch_size, generator)
    if step_size is None:
        step_size = default_step_size(method, potential, theta0, generator=generator)
    schedule = as_schedule(step_size)
    rms = preconditioner or RMSPropPreconditioner()
    layout = potential.layout
    if x_test is not None:
        _checks.tensor("x_test", x_test)
    config = {
        "method": method,
        "num_samples": num_samples,
        "warmup": warmup,
        "thin": thin,
        "chains": chains,
        "batch_size": batch_size,
        "step_size": repr(schedule),
        "posterior_temperature": temperature,
        "tau": model.temperature,
        "strength": model.strength,
        "prior_scale": model.prior_scale,
        "seed": seed,
        "num_train": n,
    }
    batches = EpochBatches(n, batch_size, chains, generator=generator, device=device)
    resumed = _load_checkpoint(checkpoint, config)
    if resumed is not None:
        state = _ChainState(**_to_device(resumed["state"], device))
        buffers = resumed["buffers"]
        start -= resumed["wall_seconds"]
    else:
        state = _ChainState(
            theta=theta0.expand(chains, -1).clone(),
            iteration=0,
            draws_done=0,
            step_scale=1.0,
            second_moment=None,
            gain=None,
            generator_state=generator.get_state(),
            batches=batches.state_dict(),
        )
        buffers = _new_buffers(chains, num_samples, keep_weights, layout.dim)
    generator.set_state(state.generator_state)
    batches.load_state_dict(state.batches)

    total = warmup + num_samples * thin
    chunk = _draw_chunk(chains, layout.dim)
    pending: list[torch.Tensor] = []
    floor = _runaway_floor(potential, theta0, batch_size, temperature, seed)
    monitor = FiniteMonitor(block=10**9, first_step=state.iteration, floor=floor)
    backoffs: list[int] = []
    good = state.snapshot()
    bar = tqdm(total=total, initial=state.iteration, disable=not progress, desc=f"BKD {method}")

    while state.iteration < total:
        theta = state.theta
        idx = batches.next()
        value, grad = potential.batched_value_and_grad(theta, idx)
        grad_norm = grad.norm(dim=-1)
        monitor.record(-value, grad_norm)
        eps = schedule(state.iteration) * state.step_scale
        noise = torch.randn(theta.shape, generator=generator, device=device, dtype=theta.dtype)
        if method == "sgld":
            theta = sgld_step(theta, grad, noise, eps, temperature)
        else:
            state.second_moment, state.gain = rms.adapt(
                state.second_moment, state.gain, grad, state.iteration < warmup
            )
            theta = psgld_step(theta, grad, noise, eps, state.gain, temperature)
        state.theta = theta
        state.iteration += 1
        kept = state.iteration > warmup and (state.iteration - warmup) % thin == 0
        if kept:  # stays on the device until the chunk is flushed: no sync per draw
            buffers["step_size"][:, state.draws_done] = eps
            pending.append((theta, -value.detach(), grad_norm))
            state.draws_done += 1
        at_checkpoint = checkpoint is not None and kept and state.draws_done % checkpoint_every == 0
        if len(pending) == chunk or at_checkpoint or state.iteration in (warmup, total):
            try:
                monitor.check()
            except NonFiniteError as error:
                if on_nonfinite == "raise":
                    raise
                backoffs.append(error.step)
                # Halve the step in use (earlier back-offs since ``good`` already halved it).
                state = _ChainState(**{**good, "step_scale": state.step_scale / 2})
                generator.set_state(state.generator_state)
                batches.load_state_dict(state.batches)
                pending = []
                monitor = FiniteMonitor(block=10**9, first_step=state.iteration, floor=floor)
                bar.n = state.iteration
                continue
            _flush(pending, buffers, state.draws_done, model, layout, x_test, keep_weights)
            pending = []
            state.generator_state = generator.get_state()
            state.batches = batches.state_dict()
            good = state.snapshot()
            if checkpoint is not None and (at_checkpoint or state.iteration in (warmup, total)):
                _save_checkpoint(checkpoint, config, good, buffers, time.perf_counter() - start)
        if state.iteration % 50 == 0 or state.iteration == total:
            bar.n = state.iteration
            bar.refresh()
    bar.close()

    weights = None
    if keep_weights:
        weights = layout.unflatten(buffers["weights"])
    stats = {k: buffers[k] for k in ("lp", "grad_norm", "step_size")}
    return SamplingResult(
        probs=buffers.get("probs"),
        sample_stats=stats,
        weights=weights,
        config=config,
        wall_seconds=time.perf_counter() - start,
        backoffs=backoffs,
    )


def _starting_point(model, potential, warm_start, map_steps, map_lr, batch_size, generator):
    """``theta0 [D]``: the student's weights, given weights, or the MAP found from them."""
    if isinstance(warm_start, Mapping):
        return potential.layout.flatten(
            {k: torch.as_tensor(v).to(potential.x.device) for k, v in warm_start.items()}
        )
    theta0 = potential.initial_theta()
    if warm_start is None:
        return theta0
    if warm_start != "map":
        raise ValueError(f"warm_start must be 'map', a dict of weights or None, got {warm_start!r}")
    return find_map(
        potential, theta0, steps=map_steps, lr=map_lr, batch_size=batch_size, generator=generator
    )


def _runaway_floor(potential, theta0, batch_size, temperature, seed, num_batches=16) -> float:
    """:func:`~pyro_bkd.infer.monitor.runaway_floor` at the start, widened to 20 standard
    deviations of the minibatch estimate of the log joint there (estimated from
    ``num_batches`` minibatches drawn with their own generator, so the chains' random stream
    is untouched)."""
    with torch.no_grad():
        start = float(potential.log_joint(theta0))
        floor = runaway_floor(start, potential.layout.dim, temperature)
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


def _to_device(state: dict, device: torch.device) -> dict:
    """Move the tensors of a saved state to ``device`` (generator states stay on the host)."""
    moved = {
        k: v.to(device) if isinstance(v, torch.Tensor) and k != "generator_state" else v
        for k, v in state.items()
    }
    moved["batches"] = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state["batches"].items()
    }
    return moved


def _new_buffers(chains: int, num_samples: int, keep_weights: bool, dim: int) -> dict:
    buffers = {k: torch.zeros(chains, num_samples) for k in ("lp", "grad_norm", "step_size")}
    if keep_weights:
        buffers["weights"] = torch.zeros(chains, num_samples, dim)
    return buffers


def _draw_chunk(chains: int, dim: int) -> int:
    """Retained draws buffered on the device before the predictive runs (bounded memory)."""
    return max(1, min(32, (1 << 24) // max(1, chains * dim)))


def _flush(pending, buffers, draws_done, model, layout, x_test, keep_weights) -> None:
    """Move a chunk of retained draws ``(theta [C, D], lp [C], grad_norm [C])`` to their host
    buffers and through the predictive."""
    if not pending:
        return
    thetas, log_joints, grad_norms = (
        torch.stack(parts, dim=1) for parts in zip(*pending, strict=True)
    )
    lo, hi = draws_done - thetas.shape[1], draws_done
    buffers["lp"][:, lo:hi] = log_joints.cpu()
    buffers["grad_norm"][:, lo:hi] = grad_norms.cpu()
    if keep_weights:
        buffers["weights"][:, lo:hi] = thetas.cpu()
    if x_test is not None:
        probs = predict_probs(model.student, layout.unflatten(thetas), x_test.to(thetas.device))
        if "probs" not in buffers:
            c, s = buffers["lp"].shape
            buffers["probs"] = torch.zeros(c, s, *probs.shape[2:])
        buffers["probs"][:, lo:hi] = probs


def _save_checkpoint(path, config, state: dict, buffers: dict, wall_seconds: float) -> None:
    payload = {"config": config, "state": state, "buffers": buffers, "wall_seconds": wall_seconds}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path, config) -> dict | None:
    if path is None or not Path(path).exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["config"] != config:
        changed = sorted(k for k in config if payload["config"].get(k) != config[k])
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} was written with other settings ({changed}); "
            f"remove it or use the same settings to resume"
        )
    return payload


def default_step_size(
    method: str,
    potential: BKDPotential,
    theta: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> float:
    """The default ``eps`` of :func:`sample`, from the curvature of ``U`` at the start.

    SGLD: ``eps = 1 / lambda_max``, a quarter of the stability limit ``4 / lambda_max`` of
    the discretised Langevin step along the stiffest direction, which sets the O(eps) bias
    there to about 1/4 of the variance (``1/(1 - eps lambda/4)``) and less elsewhere. For a
    softmax regression ``lambda_max ~ N``, so this is about ``1/N``: the setting that passes
    simulation-based calibration and agrees with NUTS in ``tests/test_sgld.py``. The Hessian
    grows with the teacher strength (about ``1 + lam/tau^2`` per example) and with the input
    scale, which a fixed ``c/N`` would ignore. pSGLD: ``eps = 1 / sqrt(lambda_max)``, because
    its gain ``G ~ 1/sqrt(v)`` with ``v ~ lambda`` at stationarity.
    """
    curvature = potential.max_curvature(theta, generator=_cpu_generator(generator))
    if not curvature > 0:
        raise ValueError(
            "the potential has no positive curvature at the start; pass step_size explicitly"
        )
    return 1.0 / curvature if method == "sgld" else 1.0 / curvature**0.5


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """Power-iteration draws are made on the host (a CUDA generator cannot seed ``randperm``)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
