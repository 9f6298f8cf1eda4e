"""The ``compare`` job: every inference method on one data set, one teacher, one table.

:func:`run_compare` loads a data set, trains the teacher once (or loads a ``teacher.pt``),
trains the student alone and by KD, then runs each method of :data:`COMPARE_METHODS` from the
same KD warm start with a fixed budget (:data:`PRESETS`), and writes

- ``DIR/<method>/posterior.nc``: the draws ``q^(s)(x_test)`` ``[chain, draw, N, K]`` in the
  ``predictions`` group, the test labels and teacher probabilities in
  ``predictions_constant_data`` (:mod:`pyro_bkd.export`); no training-set
  ``log_likelihood`` (the methods keep no weights), so rank them by the ELPD columns below;
- ``DIR/comparison.csv`` and ``DIR/comparison.md``: one row per method;
- ``DIR/metrics.json``: the rows and every setting; ``DIR/teacher.pt``: the teacher.

Columns: accuracy, NLL, Brier, ECE and MD-AUROC of the posterior-mean prediction
``qbar(x) = mean_s q^(s)(x)``; the mean width of the 95% equal-tailed intervals; coverage of
``p*`` (synthetic data only, ``None`` here); the coverage of the credible label sets at 90, 95
and 99% with its binomial standard error and the mean set size
(:func:`pyro_bkd.metrics.label_set_coverage`; for the single-draw rows, teacher, student
and KD, the smallest set of top classes whose softmax probability reaches the level); R-hat,
bulk ESS and the convergence verdict of the Markov chains (``hmc``, ``sghmc``, ``sgld``,
``psgld``, ``nuts``; the other methods' draws are independent); the test-set ELPD
``sum_n log qbar_{y_n}(x_n)`` with its standard error ``sqrt(N var_n(e_n))`` and, against the
best method, the difference and its paired standard error ``sqrt(N var_n(e_n - e_n^best))``
(as ``az.compare`` does, but on held-out labels, so no PSIS approximation is needed); wall
time and draws per second.

A method that fails (a non-finite potential, a student too big for NUTS, out of memory...)
is marked ``failed`` with the reason; the other methods' results are kept.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyro_bkd import __version__, _atomic, export, metrics
from pyro_bkd._checks import InputError
from pyro_bkd._torch import network_logits
from pyro_bkd.data import Dataset, DistillationData, few_shot_indices, load_dataset, standardize
from pyro_bkd.infer.verdict import diagnose
from pyro_bkd.kd import strength_from_alpha
from pyro_bkd.pipeline.common import (
    Log,
    build_student,
    check_count,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
    point_probs,
    quiet,
    resolve_device,
    save_posterior,
    seconds,
    write_json,
)
from pyro_bkd.pipeline.methods import (
    METHODS,
    REGISTRY,
    MethodBudget,
    MethodInputs,
    MethodOutput,
    check_method,
    run_method,
)
from pyro_bkd.pipeline.options import DATA_ROOT_HELP, OUT_HELP, SEED_HELP, integer, option
from pyro_bkd.pipeline.teacher import (
    TEACHER_DATASETS,
    read_teacher_checkpoint,
    save_teacher,
    teacher_from_checkpoint,
)
from pyro_bkd.report import comparison_csv, comparison_markdown
from pyro_bkd.teachers import teacher_logits, train_teacher

#: Rows that are not inference methods: the student trained alone and the KD student.
POINT_METHODS: tuple[str, ...] = ("student", "kd")
COMPARE_METHODS: tuple[str, ...] = (*POINT_METHODS, *METHODS)
DEFAULT_METHODS: tuple[str, ...] = (
    "student",
    "kd",
    "map",
    "hmc",
    "sghmc",
    "sgld",
    "psgld",
    "svi-normal",
    "svi-lowrank",
    "mc-dropout",
    "ensemble",
)
COMPARE_DATASETS: tuple[str, ...] = TEACHER_DATASETS
#: Row labels of the BKD paper's comparison.
PAPER_NAMES: dict[str, str] = {
    "teacher": "teacher",
    "student": "student alone",
    "kd": "KD",
    "svi-normal": "KD + BNN (SVI mean-field)",
    "mc-dropout": "KD + MC dropout",
    "ensemble": "KD deep ensemble",
    "hmc": "BKD (HMC)",
    "sghmc": "BKD (SGHMC)",
    "sgld": "BKD (SGLD)",
    "psgld": "BKD (pSGLD)",
}
COLUMNS: tuple[str, ...] = (
    "method",
    "status",
    "accuracy",
    "nll",
    "brier",
    "ece",
    "md_auroc",
    "mean_interval_width",
    "coverage",
    *metrics.label_set_keys(),
    "max_rhat",
    "min_ess_bulk",
    "verdict",
    "elpd_test",
    "elpd_se",
    "elpd_diff",
    "elpd_dse",
    "draws",
    "wall_seconds",
    "draws_per_second",
    "reason",
)
TEMPERATURE = 4.0
KD_ALPHA = 0.9
PRIOR_SCALE = 1.0


@dataclass(frozen=True)
class Preset:
    """Architectures, sizes and budgets of one data set (CPU-sized; see :data:`PRESETS`).

    ``num_train``/``num_test``: a stratified subset of the train split / the first test
    images (``None``: all). ``budget.kd_epochs`` is the KD (and student-alone) training.
    """

    teacher: str
    student: str
    teacher_epochs: int
    teacher_lr: float
    budget: MethodBudget
    num_train: int | None = None
    num_test: int | None = None
    standardize: bool = False


PRESETS: dict[str, Preset] = {
    "digits": Preset(
        teacher="mlp:256,256",
        student="mlp:32",
        teacher_epochs=40,
        teacher_lr=0.05,
        budget=MethodBudget(num_samples=100, chains=4, svi_steps=1500, kd_epochs=60),
    ),
    "mnist": Preset(
        teacher="mlp:256,256",
        student="mlp:32",
        teacher_epochs=10,
        teacher_lr=0.05,
        num_train=10_000,
        budget=MethodBudget(
            num_samples=50, warmup=800, thin=8, chains=4, svi_steps=1500, kd_epochs=20
        ),
    ),
    "fashion-mnist": Preset(
        teacher="small_cnn:16",
        student="small_cnn:4",
        teacher_epochs=8,
        teacher_lr=0.05,
        num_train=10_000,
        num_test=2_000,
        budget=MethodBudget(
            num_samples=25, warmup=300, thin=4, chains=4, svi_steps=800, kd_epochs=8
        ),
    ),
    "cifar10-subset": Preset(
        teacher="resnet8",
        student="small_cnn:8",
        teacher_epochs=15,
        teacher_lr=0.05,
        standardize=True,
        budget=MethodBudget(
            num_samples=25, warmup=300, thin=4, chains=4, svi_steps=600, kd_epochs=15
        ),
    ),
}
#: ``quick=True``: seconds per method, for tests; the numbers mean nothing.
QUICK_BUDGET = MethodBudget(
    num_samples=6,
    warmup=10,
    thin=1,
    chains=2,
    svi_steps=20,
    kd_epochs=1,
    batch_size=64,
    ensemble_size=3,
)
QUICK_SIZES = {"num_train": 256, "num_test": 64}


def method_list(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated names of ``compare``'s methods, or ``all``."""
    if text.strip().lower() == "all":
        return COMPARE_METHODS
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in COMPARE_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or repr(text)}; valid: "
            f"{', '.join(COMPARE_METHODS)} (or all)"
        )
    return names


@dataclass(frozen=True)
class CompareOptions:
    """Options of :func:`run_compare` (the ``compare`` subcommand).

    ``methods``: names of :data:`COMPARE_METHODS` (the teacher row is always there).
    ``teacher``: a ``teacher.pt`` of ``pyro-bkd teacher`` or of an earlier ``compare`` for the
    same data set (``None``: train one). ``num_train``/``num_test``/``budget`` override the
    data set's :class:`Preset`. Each field but ``budget`` is also a flag of ``pyro-bkd
    compare`` (:mod:`pyro_bkd.pipeline.options`); the values are checked at construction
    (:class:`~pyro_bkd.InputError` naming the flag; ``FileNotFoundError`` for ``--teacher``).
    """

    dataset: str = option(choices=COMPARE_DATASETS)
    out: str = option(help=OUT_HELP)
    methods: tuple[str, ...] = option(
        DEFAULT_METHODS,
        type=method_list,
        metavar="M1,M2,...",
        help=(
            f"comma-separated, or 'all': {', '.join(COMPARE_METHODS)} "
            f"(default: {','.join(DEFAULT_METHODS)})"
        ),
    )
    teacher: str | None = option(
        None,
        metavar="TEACHER.pt",
        help="a teacher.pt of 'pyro-bkd teacher' or of an earlier compare (default: train one)",
    )
    num_train: int | None = option(None, type=integer, help="stratified subset of the train split")
    num_test: int | None = option(None, type=integer, help="first test examples only")
    data_root: str | None = option(None, help=DATA_ROOT_HELP)
    seed: int = option(0, type=integer, help=SEED_HELP)
    quick: bool = option(False, action="store_true", help="a tiny budget (seconds, for tests)")
    budget: MethodBudget | None = None
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Raise :class:`~pyro_bkd.InputError` naming the first bad option."""
        if self.dataset not in COMPARE_DATASETS:
            raise InputError(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(COMPARE_DATASETS)}"
            )
        if isinstance(self.methods, str) or not self.methods:
            raise InputError(
                f"--methods must name at least one method; valid: {', '.join(COMPARE_METHODS)}"
            )
        for method in self.methods:
            check_method(method, COMPARE_METHODS)
        check_out_dir(self.out)
        check_count("--seed", self.seed)
        for flag, value in (("--num-train", self.num_train), ("--num-test", self.num_test)):
            if value is not None:
                check_count(flag, value)
        if self.teacher is not None and not Path(self.teacher).is_file():
            raise FileNotFoundError(f"--teacher {self.teacher!r} is not a file")
        if self.dataset == "digits" and self.data_root is not None:
            raise InputError("digits ships with scikit-learn; --data-root does not apply")


def run_compare(options: CompareOptions, log: Log = quiet) -> dict[str, Any]:
    """Run every method of ``options.methods`` on one data set; returns ``metrics.json``.

    Teacher (``Preset.teacher``, SGD with momentum and a cosine schedule, maximum likelihood)
    -> teacher logits. The student alone (cross entropy) and the KD student (``tau = 4``,
    ``alpha = 0.9``, ``c = tau^2``; Adam) are trained for ``kd_epochs`` with the weight decay
    of the ``Normal(0, 1)`` weight prior, from the same initialisation. Every method then
    works on :class:`~pyro_bkd.BKDModel` with ``lam = alpha tau^2 / (1 - alpha) = 144``,
    started at the KD student (``mc-dropout`` and ``ensemble`` train their own KD students).
    A method's wall time is its own stage: the shared KD warm start is in the ``kd`` row.
    """
    methods = tuple(dict.fromkeys(options.methods))  # each once, in the order given
    preset = PRESETS[options.dataset]
    budget = options.budget or (QUICK_BUDGET if options.quick else preset.budget)
    sizes = QUICK_SIZES if options.quick else {}
    num_train = options.num_train or sizes.get("num_train") or preset.num_train
    num_test = options.num_test or sizes.get("num_test") or preset.num_test
    teacher_epochs = 1 if options.quick else preset.teacher_epochs
    dev = resolve_device(options.device)
    start = time.perf_counter()

    dataset = _load(options, preset, num_train, num_test)
    teacher, teacher_arch = _teacher(options, preset, dataset, teacher_epochs, dev, log)
    run = {"command": "pyro-bkd compare", "dataset": dataset.name, "seed": options.seed}
    with output_folder(options.out, run) as out_dir:  # moved into place once complete
        return _compare_into(
            out_dir, options, methods, budget, dataset, teacher, teacher_arch, dev, start, log
        )


def _compare_into(
    out_dir: Path,
    options: CompareOptions,
    methods: tuple[str, ...],
    budget: MethodBudget,
    dataset: Dataset,
    teacher: nn.Module,
    teacher_arch: str,
    dev: torch.device,
    start: float,
    log: Log,
) -> dict[str, Any]:
    """The work of :func:`run_compare` once the data and teacher are ready, stage by stage
    (teacher logits, the two point students, the methods, the outputs); writes into
    ``out_dir``."""
    rows: dict[str, dict[str, Any]] = {}
    outputs: dict[str, MethodOutput] = {}
    t_train, t_test = _teacher_stage(out_dir, teacher, teacher_arch, dataset, rows, outputs)
    inputs = _method_inputs(options, dataset, t_train, dev)
    _student_stage(inputs, PRESETS[options.dataset].student, methods, budget, rows, outputs, log)
    for method in (m for m in methods if m not in POINT_METHODS):
        log(f"{method}")
        stage = time.perf_counter()
        try:
            outputs[method] = run_method(method, inputs, _budget_of(method, budget))
        except Exception as error:  # a failed method must not lose the others' results
            rows[method] = {"status": "failed", "reason": _reason(error)}
            log(f"{method} failed: {rows[method]['reason']}")
            continue
        rows[method] = {"wall_seconds": seconds(stage)}

    reported = ["teacher", *methods]
    table = _table(reported, rows, outputs, dataset.y_test)
    attrs = _compare_attrs(options, dataset, teacher_arch, inputs.strength)
    _save_posteriors(out_dir, reported, outputs, dataset, t_test, attrs)
    settings = _compare_settings(options, budget, dataset, inputs, attrs, dev)
    values = clean({"command": "compare", "rows": table, "settings": settings})
    values["wall_seconds"] = seconds(start)
    _atomic.write_text(out_dir / "comparison.csv", comparison_csv(table, COLUMNS))
    _atomic.write_text(out_dir / "comparison.md", comparison_markdown(table, settings))
    write_json(out_dir / "metrics.json", values)
    return values


def _teacher_stage(
    out_dir: Path,
    teacher: nn.Module,
    teacher_arch: str,
    dataset: Dataset,
    rows: dict[str, dict[str, Any]],
    outputs: dict[str, MethodOutput],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits on the train and test inputs (the ``teacher`` row); saves teacher.pt."""
    stage = time.perf_counter()
    t_train = teacher_logits(teacher, dataset.x_train)
    t_test = teacher_logits(teacher, dataset.x_test)
    rows["teacher"] = {"wall_seconds": seconds(stage)}
    outputs["teacher"] = MethodOutput(point_probs(t_test), None, None, {"method": "teacher"})
    save_teacher(
        out_dir / "teacher.pt",
        teacher,
        arch=teacher_arch,
        input_shape=tuple(dataset.x_train.shape[1:]),
        dataset=dataset.name,
        objective="mll",
        class_names=dataset.class_names,
    )
    return t_train, t_test


def _method_inputs(
    options: CompareOptions, dataset: Dataset, t_train: torch.Tensor, dev: torch.device
) -> MethodInputs:
    """What every method starts from; ``warm_student`` is the fresh student that
    :func:`_student_stage` trains by KD before any method copies it."""
    preset = PRESETS[options.dataset]
    x_train, num_classes = dataset.x_train, dataset.num_classes

    def new_student(seed: int) -> nn.Module:
        return build_student(preset.student, x_train, num_classes, seed=seed)

    return MethodInputs(
        new_student=new_student,
        warm_student=new_student(options.seed),
        train=DistillationData(x_train, dataset.y_train, t_train),
        x_test=dataset.x_test,
        temperature=TEMPERATURE,
        strength=strength_from_alpha(KD_ALPHA, TEMPERATURE),
        prior_scale=PRIOR_SCALE,
        seed=options.seed,
        device=dev,
        progress=options.progress,
    )


def _student_stage(
    inputs: MethodInputs,
    student: str,
    methods: tuple[str, ...],
    budget: MethodBudget,
    rows: dict[str, dict[str, Any]],
    outputs: dict[str, MethodOutput],
    log: Log,
) -> None:
    """The ``student`` row (trained alone, when asked) and the ``kd`` row (the KD student,
    trained in place: the warm start of the methods), from the same initialisation."""
    kd_student = inputs.warm_student
    log(
        f"student {student} ({num_weights(kd_student)} weights): alone and by KD, "
        f"{budget.kd_epochs} epochs each"
    )
    if "student" in methods:
        stage = time.perf_counter()
        alone = inputs.fit_map(inputs.new_student(inputs.seed), budget, alone=True).student
        outputs["student"] = _point_output(alone, inputs.x_test, "student")
        rows["student"] = {"wall_seconds": seconds(stage)}
    stage = time.perf_counter()
    inputs.fit_map(kd_student, budget)
    outputs["kd"] = _point_output(kd_student, inputs.x_test, "kd")
    rows["kd"] = {"wall_seconds": seconds(stage)}


def _compare_attrs(
    options: CompareOptions, dataset: Dataset, teacher_arch: str, strength: float
) -> dict[str, Any]:
    """The attributes every method's ``posterior.nc`` carries."""
    return {
        "command": "pyro-bkd compare",
        "dataset": dataset.name,
        "teacher": teacher_arch,
        "teacher_file": options.teacher,
        "student": PRESETS[options.dataset].student,
        "tau": TEMPERATURE,
        "kd_alpha": KD_ALPHA,
        "strength": strength,
        "prior_scale": PRIOR_SCALE,
        "seed": options.seed,
    }


def _save_posteriors(
    out_dir: Path,
    reported: Sequence[str],
    outputs: dict[str, MethodOutput],
    dataset: Dataset,
    t_test: torch.Tensor,
    attrs: dict[str, Any],
) -> None:
    """``<method>/posterior.nc`` of every method that has draws."""
    for method in reported:
        if method not in outputs:
            continue
        output = outputs[method]
        idata = export.to_inference_data(
            output.probs,
            y_test=dataset.y_test,
            teacher_probs=t_test.softmax(-1),
            sample_stats=output.sample_stats,
            class_names=list(dataset.class_names),
            attrs={**attrs, **output.config, "method": method},
        )
        (out_dir / method).mkdir(exist_ok=True)
        save_posterior(idata, out_dir / method / "posterior.nc")


def _compare_settings(
    options: CompareOptions,
    budget: MethodBudget,
    dataset: Dataset,
    inputs: MethodInputs,
    attrs: dict[str, Any],
    dev: torch.device,
) -> dict[str, Any]:
    """The ``settings`` of ``metrics.json`` and of the Markdown page."""
    preset = PRESETS[options.dataset]
    return {
        "dataset": dataset.name,
        "num_train": int(dataset.x_train.shape[0]),
        "num_test": int(dataset.x_test.shape[0]),
        "num_classes": dataset.num_classes,
        "teacher": attrs["teacher"],
        "teacher_epochs": None
        if options.teacher
        else (1 if options.quick else preset.teacher_epochs),
        "student": preset.student,
        "student_weights": num_weights(inputs.warm_student),
        "temperature": TEMPERATURE,
        "kd_alpha": KD_ALPHA,
        "strength": inputs.strength,
        "prior_scale": PRIOR_SCALE,
        "standardized": preset.standardize,
        "budget": asdict(budget),
        "seed": options.seed,
        "quick": options.quick,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "version": __version__,
    }


def _load(options: CompareOptions, preset: Preset, num_train: int | None, num_test: int | None):
    """The data set, standardised if the preset says so, cut to ``num_train``/``num_test``."""
    loader_options: dict[str, Any] = {"seed": options.seed} if options.dataset == "digits" else {}
    dataset = load_dataset(options.dataset, options.data_root, **loader_options)
    if preset.standardize:
        dataset = standardize(dataset)
    x_train, y_train = dataset.x_train, dataset.y_train
    if options.num_train is not None and options.num_train < dataset.num_classes:
        raise InputError(
            f"--num-train must be at least the number of classes ({dataset.num_classes} in "
            f"{dataset.name}: one example of each), got {options.num_train}"
        )
    if num_train is not None and num_train < x_train.shape[0]:
        keep = few_shot_indices(y_train, num_train / x_train.shape[0], seed=options.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = dataset.x_test[:num_test], dataset.y_test[:num_test]
    return replace(dataset, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _teacher(
    options: CompareOptions,
    preset: Preset,
    dataset: Dataset,
    epochs: int,
    device: torch.device,
    log: Log,
) -> tuple[nn.Module, str]:
    """``(teacher, its architecture name)``: loaded from ``options.teacher`` (checked against
    the data) or trained."""
    x_train = dataset.x_train
    if options.teacher is not None:
        log(f"teacher: loading {options.teacher}")
        checkpoint = read_teacher_checkpoint(options.teacher)
        teacher = teacher_from_checkpoint(checkpoint).to(device)
        try:
            logits = teacher_logits(teacher, x_train[:2])
        except RuntimeError as error:
            raise InputError(
                f"--teacher {options.teacher!r} does not accept {dataset.name} inputs of shape "
                f"{tuple(x_train.shape[1:])}: {str(error).splitlines()[0]}"
            ) from None
        if logits.shape[1] != dataset.num_classes:
            raise InputError(
                f"--teacher {options.teacher!r} has {logits.shape[1]} classes, "
                f"{dataset.name} has {dataset.num_classes}"
            )
        return teacher, str(checkpoint["arch"])
    teacher = build_student(preset.teacher, x_train, dataset.num_classes, seed=options.seed)
    log(
        f"{dataset.name}: {x_train.shape[0]} train / {dataset.x_test.shape[0]} test; teacher "
        f"{preset.teacher} ({num_weights(teacher)} weights), {epochs} epochs"
    )
    train_teacher(
        teacher,
        x_train,
        dataset.y_train,
        objective="mll",
        epochs=epochs,
        lr=preset.teacher_lr,
        seed=options.seed,
        device=device,
        progress=options.progress,
    )
    return teacher, preset.teacher


def _budget_of(method: str, budget: MethodBudget) -> MethodBudget:
    """``budget``, except for NUTS: no thinning (its draws are nearly independent), at most
    200 warm-up steps and 2 chains (each draw costs up to 2^10 gradient evaluations)."""
    if method != "nuts":
        return budget
    return replace(
        budget, thin=1, warmup=min(budget.warmup or 200, 200), chains=min(budget.chains, 2)
    )


def _point_output(student: nn.Module, x_test: torch.Tensor, method: str) -> MethodOutput:
    return MethodOutput(
        point_probs(network_logits(student, x_test)), None, None, {"method": method}
    )


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _table(
    reported: Sequence[str],
    rows: dict[str, dict[str, Any]],
    outputs: dict[str, MethodOutput],
    y: torch.Tensor,
) -> list[dict[str, Any]]:
    """One dict per reported method with every column of :data:`COLUMNS`."""
    pointwise = {m: metrics.pointwise_elpd(outputs[m].probs, y) for m in reported if m in outputs}
    best = max(pointwise, key=lambda m: pointwise[m].sum()) if pointwise else None
    table = []
    for method in reported:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update({"method": method, "status": "ok", **rows.get(method, {})})
        if method in outputs:
            probs = outputs[method].probs
            summary = metrics.summarize(probs, y)
            row.update({key: summary[key] for key in COLUMNS if key in summary})
            if summary["num_draws"] * summary["num_chains"] == 1:
                row["mean_interval_width"] = None  # a point estimate has no interval
            if method not in REGISTRY or not REGISTRY[method].markov_chain:  # independent draws
                row["max_rhat"] = row["min_ess_bulk"] = None
            else:
                row["verdict"] = diagnose(probs).status
            row["elpd_test"], row["elpd_se"] = metrics.Elpd.of(pointwise[method])
            row["elpd_diff"], row["elpd_dse"] = metrics.Elpd.of(pointwise[best] - pointwise[method])
            draws = int(probs.shape[0] * probs.shape[1])
            row["draws"] = draws
            wall = row.get("wall_seconds")
            if wall and draws > 1:
                row["draws_per_second"] = draws / wall
        table.append(clean(row))
    return table
