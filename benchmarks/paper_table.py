"""The BKD paper's comparison on real data, 3 seeds, written into ``docs/results.md``.

Rows: those of Fang et al. (2024), teacher, student alone, KD, KD + BNN (SVI mean-field), KD +
MC dropout and BKD (by the default sampler, SGHMC, and by SGLD), plus a deep ensemble of KD
students and BKD by pSGLD; ``--methods`` picks any methods of ``pyro-bkd compare``. Markov
chains carry their convergence verdict; failed runs are listed as failed, never averaged. Data
sets and architectures are the presets of :data:`pyro_bkd.pipeline.PRESETS`:

- MNIST: MLP 784-256-256-10 teacher -> MLP 784-32-10 student (10,000 training images, a
  stratified subset, and the 10,000 test images);
- Fashion-MNIST: CNN ``small_cnn:16`` teacher -> ``small_cnn:4`` student (10,000 training
  images from Debian's ``dataset-fashion-mnist``, the first 2,000 test images);
- CIFAR-10 subset: ``resnet8`` teacher -> ``small_cnn:8`` student (4,000 / 1,000 images,
  standardised).

Each (data set, seed) is one :func:`pyro_bkd.pipeline.run_compare` run: the seed changes the
training subset, the teacher's and students' initialisation and batches, and the sampling
noise. Its outputs (``comparison.csv``, ``posterior.nc`` per method) are kept under ``--runs``.
The table gives mean ± sd over seeds of accuracy, NLL, ECE and mean-deviance AUROC for errors
(MD-AUROC) of the posterior-mean prediction, and the mean wall time of each method's stage. A
second table gives the BKD paper's headline metric for every method: the coverage of the
credible label sets at 90/95/99% (the share of test inputs whose label lies in the set;
:func:`pyro_bkd.metrics.label_set_coverage`; for single-draw methods, the teacher, the student
and KD, the smallest set of top classes whose softmax probability reaches the level), as mean ±
sd over seeds with the binomial standard error ``sqrt(c (1 - c) / N)`` of one run in brackets,
and the mean set size at 95%. Runs finished before the label-set columns existed get them
from their stored draws (``<method>/posterior.nc``) on ``--resume``.

Run from the repo root: ``.venv/bin/python benchmarks/paper_table.py`` (about 30 minutes on
one CPU thread); ``--resume`` after an interruption reuses the completed (data set, seed) runs;
``--quick`` is a seconds-long smoke run on digits for the tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pyro_bkd import export, metrics
from pyro_bkd.pipeline import COMPARE_DATASETS, COMPARE_METHODS, CompareOptions, run_compare
from pyro_bkd.pipeline.compare import PAPER_NAMES
from pyro_bkd.pipeline.presets import PRESETS
from pyro_bkd.report import mean_sd, write_marked_section

MARKER = "paper_table"  # docs/results.md section: <!-- paper_table:begin/end -->
DATASETS = ("mnist", "fashion-mnist", "cifar10-subset")
PAPER_METHODS = ("student", "kd", "svi-normal", "mc-dropout", "ensemble", "sghmc", "sgld", "psgld")
METRICS = (("accuracy", "acc (%)", 100.0, 2), ("nll", "NLL", 1.0, 3), ("ece", "ECE", 1.0, 3))
METRICS += (("md_auroc", "MD-AUROC", 1.0, 3),)
#: Columns of the label-set table: coverage at each level of ``metrics.LABEL_SET_LEVELS``.
SET_LEVELS = tuple(metrics.level_key(level) for level in metrics.LABEL_SET_LEVELS)
#: Numbers the papers report (SPEC.md section 7), quoted beside ours.
PAPER_ANCHORS = (
    "BKD paper (Fang et al., 2024), Fashion-MNIST: BKD accuracy 0.905 vs KD 0.902; BKD "
    "comparable to or slightly above KD elsewhere; compared with KD, KD + Bayesian NN and "
    "KD + MC dropout. Their teachers, students and training budgets are larger than ours "
    "(GPU training to convergence), so only the *ordering* of the rows is comparable."
)


def run(args: argparse.Namespace) -> tuple[str, list[dict]]:
    """Every (data set, seed) run; returns the Markdown block and the per-run rows."""
    start = time.perf_counter()
    per_run: list[dict] = []
    for dataset in args.datasets:
        for seed in args.seeds:
            out = Path(args.runs) / dataset / f"seed{seed}"
            began = time.perf_counter()
            values = finished_run(out, args.methods, args.quick) if args.resume else None
            if values is None:
                options = CompareOptions(
                    dataset=dataset,
                    out=str(out),
                    methods=tuple(args.methods),
                    seed=seed,
                    quick=args.quick,
                    progress=False,
                )
                values = run_compare(options)
            print(
                f"{dataset} seed {seed}: {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            per_run += [
                {"dataset": dataset, "seed": seed, **row, "settings": values["settings"]}
                for row in values["rows"]
            ]
    minutes = (time.perf_counter() - start) / 60
    return format_block(per_run, args, minutes), per_run


def finished_run(out: Path, methods: Sequence[str], quick: bool) -> dict | None:
    """The ``metrics.json`` of an earlier run in ``out`` with the same methods and budget
    kind (``--resume``); ``None`` when there is none. ``run_compare`` writes it last and
    atomically, so its presence means the run completed."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    done = [row["method"] for row in values["rows"]]
    if done != ["teacher", *methods] or values["settings"]["quick"] != quick:
        return None
    return with_label_sets(out, values)


def with_label_sets(out: Path, values: dict) -> dict:
    """``values`` with the label-set columns of every successful row, computed from the
    row's stored draws ``out/<method>/posterior.nc`` (and its ``y_test``) where the run
    predates them; the same numbers ``run_compare`` writes now."""
    for row in values["rows"]:
        if row["status"] != "ok" or row.get("set_coverage_95") is not None:
            continue
        idata = export.load(out / row["method"] / "posterior.nc")
        y = idata.predictions_constant_data["y_test"].values
        row.update(metrics.label_set_fields(idata, y))
    return values


def format_block(per_run: list[dict], args: argparse.Namespace, minutes: float) -> str:
    """The Markdown section: command, table, the papers' numbers and the settings."""
    header = ["data set", "method", *(title for _, title, _, _ in METRICS), "time (s)", "verdict"]
    lines = [
        f"Command: `python benchmarks/paper_table.py {' '.join(args.argv)}`".rstrip() + "; "
        f"seeds {list(args.seeds)}; {torch.get_num_threads()} torch thread(s); wall time "
        f"{minutes:.1f} min on this machine's CPU. Mean ± sd over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    failures = []
    for dataset in args.datasets:
        for method in ("teacher", *args.methods):
            rows = [r for r in per_run if r["dataset"] == dataset and r["method"] == method]
            ok = [r for r in rows if r["status"] == "ok"]
            failures += [r for r in rows if r["status"] != "ok"]
            cells = [mean_sd([r[key] for r in ok], scale, d) for key, _, scale, d in METRICS]
            time_cell = mean_sd([r["wall_seconds"] for r in ok], 1.0, 1)
            if len(ok) < len(rows):
                time_cell += f" ({len(rows) - len(ok)} failed)"
            name = PAPER_NAMES.get(method, method)
            verdict = verdict_cell([r.get("verdict") for r in ok])
            lines.append("| " + " | ".join([dataset, name, *cells, time_cell, verdict]) + " |")
    lines += ["", *label_set_table(per_run, args)]
    lines += ["", PAPER_ANCHORS, "", "Settings of each data set (from `PRESETS`):", ""]
    for dataset in args.datasets:
        settings = next(r["settings"] for r in per_run if r["dataset"] == dataset)
        budget = settings["budget"]
        lines.append(
            f"- {dataset}: teacher {settings['teacher']} ({settings['teacher_epochs']} "
            f"epochs), student {settings['student']} ({settings['student_weights']} weights), "
            f"{settings['num_train']} train / {settings['num_test']} test; KD "
            f"{budget['kd_epochs']} epochs; Markov chains {budget['chains']} x "
            f"({budget['warmup'] or 'default'} warm-up + {budget['num_samples']} x "
            f"{budget['thin'] or 'default'}) steps; "
            f"SVI {budget['svi_steps']} steps, {budget['num_samples']} guide draws; MC dropout "
            f"p = {budget['dropout_rate']}, {budget['num_samples']} masks; ensemble "
            f"{budget['ensemble_size']} members."
        )
    if failures:
        lines += ["", "Failed runs:", ""]
        lines += [
            f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['reason']}" for r in failures
        ]
    return "\n".join(lines) + "\n"


def label_set_table(per_run: list[dict], args: argparse.Namespace) -> list[str]:
    """Label-set coverage (%) at each level, mean ± sd over seeds [binomial standard error
    ``sqrt(c (1 - c) / N)`` of one run, at the mean coverage], and the mean 95% set size."""
    header = ["data set", "method", *(f"set cov {key}% (%)" for key in SET_LEVELS)]
    header += ["set size 95%", "verdict"]
    lines = [
        "Credible label sets (the BKD paper's metric): share of test inputs whose label is in "
        "the set, mean ± sd over seeds [binomial se of one run]; for the single-draw rows "
        "(teacher, student, KD) the set is the smallest set of top classes whose softmax "
        "probability reaches the level. A BKD row whose chains did not converge is labelled "
        "so: its sets come from draws not yet from the posterior.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for dataset in args.datasets:
        for method in ("teacher", *args.methods):
            ok = [
                r
                for r in per_run
                if r["dataset"] == dataset and r["method"] == method and r["status"] == "ok"
            ]
            if not ok:
                continue
            cells = []
            for key in SET_LEVELS:
                values = [r.get(f"set_coverage_{key}") for r in ok]
                present = [v for v in values if v is not None]
                cell = mean_sd(present, 100.0, 2)
                if present:
                    share = sum(present) / len(present)
                    cell += (
                        f" [{100 * metrics.binomial_se(share, ok[0]['settings']['num_test']):.2f}]"
                    )
                cells.append(cell)
            cells.append(mean_sd([r.get("set_size_95") for r in ok], 1.0, 2))
            cells.append(verdict_cell([r.get("verdict") for r in ok]))
            name = PAPER_NAMES.get(method, method)
            lines.append("| " + " | ".join([dataset, name, *cells]) + " |")
    return lines


def verdict_cell(verdicts: Sequence[str | None]) -> str:
    """The convergence verdicts of a Markov-chain method over seeds, e.g. ``not converged
    (3/3)``; ``–`` for methods without chains. A row whose chains did not converge is read
    with that caveat: its numbers are from draws that are not yet from the posterior."""
    present = [v for v in verdicts if v]
    if not present:
        return "–"
    counts = {v: present.count(v) for v in dict.fromkeys(present)}
    return ", ".join(f"{v} ({n}/{len(present)})" for v, n in counts.items())


def write_runs_csv(path: Path, per_run: list[dict]) -> None:
    """Every (data set, seed, method) row, for anyone who wants other summaries."""
    fields = ["dataset", "seed", "method", "status", *(key for key, _, _, _ in METRICS)]
    fields += metrics.label_set_keys()
    fields += ["mean_interval_width", "max_rhat", "verdict", "elpd_test", "wall_seconds"]
    fields += ["reason"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(per_run)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=COMPARE_DATASETS, default=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=(0, 1, 2))
    parser.add_argument("--methods", nargs="+", choices=COMPARE_METHODS, default=PAPER_METHODS)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--runs", type=Path, default=Path("runs/paper_table"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--quick", action="store_true", help="tiny budget, for the tests")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the (data set, seed) runs already completed under --runs",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = set(args.datasets) - set(PRESETS)
    if unknown:  # pragma: no cover - PRESETS covers COMPARE_DATASETS
        parser.error(f"no preset for {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(args.threads)
    block, per_run = run(args)
    write_runs_csv(args.runs / "paper_table.csv", per_run)
    write_marked_section(args.out, MARKER, block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
