"""The inference methods of the ``fit`` and ``compare`` jobs, one function each.

Every method starts from the same inputs (:class:`MethodInputs`: a student factory, the KD
student as warm start, the training data with teacher logits, the test inputs and the BKD
hyper-parameters ``tau``, ``lam``, ``sigma``) and returns the class probabilities at the test
inputs as draws ``[chain, draw, N, K]`` (:class:`MethodOutput`):

- ``hmc``/``sghmc``/``sgld``/``psgld``: :func:`pyro_bkd.sample`, chains dispersed around the
  KD student;
- ``map``/``svi-normal``/``svi-lowrank``: :func:`pyro_bkd.infer.svi.fit_svi` with a delta,
  mean-field normal or low-rank normal guide, started at the KD student, then guide draws;
- ``nuts``: ``pyro.infer.MCMC(NUTS(model))`` on the full data (small students only);
- ``mc-dropout``: a KD student trained with dropout, masks drawn at test time;
- ``ensemble``: ``ensemble_size`` KD students from different seeds.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from torch import nn
from torch.func import stack_module_state

from pyro_bkd._checks import InputError
from pyro_bkd._torch import rng_devices
from pyro_bkd.baselines import add_dropout, ensemble_probs, mc_dropout_probs, train_kd_ensemble
from pyro_bkd.data import DistillationData
from pyro_bkd.distill import KDResult, fit_map, kd_settings_for_map
from pyro_bkd.infer.driver import DEFAULT_BUDGETS, sample
from pyro_bkd.infer.svi import fit_svi
from pyro_bkd.model import BKDModel
from pyro_bkd.pipeline.common import num_weights
from pyro_bkd.pipeline.presets import MethodBudget
from pyro_bkd.predictive import check_finite_probs, predict_probs

SVI_GUIDES: dict[str, str] = {"map": "delta", "svi-normal": "normal", "svi-lowrank": "lowrank"}
#: NUTS recomputes the full-data gradient many times per draw: small students only.
NUTS_MAX_WEIGHTS = 10_000
#: Up to this many weights NUTS adapts a dense mass matrix: a softmax regression's
#: class-shift direction is pinned by the weight prior only, so a diagonal one needs
#: deep trees there.
NUTS_DENSE_MASS_MAX_WEIGHTS = 500

#: Up to this many training examples the Markov chains use full-batch gradients (exact
#: gradients mixed best per second on digits, N = 1,347; ``benchmarks/bench_mixing.py``);
#: above it, minibatches of ``MethodBudget.batch_size`` with SGHMC's noise correction.
FULL_BATCH_MAX = 5000

StudentFactory = Callable[[int], nn.Module]


@dataclass(frozen=True, eq=False)
class MethodInputs:
    """What every method starts from.

    Attributes:
        new_student: ``seed -> nn.Module``, a freshly initialised student.
        warm_student: the KD student, the starting point of the Bayesian methods (copied,
            never modified).
        train: training inputs, labels and teacher logits.
        x_test: the inputs at which class probabilities are drawn.
        temperature, strength, prior_scale: ``tau``, ``lam`` and ``sigma`` of
            :class:`~pyro_bkd.BKDModel` (``prior_scale=None``: flat weight prior).
        distributed, checkpoint: ``sample(distributed=..., checkpoint=...)`` of the Markov
            chain methods.
    """

    new_student: StudentFactory
    warm_student: nn.Module
    train: DistillationData
    x_test: torch.Tensor
    temperature: float
    strength: float
    prior_scale: float | None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    keep_weights: bool = False
    distributed: str | bool | None = False
    checkpoint: str | None = None

    def model(self) -> BKDModel:
        """A :class:`~pyro_bkd.BKDModel` around a copy of the KD student, on ``device``."""
        student = copy.deepcopy(self.warm_student)
        model = BKDModel(student, self.temperature, self.strength, self.prior_scale)
        return model.to(self.device)

    def fit_map(self, student: nn.Module, budget: MethodBudget, *, alone: bool = False) -> KDResult:
        """Train ``student`` in place by :func:`~pyro_bkd.distill.fit_map` on ``train`` (seed
        ``seed``, ``kd_epochs``, ``batch_size`` and ``lr`` of ``budget``): KD as the MAP of
        ``BKDModel(student, tau, lam, sigma)``; ``alone=True``: ``lam = 0`` and no teacher,
        the MAP of the student trained alone."""
        model = BKDModel(
            student, self.temperature, 0.0 if alone else self.strength, self.prior_scale
        )
        train = DistillationData(self.train.x, self.train.y) if alone else self.train
        return fit_map(
            model, train, seed=self.seed, **_kd_training(budget, self.device, self.progress)
        )

    def kd_options(self, budget: MethodBudget) -> dict[str, Any]:
        """:func:`kd_options` for these inputs."""
        return kd_options(
            self.temperature,
            self.strength,
            self.prior_scale,
            len(self.train),
            budget,
            device=self.device,
            progress=self.progress,
        )


def kd_options(
    temperature: float,
    strength: float,
    prior_scale: float | None,
    num_train: int,
    budget: MethodBudget,
    *,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Keyword arguments of :func:`~pyro_bkd.distill.train_student_kd` that make KD the MAP
    search of the BKD model (SPEC §3): ``alpha = lam / (lam + tau^2)`` and the weight decay of
    the ``Normal(0, sigma^2)`` weight prior; ``kd_epochs``, ``batch_size`` and ``lr`` of
    ``budget``."""
    return {
        **kd_settings_for_map(temperature, strength, prior_scale, num_train),
        **_kd_training(budget, device, progress),
    }


def _kd_training(budget: MethodBudget, device: torch.device, progress: bool) -> dict[str, Any]:
    """The training keywords of :func:`~pyro_bkd.distill.train_student_kd` from ``budget``."""
    return {
        "epochs": budget.kd_epochs,
        "batch_size": budget.batch_size,
        "lr": budget.lr,
        "device": device,
        "progress": progress,
    }


@dataclass(eq=False)
class MethodOutput:
    """Draws of one method: ``probs [chain, draw, N, K]``, per-draw ``sample_stats``
    (``None`` when the method has none), weight draws (``name -> [chain, draw, ...]``, only
    when asked and meaningful) and ``config``, the settings worth recording."""

    probs: torch.Tensor
    sample_stats: dict[str, torch.Tensor] | None
    weights: dict[str, torch.Tensor] | None
    config: dict[str, Any]


@dataclass(frozen=True)
class FitDefaults:
    """``pyro-bkd fit``'s defaults of a method: kept draws per chain, warm-up, chains, thin."""

    num_samples: int
    warmup: int
    chains: int
    thin: int


@dataclass(frozen=True)
class MethodSpec:
    """One inference method: how it runs and the facts the jobs and the CLI read about it.

    Attributes:
        name: the method's name on the command line and in the outputs.
        run: ``(inputs, budget) -> MethodOutput``.
        markov_chain: its draws form Markov chains (R-hat and ESS apply).
        trains_own_student: it trains its own KD students (no shared KD warm start).
        default_budget: the defaults of ``pyro-bkd fit``.
        max_weights: the largest student it accepts (``None``: any).
    """

    name: str
    run: Callable[[MethodInputs, MethodBudget], MethodOutput]
    markov_chain: bool
    trains_own_student: bool
    default_budget: FitDefaults
    max_weights: int | None = None

    def check_size(self, weights: int, student: str = "this student") -> None:
        """``InputError`` when a student of ``weights`` weights is too large for the method."""
        if self.max_weights is not None and weights > self.max_weights:
            raise InputError(
                f"{self.name} is for small students (at most {self.max_weights} weights); "
                f"{student} has {weights}: use sgld, psgld or an svi method"
            )


def check_method(method: str, valid: tuple[str, ...] | None = None) -> str:
    """``method`` if it is one of ``valid`` (default :data:`METHODS`); else ``ValueError``
    listing the valid names."""
    valid = METHODS if valid is None else valid
    if method not in valid:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(valid)}")
    return method


def run_method(method: str, inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    """Run one method of :data:`METHODS` (see the module docstring).

    Raises:
        FloatingPointError: the method's class probabilities are NaN or inf at some test input.
    """
    spec = REGISTRY[check_method(method)]
    spec.check_size(num_weights(inputs.warm_student))
    output = spec.run(inputs, budget)
    check_finite_probs(output.probs)
    return output


def _run_chain(method: str, inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    """:func:`pyro_bkd.sample` from the KD student (chains dispersed around it), on the full
    data for HMC and up to :data:`FULL_BATCH_MAX` examples, else on minibatches of
    ``budget.batch_size``."""
    model = inputs.model()
    full = method == "hmc" or len(inputs.train) <= FULL_BATCH_MAX
    result = sample(
        model,
        inputs.train,
        method=method,
        num_samples=budget.num_samples,
        warmup_steps=budget.warmup,
        thin=budget.thin,
        num_chains=budget.chains,
        batch_size=None if full else budget.batch_size,
        step_size=budget.step_size,
        x_test=inputs.x_test,
        keep_weights=inputs.keep_weights,
        warm_start=None,
        seed=inputs.seed,
        device=inputs.device,
        progress=inputs.progress,
        distributed=inputs.distributed,
        checkpoint=inputs.checkpoint,
    )
    assert result.probs is not None
    config = {**result.config, "sampling_seconds": result.wall_seconds}
    if result.convergence is not None:
        config["convergence"] = result.convergence.to_dict()
    if result.backoffs:
        config["backoffs"] = result.backoffs
    return MethodOutput(result.probs, result.sample_stats, result.weights, config)


def _run_svi(method: str, inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    model = inputs.model()
    fit = fit_svi(
        model,
        inputs.train,
        guide=SVI_GUIDES[method],  # type: ignore[arg-type]
        num_steps=budget.svi_steps,
        batch_size=budget.batch_size,
        lr=budget.lr,
        seed=inputs.seed,
        progress=inputs.progress,
    )
    num_samples = 1 if method == "map" else budget.num_samples
    with torch.random.fork_rng(devices=rng_devices(inputs.device)):
        pyro.set_rng_seed(inputs.seed)
        draws = fit.draws(num_samples)
        probs = predict_probs(model.student, draws, inputs.x_test)
    config = {
        "method": method,
        "num_steps": budget.svi_steps,
        "lr": budget.lr,
        "batch_size": budget.batch_size,
        "num_samples": num_samples,
        "final_loss_per_example": fit.elbo[-1],
    }
    return MethodOutput(probs, None, draws if inputs.keep_weights else None, config)


def _run_nuts(inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    """NUTS on the full data, one ``pyro.infer.MCMC`` run per chain (no multiprocessing,
    which hangs under ``fork``), each started at the warm start with its own seed."""
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    weights = num_weights(inputs.warm_student)  # at most NUTS_MAX_WEIGHTS (run_method)
    model = inputs.model()
    data = inputs.train.to(inputs.device)
    start_values = model.initial_values()
    dense_mass = weights <= NUTS_DENSE_MASS_MAX_WEIGHTS
    per_chain: list[dict[str, torch.Tensor]] = []
    divergences = 0
    for chain in range(budget.chains):
        with torch.random.fork_rng(devices=rng_devices(inputs.device)):
            pyro.set_rng_seed(inputs.seed + chain)
            kernel = NUTS(
                model, init_strategy=init_to_value(values=start_values), full_mass=dense_mass
            )
            mcmc = MCMC(
                kernel,
                num_samples=budget.num_samples * (budget.thin or 1),
                warmup_steps=budget.warmup or 200,
                num_chains=1,
                disable_progbar=not inputs.progress,
            )
            mcmc.run(data.x, data.y, data.teacher_logits)
        samples = mcmc.get_samples()
        per_chain.append(
            {name: value[:: budget.thin or 1].detach() for name, value in samples.items()}
        )
        divergences += len(mcmc.diagnostics().get("divergences", {}).get("chain 0", []))
    draws = {name: torch.stack([chain[name] for chain in per_chain]) for name in model.site_names}
    probs = predict_probs(model.student, draws, inputs.x_test)
    config = {
        "method": "nuts",
        "num_samples": budget.num_samples,
        "warmup": budget.warmup,
        "thin": budget.thin,
        "chains": budget.chains,
        "divergences": divergences,
        "dense_mass_matrix": dense_mass,
    }
    return MethodOutput(probs, None, draws, config)


def _run_mc_dropout(inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    """A fresh student (seed ``seed``) with dropout, trained by KD, masks drawn at test time."""
    student = add_dropout(inputs.new_student(inputs.seed), budget.dropout_rate, inputs.train.x[:2])
    inputs.fit_map(student, budget)
    probs = mc_dropout_probs(student, inputs.x_test, budget.num_samples, seed=inputs.seed)
    config = {
        "method": "mc-dropout",
        "dropout_rate": budget.dropout_rate,
        "kd_epochs": budget.kd_epochs,
        "lr": budget.lr,
        "batch_size": budget.batch_size,
        "num_samples": budget.num_samples,
    }
    return MethodOutput(probs, None, None, config)


def _run_ensemble(inputs: MethodInputs, budget: MethodBudget) -> MethodOutput:
    """``ensemble_size`` KD students, member ``m`` from seed ``seed + m``."""
    train = inputs.train
    members = train_kd_ensemble(
        inputs.new_student,
        train.x,
        train.y,
        train.teacher_logits,
        size=budget.ensemble_size,
        seed=inputs.seed,
        **inputs.kd_options(budget),
    )
    probs = ensemble_probs(members, inputs.x_test)
    weights = None
    if inputs.keep_weights:  # one chain whose draws are the members
        stacked, _ = stack_module_state(members)
        weights = {name: value.detach().cpu()[None] for name, value in stacked.items()}
    config = {
        "method": "ensemble",
        "members": budget.ensemble_size,
        "kd_epochs": budget.kd_epochs,
        "lr": budget.lr,
        "batch_size": budget.batch_size,
    }
    return MethodOutput(probs, None, weights, config)


def _registry() -> dict[str, MethodSpec]:
    """Every method, in the order of the comparison's columns."""

    def chain(name: str) -> MethodSpec:
        warmup, thin = DEFAULT_BUDGETS[name]
        run = functools.partial(_run_chain, name)
        return MethodSpec(name, run, True, False, FitDefaults(200, warmup, 4, thin))

    def svi(name: str, num_samples: int) -> MethodSpec:
        run = functools.partial(_run_svi, name)
        return MethodSpec(name, run, False, False, FitDefaults(num_samples, 0, 1, 1))

    specs = [
        *(chain(name) for name in ("hmc", "sghmc", "sgld", "psgld")),
        svi("map", 1),
        MethodSpec("nuts", _run_nuts, True, False, FitDefaults(200, 200, 2, 1), NUTS_MAX_WEIGHTS),
        svi("svi-normal", 200),
        svi("svi-lowrank", 200),
        MethodSpec("mc-dropout", _run_mc_dropout, False, True, FitDefaults(200, 0, 1, 1)),
        MethodSpec("ensemble", _run_ensemble, False, True, FitDefaults(5, 0, 1, 1)),
    ]
    return {spec.name: spec for spec in specs}


#: The inference methods by name: :class:`MethodSpec` s read by ``fit``'s defaults,
#: ``compare``'s columns, the size guard and the CLI help.
REGISTRY: dict[str, MethodSpec] = _registry()
#: The method names, in the registry's order.
METHODS: tuple[str, ...] = tuple(REGISTRY)
