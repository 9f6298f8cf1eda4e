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

from pyro_bkd import __version__, _atomic, export, metrics
from pyro_bkd._checks import InputError
from pyro_bkd.infer.verdict import diagnose
from pyro_bkd.pipeline.common import (
    Log,
    check_count,
    check_out_dir,
    clean,
    num_weights,
    output_folder,
    quiet,
    resolve_device,
    save_posterior,
    seconds,
    write_json,
)
from pyro_bkd.pipeline.methods import METHODS, REGISTRY, MethodOutput, check_method
from pyro_bkd.pipeline.options import DATA_ROOT_HELP, OUT_HELP, SEED_HELP, integer, option
from pyro_bkd.pipeline.presets import (
    KD_ALPHA,
    PRESETS,
    PRIOR_SCALE,
    TEMPERATURE,
    MethodBudget,
    Preset,
    quick,
)
from pyro_bkd.pipeline.stages import (
    POINT_METHODS,
    Study,
    load_data,
    obtain_teacher,
    run_stages,
)
from pyro_bkd.pipeline.teacher import TEACHER_DATASETS, save_teacher
from pyro_bkd.report import comparison_csv, comparison_markdown

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

    def plan(self) -> Preset:
        """The data set's :data:`~pyro_bkd.pipeline.presets.PRESETS` entry (its
        :func:`~pyro_bkd.pipeline.presets.quick` version with ``--quick``), with
        ``num_train``, ``num_test`` and ``budget`` replaced where given."""
        preset = PRESETS[self.dataset]
        preset = quick(preset) if self.quick else preset
        return replace(
            preset,
            num_train=self.num_train or preset.num_train,
            num_test=self.num_test or preset.num_test,
            budget=self.budget or preset.budget,
        )


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
    preset = options.plan()
    dev = resolve_device(options.device)
    start = time.perf_counter()
    dataset = load_data(options.dataset, options.data_root, options.seed, preset)
    teacher = obtain_teacher(
        options.teacher, preset, dataset, options.seed, dev, options.progress, log
    )
    run = {"command": "pyro-bkd compare", "dataset": dataset.name, "seed": options.seed}
    with output_folder(options.out, run) as out_dir:  # moved into place once complete
        study = run_stages(
            dataset,
            teacher,
            preset,
            methods,
            seed=options.seed,
            device=dev,
            progress=options.progress,
            log=log,
        )
        return _write_comparison(out_dir, options, preset, ["teacher", *methods], study, start)


def _write_comparison(
    out_dir: Path,
    options: CompareOptions,
    preset: Preset,
    reported: list[str],
    study: Study,
    start: float,
) -> dict[str, Any]:
    """``teacher.pt``, each method's ``posterior.nc``, ``comparison.csv``/``.md`` and
    ``metrics.json``; returns the latter's values."""
    dataset = study.dataset
    save_teacher(
        out_dir / "teacher.pt",
        study.teacher,
        arch=study.teacher_arch,
        input_shape=tuple(dataset.x_train.shape[1:]),
        dataset=dataset.name,
        objective="mll",
        class_names=dataset.class_names,
    )
    table = _table(reported, study.rows, study.outputs, dataset.y_test)
    attrs = _compare_attrs(options, preset, study)
    _save_posteriors(out_dir, reported, study, attrs)
    settings = _compare_settings(options, preset, study, attrs)
    values = clean({"command": "compare", "rows": table, "settings": settings})
    values["wall_seconds"] = seconds(start)
    _atomic.write_text(out_dir / "comparison.csv", comparison_csv(table, COLUMNS))
    _atomic.write_text(out_dir / "comparison.md", comparison_markdown(table, settings))
    write_json(out_dir / "metrics.json", values)
    return values


def _compare_attrs(options: CompareOptions, preset: Preset, study: Study) -> dict[str, Any]:
    """The attributes every method's ``posterior.nc`` carries."""
    return {
        "command": "pyro-bkd compare",
        "dataset": study.dataset.name,
        "teacher": study.teacher_arch,
        "teacher_file": options.teacher,
        "student": preset.student,
        "tau": TEMPERATURE,
        "kd_alpha": KD_ALPHA,
        "strength": study.inputs.strength,
        "prior_scale": PRIOR_SCALE,
        "seed": options.seed,
    }


def _save_posteriors(
    out_dir: Path, reported: Sequence[str], study: Study, attrs: dict[str, Any]
) -> None:
    """``<method>/posterior.nc`` of every method that has draws."""
    for method in reported:
        if method not in study.outputs:
            continue
        output = study.outputs[method]
        idata = export.to_inference_data(
            output.probs,
            y_test=study.dataset.y_test,
            teacher_probs=study.t_test.softmax(-1),
            sample_stats=output.sample_stats,
            class_names=list(study.dataset.class_names),
            attrs={**attrs, **output.config, "method": method},
        )
        (out_dir / method).mkdir(exist_ok=True)
        save_posterior(idata, out_dir / method / "posterior.nc")


def _compare_settings(
    options: CompareOptions, preset: Preset, study: Study, attrs: dict[str, Any]
) -> dict[str, Any]:
    """The ``settings`` of ``metrics.json`` and of the Markdown page."""
    dataset, inputs = study.dataset, study.inputs
    return {
        "dataset": dataset.name,
        "num_train": int(dataset.x_train.shape[0]),
        "num_test": int(dataset.x_test.shape[0]),
        "num_classes": dataset.num_classes,
        "teacher": attrs["teacher"],
        "teacher_epochs": None if options.teacher else preset.teacher_epochs,
        "student": preset.student,
        "student_weights": num_weights(inputs.warm_student),
        "temperature": TEMPERATURE,
        "kd_alpha": KD_ALPHA,
        "strength": inputs.strength,
        "prior_scale": PRIOR_SCALE,
        "standardized": preset.standardize,
        "budget": asdict(preset.budget),
        "seed": options.seed,
        "quick": options.quick,
        "device": str(inputs.device),
        "torch_threads": torch.get_num_threads(),
        "version": __version__,
    }


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
