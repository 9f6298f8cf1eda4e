"""Label-set coverage against test-set size (the BKD paper's protocol), from stored runs.

Reads the draws ``q^(s)(x_test)`` that ``benchmarks/paper_table.py`` (one ``pyro-bkd compare``
run per data set and seed) stored under ``--runs/<data set>/seed<k>/<method>/posterior.nc``,
and for every method computes the coverage of the credible label sets at ``--level`` on nested
random subsets of ``m`` test inputs (``--sizes``, default 500 to 10,000 on MNIST;
:func:`pyro_bkd.metrics.coverage_by_size`): the share ``c`` of the ``m`` inputs whose label
lies in the set, with the binomial standard error ``sqrt(c (1 - c) / m)``, and the mean set
size. Single-draw methods (teacher, student, KD) use the smallest set of top classes whose
softmax probability reaches the level. Markov-chain rows carry the run's convergence verdict.

Writes a Markdown table (``--out FILE``: between ``<!-- coverage_by_size:begin/end -->``)
and a figure (``--plot FILE``, :func:`pyro_bkd.plots.coverage_vs_size`) of the first seed.

Run: ``python benchmarks/coverage_by_size.py --dataset mnist --out docs/results.md
--plot docs/figures/coverage_by_size_mnist.png`` (a few seconds per run folder; the runs come
from ``python benchmarks/paper_table.py --datasets mnist``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyro_bkd import export, metrics, plots
from pyro_bkd.pipeline.compare import PAPER_NAMES
from pyro_bkd.report import write_marked_section

MARKER = "coverage_by_size"
DEFAULT_SIZES = (500, 1000, 2000, 5000, 10_000)


def load_run(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, str | None]]:
    """``({method: probs}, y_test, {method: verdict})`` of one ``compare`` run folder (the
    methods that finished, in the order of its ``metrics.json``)."""
    values = json.loads((folder / "metrics.json").read_text())
    probs, verdicts, labels = {}, {}, None
    for row in values["rows"]:
        if row["status"] != "ok":
            continue
        idata = export.load(folder / row["method"] / "posterior.nc")
        probs[row["method"]] = idata.predictions["probs"].values
        verdicts[row["method"]] = row.get("verdict")
        labels = idata.predictions_constant_data["y_test"].values
    if labels is None:
        raise SystemExit(f"{folder}: no finished method")
    return probs, labels, verdicts


def run(args: argparse.Namespace) -> tuple[str, dict]:
    """The Markdown block and ``{method: rows}`` of the first seed (for the figure)."""
    per_seed: list[dict[str, list[metrics.LabelSetCoverage]]] = []
    verdicts: dict[str, list[str | None]] = {}
    num_test = None
    for seed in args.seeds:
        probs, y, verdict = load_run(args.runs / args.dataset / f"seed{seed}")
        num_test = y.size
        sizes = [m for m in args.sizes if m <= y.size]
        per_seed.append(
            {
                method: metrics.coverage_by_size(p, y, sizes, args.level, seed=args.subset_seed)
                for method, p in probs.items()
            }
        )
        for method, value in verdict.items():
            verdicts.setdefault(method, []).append(value)
    methods = list(per_seed[0])
    sizes = [row.num_obs for row in per_seed[0][methods[0]]]
    pct = metrics.level_key(args.level)
    lines = [
        f"Command: `python benchmarks/coverage_by_size.py {' '.join(args.argv)}`; "
        f"{args.dataset}, {num_test} test inputs, seeds {list(args.seeds)} of "
        f"`{args.runs}`; nested random subsets (permutation seed {args.subset_seed}).",
        "",
        f"Coverage (%) of the {pct}% credible label sets on the first m inputs of the "
        "permutation: mean over seeds ± binomial se sqrt(c (1 - c) / m); last column: the "
        f"mean {pct}% set size and the mean predictive mass of the sets on all inputs (the "
        "coverage the method itself expects: a calibrated predictive covers its own mass; "
        "gap = (coverage - mass) / se at m = N, mean over seeds).",
        "",
        "| method | "
        + " | ".join(f"m = {m}" for m in sizes)
        + " | set size | set mass (%) | gap (se) | verdict |",
        "|---|" + "---|" * (len(sizes) + 4),
    ]
    for method in methods:
        cells = []
        for index, size in enumerate(sizes):
            share = float(np.mean([rows[method][index].coverage for rows in per_seed]))
            cells.append(f"{100 * share:.2f} ± {100 * metrics.binomial_se(share, size):.2f}")
        set_size = float(np.mean([rows[method][-1].mean_size for rows in per_seed]))
        mass = float(np.mean([rows[method][-1].mean_mass for rows in per_seed]))
        gap = float(
            np.mean(
                [
                    (r.coverage - r.mean_mass) / r.se if r.se > 0 else 0.0
                    for r in (rows[method][-1] for rows in per_seed)
                ]
            )
        )
        present = [v for v in verdicts[method] if v]
        verdict = (
            ", ".join(f"{v} ({present.count(v)}/{len(present)})" for v in dict.fromkeys(present))
            or "–"
        )
        name = PAPER_NAMES.get(method, method)
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {set_size:.2f} | {100 * mass:.2f} | {gap:+.1f} | {verdict} |"
        )
    if args.plot is not None:
        lines += ["", f"![coverage against test-set size]({args.plot_link})"]
    first = {PAPER_NAMES.get(m, m): per_seed[0][m] for m in methods}
    return "\n".join(lines) + "\n", first


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--runs", type=Path, default=Path("runs/paper_table"))
    parser.add_argument("--seeds", nargs="+", type=int, default=(0, 1, 2))
    parser.add_argument("--sizes", nargs="+", type=int, default=DEFAULT_SIZES)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the permutation")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to write into")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the first seed")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 0 < args.level < 1:
        parser.error("--level must be in (0, 1)")
    if any(m < 1 for m in args.sizes):
        parser.error("--sizes must be positive")
    args.plot_link = None if args.plot is None else relative_link(args.plot, args.out)
    return args


def relative_link(target: Path, page: Path | None) -> str:
    """``target`` as a link relative to the folder of the Markdown ``page`` (as given when
    there is no page)."""
    if page is None:
        return target.as_posix()
    return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    block, first = run(args)
    print(block)
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure = plots.coverage_vs_size(
            first,
            title=f"{args.dataset}: {metrics.level_key(args.level)}% label-set coverage "
            f"against test-set size (seed {args.seeds[0]})",
        )
        figure.savefig(args.plot, dpi=110)
    if args.out is not None:
        write_marked_section(args.out, MARKER, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
