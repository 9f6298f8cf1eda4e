"""The ``fit`` job: BKD with the user's own teacher logits, read from an ``.npz`` file.

:func:`load_fit_data` reads and checks the file, :func:`run_fit` builds the student
(:func:`~pyro_bkd.pipeline.common.build_student`), warm-starts it by KD, runs one inference
method of :data:`METHODS` and writes ``posterior.nc`` and ``metrics.json``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_bkd import __version__, _checks, export, metrics, plots
from pyro_bkd._checks import InputError
from pyro_bkd.data import DistillationData
from pyro_bkd.data.loaders import read_npz
from pyro_bkd.infer.driver import DEFAULT_METHOD
from pyro_bkd.infer.driver import METHODS as SAMPLERS
from pyro_bkd.infer.parallel import Partition, local_device
from pyro_bkd.kd import alpha_from_strength, strength_from_alpha
from pyro_bkd.pipeline.common import (
    LIMITS,
    MAX_CHAIN_ITERATIONS,
    Log,
    build_student,
    check_buffer,
    check_count,
    check_number,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
    point_metrics,
    point_probs,
    posterior_figures,
    quiet,
    resolve_device,
    save_posterior,
    seconds,
    write_figures,
    write_json,
)
from pyro_bkd.pipeline.methods import (
    FULL_BATCH_MAX,
    METHODS,
    REGISTRY,
    SVI_GUIDES,
    MethodInputs,
    MethodOutput,
    check_method,
    run_method,
)
from pyro_bkd.pipeline.options import OUT_HELP, SEED_HELP, integer, number, option
from pyro_bkd.pipeline.options import prior_scale as prior_scale_or_none
from pyro_bkd.pipeline.presets import KD_ALPHA, PRIOR_SCALE, TEMPERATURE, MethodBudget
from pyro_bkd.report import write_report

NPZ_REQUIRED: tuple[str, ...] = ("x_train", "y_train", "teacher_logits_train", "x_test")
NPZ_OPTIONAL: tuple[str, ...] = ("y_test", "teacher_logits_test", "p_test")
#: ``--distributed`` -> ``sample(distributed=...)``: ``auto`` splits the chains when torchrun
#: launched several processes (:class:`~pyro_bkd.infer.parallel.Partition`).
DISTRIBUTED_MODES: dict[str, str | bool | None] = {
    "auto": None,
    "off": False,
    "chains": "chains",
    "data": "data",
}
#: Most members of ``--method ensemble`` (each one a KD student trained from scratch).
MAX_ENSEMBLE = 100
#: Copies of the weights a chain keeps while sampling (position, momentum, gradients, ...).
SAMPLER_COPIES = 8
#: Rows of ``p_test`` must sum to 1 within this tolerance.
PROB_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class FitData:
    """The arrays of a ``fit`` input file, checked, as tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    teacher_logits_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor | None = None
    teacher_logits_test: torch.Tensor | None = None
    p_test: torch.Tensor | None = None
    ignored: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return int(self.teacher_logits_train.shape[1])


def load_fit_data(path: str | os.PathLike[str]) -> FitData:
    """Read and check a ``fit`` input file (``.npz``).

    Required arrays: ``x_train [N, ...]``, ``y_train [N]`` (integer labels in ``[0, K)``),
    ``teacher_logits_train [N, K]`` (finite, ``K >= 2``), ``x_test [M, ...]`` (the feature
    shape of ``x_train``). Optional: ``y_test [M]``, ``teacher_logits_test [M, K]``,
    ``p_test [M, K]`` (true class probabilities: non-negative rows summing to 1). Other arrays
    are ignored (their names are in :attr:`FitData.ignored`).
    """
    file = Path(path)
    if file.exists() and not file.is_file():
        raise InputError(f"data file {os.fspath(path)!r} is not a file")
    if not file.is_file():
        raise FileNotFoundError(f"data file not found: {os.fspath(path)}")
    arrays = read_npz(file)
    missing = [name for name in NPZ_REQUIRED if name not in arrays]
    if missing:
        raise InputError(
            f"{os.fspath(path)} lacks required array(s) {', '.join(missing)}; it holds "
            f"{', '.join(sorted(arrays)) or 'no arrays'} (required: {', '.join(NPZ_REQUIRED)}; "
            f"optional: {', '.join(NPZ_OPTIONAL)})"
        )
    x_train = _features("x_train", arrays["x_train"])
    n = x_train.shape[0]
    logits_train = _logits("teacher_logits_train", arrays["teacher_logits_train"], n)
    k = logits_train.shape[1]
    y_train = _labels("y_train", arrays["y_train"], n, k)
    x_test = _features("x_test", arrays["x_test"])
    if x_test.shape[1:] != x_train.shape[1:]:
        raise InputError(
            f"x_test has feature shape {tuple(x_test.shape[1:])} but x_train has "
            f"{tuple(x_train.shape[1:])}"
        )
    m = x_test.shape[0]
    y_test = _labels("y_test", arrays["y_test"], m, k) if "y_test" in arrays else None
    logits_test = None
    if "teacher_logits_test" in arrays:
        logits_test = _logits("teacher_logits_test", arrays["teacher_logits_test"], m, k)
    p_test = _class_probs("p_test", arrays["p_test"], m, k) if "p_test" in arrays else None
    ignored = tuple(sorted(set(arrays) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL)))
    return FitData(x_train, y_train, logits_train, x_test, y_test, logits_test, p_test, ignored)


def _numeric(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InputError(f"{name} must hold numbers, got dtype {array.dtype}")
    return array


def _features(name: str, array: np.ndarray) -> torch.Tensor:
    array = _numeric(name, array)
    if array.ndim < 2 or array.shape[0] == 0 or 0 in array.shape:
        raise InputError(
            f"{name} must have shape [N, features...] with N >= 1 (e.g. [N, D] or "
            f"[N, C, H, W]), got {array.shape}"
        )
    return _float32(name, array)


def _logits(name: str, array: np.ndarray, n: int, k: int | None = None) -> torch.Tensor:
    array = _numeric(name, array)
    expected = f"({n}, {'K' if k is None else k})"
    if array.ndim != 2 or array.shape[0] != n or (k is not None and array.shape[1] != k):
        raise InputError(f"{name} must have shape {expected}, got {array.shape}")
    if array.shape[1] < 2:
        raise InputError(f"{name} must have K >= 2 classes, got shape {array.shape}")
    return _float32(name, array)


def _float32(name: str, array: np.ndarray) -> torch.Tensor:
    """``array`` as a float32 tensor, after checking its values are finite in float32."""
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    _checks.finite(name, values)
    return values.float()


def _labels(name: str, array: np.ndarray, n: int, k: int) -> torch.Tensor:
    array = _numeric(name, array)
    if array.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) to match its inputs, got {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and (
        not np.isfinite(array).all() or (array != np.round(array)).any()
    ):
        raise InputError(f"{name} must hold integer class labels, got non-integer values")
    if array.size and (array.min() < 0 or array.max() >= k):
        raise InputError(
            f"{name} must hold labels in [0, {k}) (K = {k} from the teacher logits), "
            f"got values in [{array.min():g}, {array.max():g}]"
        )
    return torch.from_numpy(array.astype(np.int64))


def _class_probs(name: str, array: np.ndarray, m: int, k: int) -> torch.Tensor:
    array = _numeric(name, array)
    if array.shape != (m, k):
        raise InputError(f"{name} must have shape ({m}, {k}), got {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise InputError(f"{name} must hold finite probabilities >= 0")
    worst = float(np.abs(array.sum(axis=1, dtype=np.float64) - 1).max())
    if worst > PROB_SUM_TOLERANCE:
        raise InputError(f"{name} rows must sum to 1; worst |sum - 1| = {worst:.3g}")
    return torch.from_numpy(array.astype(np.float64))


STUDENT_HELP = (
    "student network: linear, mlp, mlp:H1,H2,... (hidden widths), small_cnn:W (width), or a "
    "models name (lenet, small_cnn, resnet8, resnet20, ..., wrn_16_2, vgg8; convolutional "
    "students need x of shape [N, C, H, W]); input size from x_train"
)


def defaults_help(name: str, chains_only: bool = False) -> str:
    """``fit``'s default of the budget field ``name`` per method, from the method registry:
    methods that share a value are grouped, e.g. ``hmc/sgld: 4; map: 1``."""
    groups: dict[int, list[str]] = {}
    for method, spec in REGISTRY.items():
        if spec.markov_chain or not chains_only:
            groups.setdefault(getattr(spec.default_budget, name), []).append(method)
    return "; ".join(f"{'/'.join(names)}: {value}" for value, names in groups.items())


@dataclass(frozen=True)
class FitOptions:
    """Options of :func:`run_fit` (the ``fit`` subcommand). ``None`` means the method's default.

    Each field is also a flag of ``pyro-bkd fit`` (:mod:`pyro_bkd.pipeline.options`); the
    values are checked at construction (:class:`~pyro_bkd.InputError` naming the flag).

    Method defaults (``MethodSpec.default_budget`` of :data:`~pyro_bkd.pipeline.methods.REGISTRY`):
    ``sghmc`` (the default method), ``hmc``, ``sgld``, ``psgld``: 200 draws
    and 4 chains with the warm-up and thinning of :data:`pyro_bkd.infer.driver.DEFAULT_BUDGETS`;
    ``nuts``: 200 draws, 200 warm-up steps, thin 1, 2 chains; ``svi-*``: 200 guide draws;
    ``map``: 1 draw; ``mc-dropout``: 200 dropout masks (rate ``dropout``); ``ensemble``: 5
    members (``num_samples`` is the ensemble size). ``mc-dropout`` and ``ensemble`` train
    their own KD students for ``warm_epochs`` epochs each.

    The teacher's weight is set by ``strength`` (``lam >= 0`` of the teacher-informed prior) or
    by ``alpha`` (KD's weight in ``[0, 1)``, mapped to ``lam = alpha tau^2 / (1 - alpha)``,
    SPEC §3), not both; with neither, ``alpha = KD_ALPHA = 0.9`` (``lam = 144`` at
    ``tau = 4``, as in ``demo``). :meth:`resolved` turns ``alpha`` into ``strength``.
    """

    data: str = option(metavar="FILE.npz", help="input arrays")
    out: str = option(help=OUT_HELP)
    student: str = option("linear", help=STUDENT_HELP + " (linear)")
    temperature: float = option(TEMPERATURE, type=number, help="tau > 0 of the TIP (4)")
    alpha: float | None = option(
        None,
        type=number,
        group="teacher weight",
        help=(
            "KD's weight alpha in [0, 1) of the teacher term, mapped to the teacher strength "
            "lam = alpha tau^2 / (1 - alpha) (docs/spec.md section 3); default 0.9, as in demo "
            "and the README (lam = 144 at tau 4)"
        ),
    )
    strength: float | None = option(
        None,
        type=number,
        group="teacher weight",
        help="teacher strength lam >= 0 of the Dirichlet prior, instead of --alpha",
    )
    prior_scale: float | None = option(
        PRIOR_SCALE,
        type=prior_scale_or_none,
        help="sigma > 0 of the Normal(0, sigma^2) weight prior, or 'none' for flat (1)",
    )
    method: str = option(
        DEFAULT_METHOD,
        choices=METHODS,
        help=f"inference method ({DEFAULT_METHOD}; the Markov chains use full-batch gradients "
        f"up to {FULL_BATCH_MAX} training examples and minibatches of --batch-size above; hmc "
        "is always full-batch and Metropolis-corrected)",
    )
    num_samples: int | None = option(
        None,
        type=integer,
        help=f"draws per chain; ensemble: members ({defaults_help('num_samples')})",
    )
    warmup: int | None = option(
        None,
        type=integer,
        help=f"warm-up iterations per chain ({defaults_help('warmup', chains_only=True)})",
    )
    chains: int | None = option(None, type=integer, help=f"chains ({defaults_help('chains')})")
    thin: int | None = option(
        None,
        type=integer,
        help=f"keep every thin-th iteration ({defaults_help('thin', chains_only=True)})",
    )
    batch_size: int = option(128, type=integer, help="minibatch size m (128)")
    step_size: float | None = option(
        None,
        type=number,
        help="step eps on the summed potential (default: pyro_bkd.sample's, from the curvature)",
    )
    lr: float = option(3e-3, type=number, help="Adam learning rate of KD/SVI (0.003)")
    warm_epochs: int = option(
        30,
        type=integer,
        help=(
            "epochs of KD training before inference, 0 starts from the random init; "
            "mc-dropout/ensemble: epochs of each of their KD students (30)"
        ),
    )
    dropout: float = option(
        0.2,
        type=number,
        help="mc-dropout: dropout probability p in (0, 1) before hidden dense layers (0.2)",
    )
    steps: int = option(2000, type=integer, help="optimisation steps of map/svi (2000)")
    seed: int = option(0, type=integer, help=SEED_HELP)
    checkpoint: str | None = option(
        None,
        metavar="FILE",
        help=(
            "Markov chains: save the state to FILE every 50 draws and resume from it; a "
            "finished run's FILE with a larger --num-samples is extended"
        ),
    )
    distributed: str = option(
        "auto",
        choices=tuple(DISTRIBUTED_MODES),
        help=(
            "under torchrun: split the chains over the processes (chains; auto does so when "
            "more than one was launched) or the training data (data); see README 'Scaling out'"
        ),
    )
    keep_weights: bool = option(
        False,
        action="store_true",
        help="store the weight draws in posterior.nc (large for big students)",
    )
    report: bool = option(
        False,
        action="store_true",
        help="also write report.html, report.md and the figures they show (plots/*.png)",
    )
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Raise :class:`~pyro_bkd.InputError` naming the first option out of its range
        (:data:`~pyro_bkd.pipeline.common.LIMITS`)."""
        check_method(self.method)
        check_out_dir(self.out)
        if self.checkpoint is not None and self.method not in SAMPLERS:
            raise InputError(
                f"--checkpoint saves Markov chains; --method {self.method} has none "
                f"(use one of {', '.join(SAMPLERS)})"
            )
        if self.distributed not in DISTRIBUTED_MODES:
            raise InputError(
                f"--distributed must be one of {', '.join(DISTRIBUTED_MODES)}, "
                f"got {self.distributed!r}"
            )
        check_number("--temperature", self.temperature)
        fit_strength(self)
        if self.prior_scale is not None:
            check_number("--prior-scale", self.prior_scale)
        if self.step_size is not None:
            check_number("--step-size", self.step_size)
        check_number("--lr", self.lr)
        self._check_counts()

    def _check_counts(self) -> None:
        for flag, value in (
            ("--num-samples", self.num_samples),
            ("--chains", self.chains),
            ("--thin", self.thin),
            ("--warmup", self.warmup),
        ):
            if value is not None:
                check_count(flag, value)
        check_count("--batch-size", self.batch_size)
        check_count("--warm-epochs", self.warm_epochs)
        if REGISTRY[self.method].trains_own_student and self.warm_epochs < 1:
            raise InputError(
                f"--warm-epochs must be >= 1 with --method {self.method}: it is the number of "
                "KD epochs of each of its students"
            )
        if self.method == "ensemble" and (self.num_samples or 0) > MAX_ENSEMBLE:
            raise InputError(
                f"--num-samples is the number of members with --method ensemble: at most "
                f"{MAX_ENSEMBLE}, got {self.num_samples}"
            )
        dropout = self.dropout
        if isinstance(dropout, bool) or not (isinstance(dropout, float | int) and 0 < dropout < 1):
            raise InputError(f"--dropout must be a probability in (0, 1), got {dropout!r}")
        check_count("--steps", self.steps)
        check_count("--seed", self.seed)

    def resolved(self) -> FitOptions:
        """A copy with method defaults filled in (checked again, as every instance is)."""
        spec = REGISTRY[self.method]
        defaults = astuple(spec.default_budget)
        given = (self.num_samples, self.warmup, self.chains, self.thin)
        num_samples, warmup, chains, thin = (
            d if g is None else g for g, d in zip(given, defaults, strict=True)
        )
        if self.method == "map":
            num_samples, chains = 1, 1
        if self.method in SVI_GUIDES or spec.trains_own_student:
            chains = 1
        return replace(
            self,
            strength=fit_strength(self),
            alpha=None,
            num_samples=num_samples,
            warmup=warmup,
            chains=chains,
            thin=thin,
        )


def fit_strength(options: FitOptions) -> float:
    """The teacher strength ``lam`` of a fit: ``options.strength`` when given, else
    ``lam = alpha c / (1 - alpha)`` with ``c = tau^2`` (:func:`~pyro_bkd.kd.strength_from_alpha`)
    from ``options.alpha`` or, when neither is given, from
    :data:`~pyro_bkd.pipeline.presets.KD_ALPHA`.

    Raises :class:`~pyro_bkd.InputError` naming ``--alpha``/``--strength`` when both are given,
    ``alpha`` is outside ``[0, 1)``, or its ``lam`` exceeds the largest ``--strength``.
    """
    if options.strength is not None and options.alpha is not None:
        raise InputError(
            "--alpha and --strength both set the teacher's weight "
            "(lam = alpha tau^2 / (1 - alpha)): give one of them, got both"
        )
    if options.strength is not None:
        return check_number("--strength", options.strength)
    alpha = KD_ALPHA if options.alpha is None else options.alpha
    value = _checks.float_in("--alpha", alpha, -math.inf)  # a finite number
    if not 0 <= value < 1:
        raise InputError(
            f"--alpha must be in [0, 1) (KD's weight; alpha = 1 drops the labels), got {alpha!r}"
        )
    temperature = check_number("--temperature", options.temperature)
    strength = strength_from_alpha(value, temperature)
    high = LIMITS["--strength"][1]
    if strength > high:
        raise InputError(
            f"--alpha {alpha!r} at --temperature {temperature:g} gives lam = alpha tau^2 / "
            f"(1 - alpha) = {strength:.4g}, above the largest teacher strength {high:g}: "
            "lower --alpha"
        )
    return strength


def check_fit_budget(options: FitOptions, data: FitData, weights: int) -> None:
    """Refuse a resolved budget whose time or draw buffers would not be finite in practice."""
    chains, draws, thin = options.chains or 1, options.num_samples or 1, options.thin or 1
    iterations = (options.warmup or 0) + draws * thin
    if REGISTRY[options.method].markov_chain and iterations > MAX_CHAIN_ITERATIONS:
        raise InputError(
            f"--warmup + --num-samples x --thin = {iterations} iterations per chain; at most "
            f"{MAX_CHAIN_ITERATIONS}"
        )
    m, k = data.x_test.shape[0], data.num_classes
    check_buffer(
        f"--num-samples {draws} x --chains {chains} x {m} test inputs x {k} classes",
        4 * chains * draws * m * k,
        "lower --num-samples or --chains, or use fewer test inputs",
    )
    kept = draws if options.keep_weights else 0
    check_buffer(
        f"--chains {chains} chains of {weights} weights ({kept} draws kept)",
        4 * chains * weights * (SAMPLER_COPIES + kept),
        "lower --chains or --num-samples, use a smaller --student, or drop --keep-weights",
    )


def run_fit(options: FitOptions, log: Log = quiet) -> dict[str, Any]:
    """The ``fit`` subcommand: BKD with the user's teacher logits; returns the metrics.

    The student starts from a seeded random initialisation and is first trained by KD for
    ``warm_epochs`` epochs (Adam, ``lr``; KD weight ``alpha = lam / (lam + tau^2)`` and the
    weight decay of the weight prior, so this is a MAP search, SPEC §3); that student is the
    warm start of every method (``warm_epochs = 0``: the random initialisation). Then:
    ``hmc``/``sghmc``/``sgld``/``psgld`` run :func:`pyro_bkd.sample`; ``map``/``svi-*`` run
    :func:`pyro_bkd.infer.svi.fit_svi` for ``steps`` steps and draw from the guide; ``nuts``
    runs ``pyro.infer.MCMC(NUTS(model))`` chain after chain on the full data. Writes
    ``out/posterior.nc`` and ``out/metrics.json`` (with ``report=True`` also ``plots/*.png``,
    listed in ``metrics.json``, and ``report.html``/``report.md`` showing them), all
    staged and moved into place with ``out/manifest.json`` once complete. Every option and
    input is checked first (:class:`FitOptions`, :func:`load_fit_data`,
    :func:`check_fit_budget`); the minibatch size is ``min(batch_size, N)``. Split over
    processes (``distributed``), every rank samples and rank 0 alone returns the metrics and
    writes; the other ranks return ``{}``.
    """
    opts = options.resolved()
    partition = Partition.resolve(DISTRIBUTED_MODES[opts.distributed])
    if partition.mode != "single" and opts.method not in SAMPLERS:
        raise InputError(
            f"--distributed {partition.mode} splits Markov chains; --method {opts.method} "
            f"is not one: use one of {', '.join(SAMPLERS)}"
        )
    data = load_fit_data(opts.data)
    auto = opts.device in (None, "auto")
    dev = local_device() if partition.mode != "single" and auto else resolve_device(opts.device)
    start = time.perf_counter()
    if data.ignored:
        log(f"ignoring arrays not used by fit: {', '.join(data.ignored)}")

    def new_student(seed: int) -> torch.nn.Module:
        return build_student(opts.student, data.x_train, data.num_classes, seed=seed)

    student = new_student(opts.seed)
    weights = num_weights(student)
    REGISTRY[opts.method].check_size(weights, f"student {opts.student!r}")  # before KD
    check_fit_budget(opts, data, weights)
    opts = replace(opts, batch_size=min(opts.batch_size, int(data.x_train.shape[0])))
    fitted = _fit_inference(opts, data, student, new_student, dev, partition, log)
    if not partition.is_main:  # rank 0 alone summarises and writes the gathered result
        return {}
    values, idata = _fit_values(opts, data, fitted, dev, start, log)
    run = {"command": "pyro-bkd fit", "seed": opts.seed, "method": opts.method}
    with output_folder(opts.out, run) as out_dir:  # moved into place once complete
        _fit_write(out_dir, opts, data, values, idata, fitted.output.probs)
    return values


@dataclass(frozen=True)
class _Fitted:
    """What inference produced: the method's output, the student's size, its time."""

    output: MethodOutput
    weights: int
    inference_seconds: float


def _fit_inference(
    opts: FitOptions,
    data: FitData,
    student: torch.nn.Module,
    new_student: Callable[[int], torch.nn.Module],
    dev: torch.device,
    partition: Partition,
    log: Log,
) -> _Fitted:
    """KD warm start (broadcast from rank 0 when split over processes), then the method."""
    weights = num_weights(student)
    train = DistillationData(data.x_train, data.y_train, data.teacher_logits_train)
    alpha = alpha_from_strength(opts.strength, opts.temperature)
    log(
        f"student {opts.student} ({weights} weights), {len(train)} training examples, "
        f"K = {data.num_classes}, tau = {opts.temperature:g}, lam = {opts.strength:g} "
        f"(KD alpha = {alpha:.4g}), prior scale = {opts.prior_scale}"
    )
    budget = MethodBudget(
        num_samples=opts.num_samples,
        warmup=opts.warmup,
        thin=opts.thin,
        chains=opts.chains,
        batch_size=opts.batch_size,
        step_size=opts.step_size,
        svi_steps=opts.steps,
        lr=opts.lr,
        kd_epochs=opts.warm_epochs,
        dropout_rate=opts.dropout,
        ensemble_size=opts.num_samples,
    )
    inputs = MethodInputs(
        new_student=new_student,
        warm_student=student,
        train=train,
        x_test=data.x_test,
        temperature=opts.temperature,
        strength=opts.strength,
        prior_scale=opts.prior_scale,
        seed=opts.seed,
        device=dev,
        progress=opts.progress and partition.is_main,
        keep_weights=opts.keep_weights,
        distributed=False if partition.mode == "single" else partition.mode,
        checkpoint=opts.checkpoint,
    )
    if opts.warm_epochs > 0 and not REGISTRY[opts.method].trains_own_student:
        log(f"warm start: KD training for {opts.warm_epochs} epochs")
        inputs.fit_map(student, budget)
        partition.broadcast_module(student)
    log(f"inference: {opts.method}")
    stage = time.perf_counter()
    output = run_method(opts.method, inputs, budget)
    return _Fitted(output, weights, seconds(stage))


def _fit_values(
    opts: FitOptions,
    data: FitData,
    fitted: _Fitted,
    dev: torch.device,
    start: float,
    log: Log,
) -> tuple[dict[str, Any], Any]:
    """The metrics (``metrics.json``) and the InferenceData (``posterior.nc``) of a fit."""
    output, weights, inference_seconds = fitted.output, fitted.weights, fitted.inference_seconds
    probs, stats, draws, config = output.probs, output.sample_stats, output.weights, output.config
    alpha = alpha_from_strength(opts.strength, opts.temperature)
    teacher_probs = None
    if data.teacher_logits_test is not None:
        teacher_probs = data.teacher_logits_test.softmax(-1)
    attrs = {
        **config,
        "command": "pyro-bkd fit",
        "data_file": os.path.abspath(opts.data),
        "student": opts.student,
        "method": opts.method,
        "tau": opts.temperature,
        "strength": opts.strength,
        "kd_alpha": alpha,
        "prior_scale": opts.prior_scale,
        "warm_epochs": opts.warm_epochs,
        "seed": opts.seed,
        "inference_seconds": inference_seconds,
    }
    idata = export.to_inference_data(
        probs,
        y_test=data.y_test,
        teacher_probs=teacher_probs,
        p_true=data.p_test,
        sample_stats=stats,
        posterior=draws if opts.keep_weights else None,
        attrs=attrs,
    )
    summary = metrics.summarize(probs, data.y_test, data.p_test)
    values: dict[str, Any] = {
        "command": "fit",
        "method": opts.method,
        **summary,
        "draws": int(probs.shape[0] * probs.shape[1]),
        "inference_seconds": inference_seconds,
    }
    if "divergences" in config:
        values["divergences"] = config["divergences"]
    if "convergence" in config:
        values["convergence"] = config["convergence"]
        log(f"verdict: {config['convergence']['message']}")
    if data.teacher_logits_test is not None:
        values["teacher"] = point_metrics(data.teacher_logits_test, data.y_test)
    values["settings"] = _fit_settings(opts, data, weights, config, dev)
    values["wall_seconds"] = seconds(start)
    return clean(values), idata


def _fit_settings(
    opts: FitOptions, data: FitData, weights: int, config: dict[str, Any], dev: torch.device
) -> dict[str, Any]:
    """The ``settings`` of a fit's ``metrics.json``."""
    return {
        "data": os.path.abspath(opts.data),
        "student": opts.student,
        "weights": weights,
        "num_train": int(data.x_train.shape[0]),
        "num_test": int(data.x_test.shape[0]),
        "num_classes": data.num_classes,
        "temperature": opts.temperature,
        "strength": opts.strength,
        "kd_alpha": alpha_from_strength(opts.strength, opts.temperature),
        "prior_scale": opts.prior_scale,
        "num_samples": opts.num_samples,
        "warmup": opts.warmup,
        "chains": opts.chains,
        "thin": opts.thin,
        "batch_size": opts.batch_size,
        "step_size": config.get("step_size", opts.step_size),
        "lr": opts.lr,
        "warm_epochs": opts.warm_epochs,
        "steps": opts.steps if opts.method in SVI_GUIDES else None,
        "seed": opts.seed,
        "device": str(dev),
        "version": __version__,
    }


def _fit_write(
    out_dir: Path,
    opts: FitOptions,
    data: FitData,
    values: dict[str, Any],
    idata: Any,
    probs: torch.Tensor,
) -> None:
    """``posterior.nc``, ``metrics.json`` and with ``--report`` the plots and the report."""
    if opts.report:
        values["plots"] = write_figures(out_dir, _fit_figures(opts.method, probs, data))
    save_posterior(idata, out_dir / "posterior.nc")
    write_json(out_dir / "metrics.json", values)
    if opts.report:
        write_report(out_dir, name=Path(opts.out).absolute().name)


def _fit_figures(method: str, probs: torch.Tensor, data: FitData) -> dict[str, Any]:
    """The figures of ``fit --report``: :func:`~pyro_bkd.pipeline.common.posterior_figures` of
    the method's draws and, with test labels, the accuracy of the most certain inputs ranked
    by mean deviance (the teacher's ``2 x entropy`` beside it when its test logits are given)."""
    figures = posterior_figures(probs, method, y=data.y_test, p_true=data.p_test)
    y_test = data.y_test
    if y_test is not None:
        curves = {f"{method} (mean deviance)": probs}
        if data.teacher_logits_test is not None:
            curves["teacher (2 x entropy)"] = point_probs(data.teacher_logits_test)
        figures[f"ranking_{method}"] = lambda: plots.ranking_curves(curves, y_test)
    return figures
