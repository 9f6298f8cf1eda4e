"""Variational baselines on the BKD model: MAP (AutoDelta), mean-field and low-rank Gaussians.

All three fit the unchanged :class:`~pyro_bkd.BKDModel` by stochastic variational inference
with ``Trace_ELBO``: they maximise ``ELBO(phi) = E_{theta ~ g_phi}[log p(D, theta) -
log g_phi(theta)]``, where ``log p(D, theta) = sum_i [log q_{i,y_i} + lam sum_k p_ik log
q_ik^tau - log B(1 + lam p_i)] + log N(theta; 0, sigma^2 I)`` (SPEC §2) and ``g_phi`` is

- ``"delta"``: a point mass (``AutoDelta``), so ``-ELBO = -log p(D, theta)``: the MAP, which is
  KD with matching weight decay (SPEC §3; :func:`pyro_bkd.distill.weight_decay_for_prior`);
- ``"normal"``: ``Normal(mu, diag(s^2))`` over every weight (``AutoNormal``);
- ``"lowrank"``: ``Normal(mu, W W^T + diag(d^2))`` with ``W`` of ``rank`` columns over all
  weights concatenated (``AutoLowRankMultivariateNormal``).

Minibatches of size ``m`` come from outside the model: each step conditions the plate's index
site on ``m`` indices (``poutine.condition(model, data={"data": idx})``), so Pyro rescales both
data terms by ``N/m``; the weight prior and the guide's entropy are not rescaled. Indices walk
through a fresh permutation per pass (:class:`~pyro_bkd.batches.EpochBatches`), as in
:func:`~pyro_bkd.distill.train_student_kd`, so a KD run and a MAP run with the same seed see
the same batches.

Speed (``benchmarks/bench_svi.py``; 64-256-256-10 MLP, m = 128, one CPU thread): a Pyro SVI
step with Pyro's defaults costs 3.0x (AutoDelta) and 5.8x (AutoNormal) a plain PyTorch Adam
step; :func:`fit_svi` brings this to about 2.2x and 4.4x by

- running Pyro's validation on the first step only (it re-checks every distribution's
  arguments and every sample's support on each step: the largest single cost);
- ``Trace_ELBO.differentiable_loss`` plus one ``torch.optim.Adam`` over all guide parameters,
  instead of ``SVI.step`` with a ``pyro.optim`` wrapper (a second, param-only trace, and one
  optimiser per tensor);
- scoring the guide's point masses without Pyro's element-wise ``Delta.log_prob``
  (:class:`PointMassScores`).

The rest is Pyro's per-step tracing (two traces, replay, about thirty messages through the
handler stack) and, for AutoNormal, the element-wise sampling and scoring of every weight.
``JitTrace_ELBO`` does not apply: ``torch.jit.trace`` refuses ``torch.func.functional_call``
("The stateless API can't be used with Jitted modules").

Parameters: each fit runs in a fresh scope of Pyro's global parameter store
(``pyro.get_param_store().scope()``), so two fits never share parameters and the caller's
store is left as it was. An AutoGuide keeps its trained parameters as its own
``nn.Parameter`` s; :meth:`SVIResult.draws`, :meth:`SVIResult.probs` and :func:`map_estimate`
call it inside a fresh scope too, where it registers exactly those. Call ``result.guide``
yourself inside ``with pyro.get_param_store().scope():`` for the same guarantee: in the
global store, an AutoGuide adopts any parameter already stored under its site names (e.g.
``AutoNormal.locs.fc1.weight`` from another fit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoNormal,
    init_to_value,
)
from pyro.poutine.messenger import Messenger
from tqdm import tqdm

from pyro_bkd import _checks
from pyro_bkd._checks import InputError, InputTypeError
from pyro_bkd._torch import device_of, seeded
from pyro_bkd.batches import EpochBatches
from pyro_bkd.data.record import DistillationData
from pyro_bkd.model import DATA_PLATE, BKDModel
from pyro_bkd.predictive import guide_draws, probs_from_guide

GuideName = Literal["delta", "normal", "lowrank"]
GUIDES: tuple[str, ...] = ("delta", "normal", "lowrank")
METHODS: dict[str, str] = {"delta": "map", "normal": "svi-normal", "lowrank": "svi-lowrank"}
_POSTFIX_UPDATES = 100  # progress-bar refreshes per fit (each one syncs the device)


class MinibatchModel:
    """``model(x, y, teacher_logits)`` restricted to the plate indices ``idx`` when given.

    ``MinibatchModel(model)(x, y, t, idx)`` runs ``poutine.condition(model, data={"data":
    idx})(x, y, t)``: Pyro scales the data terms by ``N / m``. With ``idx=None`` it is the
    full-data model, so a guide built on this wrapper also serves the full data.
    """

    def __init__(self, model: Callable[..., object]) -> None:
        self.model = model

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
    ) -> object:
        if idx is None:
            return self.model(x, y, teacher_logits)
        return poutine.condition(self.model, data={DATA_PLATE: idx})(x, y, teacher_logits)


@dataclass(eq=False)
class SVIResult:
    """Outcome of :func:`fit_svi`.

    Attributes:
        guide: the fitted AutoGuide (built on a :class:`MinibatchModel` around ``model``).
        elbo: per step, the minibatch estimate of ``-ELBO / N`` (loss per training example)
            at the parameters before the step.
        method: ``"map"`` (delta guide), ``"svi-normal"`` or ``"svi-lowrank"``.
        wall_seconds: time of the optimisation loop, guide set-up included.
        model: the BKD model that was fitted.
        data: the training data (on the model's device).
    """

    guide: AutoGuide
    elbo: list[float]
    method: str
    wall_seconds: float
    model: BKDModel = field(repr=False)
    data: DistillationData = field(repr=False)

    @property
    def model_args(self) -> tuple[torch.Tensor | None, ...]:
        """``(x, y, teacher_logits)``: the arguments the guide was fitted with."""
        return (self.data.x, self.data.y, self.data.teacher_logits)

    def draws(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` joint draws of every weight: ``name -> [1, num_samples, *shape]``.

        Randomness comes from torch's global RNG (seed it with ``pyro.set_rng_seed``); a delta
        guide gives ``num_samples`` copies of the MAP.
        """
        _checks.positive_int("num_samples", num_samples)
        with pyro.get_param_store().scope():
            return guide_draws(self.guide, num_samples, *self.model_args)

    def probs(self, x: torch.Tensor, num_samples: int, **options: object) -> torch.Tensor:
        """``[1, num_samples, N, K]`` class probabilities ``softmax(f(x; theta_s))``.

        ``options`` go to :func:`pyro_bkd.predictive.predict_probs` (``draw_chunk``,
        ``input_chunk``, ``temperature``, ``dtype``, ``device``).
        """
        _checks.positive_int("num_samples", num_samples)
        with pyro.get_param_store().scope():
            return probs_from_guide(
                self.model.student, self.guide, x, num_samples, *self.model_args, **options
            )


def fit_svi(
    model: BKDModel,
    data: DistillationData,
    *,
    guide: GuideName = "delta",
    rank: int = 10,
    num_steps: int,
    batch_size: int | None = None,
    lr: float = 1e-3,
    init_scale: float = 0.01,
    clip_norm: float | None = None,
    seed: int = 0,
    progress: bool = True,
    validate_every_step: bool = False,
) -> SVIResult:
    """Fit a variational approximation (or the MAP) of the BKD posterior by SVI.

    Minimises ``-ELBO`` (``Trace_ELBO``, one particle) with ``torch.optim.Adam`` (default
    betas, constant ``lr``) over all guide parameters. With ``guide="delta"`` and the same
    ``lr``, ``batch_size``, ``seed`` and number of epochs (``num_steps = epochs *
    ceil(N / batch_size)``), this follows :func:`~pyro_bkd.distill.train_student_kd` with
    ``alpha = alpha_from_strength(lam, tau)`` and ``weight_decay_for_prior(sigma, N, alpha)``:
    the gradients differ by the factor ``N / (1 - alpha)`` only, to which Adam is invariant
    (up to its ``eps``).

    Args:
        model: the BKD model; the guide starts from the student's current weights
            (``init_to_value(values=model.initial_values())``), so a KD-trained student is a
            warm start. The model is not changed.
        data: ``x``, ``y`` and (optionally) ``teacher_logits``; moved to the model's device.
        guide: ``"delta"``, ``"normal"`` or ``"lowrank"``.
        rank: columns of ``W`` of the low-rank guide (used by ``"lowrank"`` only).
        num_steps: optimisation steps.
        batch_size: ``m``; ``None`` (or ``>= N``) uses the full data every step.
        lr: Adam's learning rate.
        init_scale: initial standard deviation of the Gaussian guides (on every weight).
        clip_norm: clip the global gradient norm to this value before each step (``None``:
            no clipping). The loss is a sum over ``N`` examples, so a norm in the style of
            ``ClippedAdam``'s default 10 would clip nearly every step.
        seed: seeds the batch order (a ``torch.Generator``) and, inside a forked RNG (the
            global RNG state is left untouched), the guide's noise.
        progress: show a tqdm bar over steps.
        validate_every_step: keep Pyro's validation on for every step; by default only the
            first step (guide set-up included) is validated.

    Raises:
        ValueError: unknown ``guide`` (the message lists the valid ones), bad data (see
            :meth:`BKDModel.check_data`), or a hyper-parameter out of range.
    """
    if guide not in GUIDES:
        raise InputError(f"guide must be one of {GUIDES}, got {guide!r}")
    if not isinstance(data, DistillationData):
        raise InputTypeError(f"data must be a DistillationData, got {type(data).__name__}")
    if data.y is None:
        raise InputError("data.y is None: fitting needs labels")
    num_steps = _checks.positive_int("num_steps", num_steps)
    rank = _checks.positive_int("rank", rank)
    lr = _checks.positive_float("lr", lr)
    init_scale = _checks.positive_float("init_scale", init_scale)
    if clip_norm is not None:
        clip_norm = _checks.positive_float("clip_norm", clip_norm)
    num_examples = len(data)
    if batch_size is not None:
        batch_size = _checks.positive_int("batch_size", batch_size)
        if batch_size >= num_examples:
            batch_size = None
    device = device_of(model)
    data = data.to(device)
    model.check_data(data.x, data.y, data.teacher_logits)
    wrapped = MinibatchModel(model)
    args = (data.x, data.y, data.teacher_logits)
    generator = torch.Generator().manual_seed(seed)
    batches = EpochBatches(
        num_examples, batch_size, generators=[generator], device=device, split="even"
    )

    def next_batch() -> torch.Tensor | None:
        idx = batches.next()
        return None if idx is None else idx[0]

    losses = torch.empty(num_steps, dtype=torch.float64, device=device)
    elbo = Trace_ELBO(max_plate_nesting=1)
    start = time.perf_counter()
    with pyro.get_param_store().scope(), seeded(seed, device):
        auto = _build_guide(guide, wrapped, model, init_scale, rank)
        with pyro.validation_enabled(True):  # the first step sets the guide up, validated
            first = elbo.differentiable_loss(wrapped, auto, *args, next_batch())
        optimizer = torch.optim.Adam(auto.parameters(), lr=lr)
        _update(optimizer, first, clip_norm)
        losses[0] = first.detach()
        step_fn = SVIStep(elbo, wrapped, auto, optimizer, clip_norm)
        bar = tqdm(range(1, num_steps), desc=METHODS[guide], disable=not progress)
        every = max(1, num_steps // _POSTFIX_UPDATES)
        with pyro.validation_enabled(validate_every_step):
            for step in bar:
                loss = step_fn(*args, next_batch())
                losses[step] = loss
                if progress and step % every == 0:
                    bar.set_postfix({"loss/N": f"{loss.item() / num_examples:.4g}"})
    wall = time.perf_counter() - start
    return SVIResult(
        guide=auto,
        elbo=(losses / num_examples).tolist(),
        method=METHODS[guide],
        wall_seconds=wall,
        model=model,
        data=data,
    )


class PointMass(dist.Delta):
    """``Delta(v, log_density)`` whose score skips the element-wise check ``x == v``.

    Pyro's ``Delta.log_prob(x)`` computes ``log 1[x == v]`` over every entry and sums it: for
    a neural student that is a few passes over all weights per guide site and step (about 15%
    of a plain training step of an 85k-weight MLP), to add zero. In a guide, a point-mass
    site always takes its own location, so its score is ``log_density``. Use only where that
    holds: through :class:`PointMassScores` on a guide, never as a model's distribution.
    """

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[: x.dim() - self.event_dim]
        return self.log_density.expand(batch_shape)


class PointMassScores(Messenger):
    """Effect handler: the guide's ``Delta`` sites are scored as :class:`PointMass`.

    AutoDelta's sites and the final (constrained) site of every weight of AutoNormal and
    AutoLowRankMultivariateNormal are such point masses; the ELBO and its gradient are
    unchanged (``x == v`` holds and ``Delta.log_prob`` has no gradient through ``v``).
    """

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if type(fn) is dist.Delta and not msg["is_observed"]:
            msg["fn"] = PointMass(fn.v, log_density=fn.log_density, event_dim=fn.event_dim)


class SVIStep:
    """One optimisation step of :func:`fit_svi` (also timed by ``benchmarks/bench_svi.py``).

    ``step(x, y, teacher_logits, idx)`` evaluates ``-ELBO`` on the minibatch ``idx`` by
    ``Trace_ELBO.differentiable_loss``, back-propagates, optionally clips the gradient norm and
    takes one optimiser step; it returns the detached loss (no host-device sync). With
    ``point_mass_scores`` the guide runs under :class:`PointMassScores`.
    """

    def __init__(
        self,
        elbo: Trace_ELBO,
        model: MinibatchModel,
        guide: AutoGuide,
        optimizer: torch.optim.Optimizer,
        clip_norm: float | None = None,
        point_mass_scores: bool = True,
    ) -> None:
        self.elbo = elbo
        self.model = model
        self.guide = PointMassScores()(guide) if point_mass_scores else guide
        self.optimizer = optimizer
        self.clip_norm = clip_norm

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        loss = self.elbo.differentiable_loss(self.model, self.guide, *args)
        _update(self.optimizer, loss, self.clip_norm)
        return loss.detach()


def map_estimate(result: SVIResult) -> dict[str, torch.Tensor]:
    """The MAP weights ``name -> tensor`` of a fit with ``guide="delta"`` (detached copies).

    Raises:
        ValueError: the fit used a Gaussian guide (its mean is not the MAP; use
            ``result.guide.median()`` inside a param-store scope for its centre).
    """
    if not isinstance(result.guide, AutoDelta):
        raise InputError(
            f"map_estimate needs a fit with guide='delta' (method 'map'), got method "
            f"{result.method!r}"
        )
    with pyro.get_param_store().scope(), torch.no_grad():
        values = result.guide.median(*result.model_args)
    return {name: value.detach().clone() for name, value in values.items()}


def _build_guide(
    name: str, wrapped: MinibatchModel, model: BKDModel, init_scale: float, rank: int
) -> AutoGuide:
    init = init_to_value(values=model.initial_values())
    if name == "delta":
        return AutoDelta(wrapped, init_loc_fn=init)
    if name == "normal":
        return AutoNormal(wrapped, init_loc_fn=init, init_scale=init_scale)
    return AutoLowRankMultivariateNormal(
        wrapped, init_loc_fn=init, init_scale=init_scale, rank=rank
    )


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip_norm: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
