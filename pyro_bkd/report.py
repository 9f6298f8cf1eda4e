"""Human-readable report of a run directory: ``report.html`` (self-contained) and ``report.md``.

A run directory holds ``metrics.json`` (required), ``posterior.nc`` (optional, written by
:func:`pyro_bkd.export.save`) and PNG figures under ``plots/`` (optional). The report shows the
run attributes, the metrics as tables (a nested dict of per-method dicts becomes one table with
a column per method), every figure (embedded as base64 in the HTML, linked in the Markdown) and the
ArviZ summary of the least-converged class probabilities ``q_k(x_n)``: the 10 entries with the
largest R-hat (with one chain, the smallest bulk ESS). Each file is replaced atomically.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pyro_bkd import _atomic, export, metrics, uq

#: Number of ``probs`` entries in the convergence table.
TOP_ENTRIES = 10

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
figure { display: inline-block; margin: 0.5em 1em 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
.scroll { overflow-x: auto; }
"""


class Table(NamedTuple):
    """A titled table of already formatted cells."""

    title: str
    header: list[str]
    rows: list[list[str]]


#: Entries with a smaller posterior mean are not listed among the least converged.
MIN_MASS = 0.01


def write_report(
    run_dir: str | os.PathLike[str], top: int = TOP_ENTRIES, name: str | None = None
) -> tuple[Path, Path]:
    """Write ``run_dir/report.html`` and ``run_dir/report.md``; returns their paths.

    ``name`` titles the report (default: the folder's name; a job writing into a staging
    folder passes the name of its output folder).

    Raises:
        FileNotFoundError: ``run_dir/metrics.json`` is missing.
        ValueError: ``metrics.json`` does not hold a JSON object.
    """
    run = Path(run_dir)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"run_dir must contain metrics.json; not found: {metrics_path}")
    values = json.loads(metrics_path.read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{metrics_path} must hold a JSON object, got {type(values).__name__}")
    tables = metric_tables(values)
    verdict = verdict_of(values)
    if verdict is not None:
        tables = [
            Table("Verdict", ["convergence of the class probabilities"], [[verdict]]),
            *tables,
        ]
    posterior_path = run / "posterior.nc"
    if posterior_path.is_file():
        idata = export.load(posterior_path)
        tables = [attribute_table(idata.attrs), *tables]
        sets = label_set_table(idata, verdict)
        if sets is not None:
            tables.append(sets)
        convergence = convergence_table(idata, top)
        if convergence is not None:
            tables.append(convergence)
    if verdict is not None:  # the verdict opens the report, before the run's attributes
        tables.insert(0, tables.pop(next(i for i, t in enumerate(tables) if t.title == "Verdict")))
    images = sorted((run / "plots").glob("*.png"))
    title = f"pyro-bkd report: {name or run.resolve().name}"
    html_path = _atomic.write_text(run / "report.html", render_html(title, tables, images))
    md_path = _atomic.write_text(run / "report.md", render_markdown(title, tables, images, run))
    return html_path, md_path


# --------------------------------------------------------------------------- tables


def mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd`` of the defined values times ``scale`` (sample sd, e.g. over seeds), for a
    results table; a single value is printed alone (its sd is undefined) and none as ``–``."""
    present = [value * scale for value in values if value is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    mean, sd = statistics.fmean(present), statistics.stdev(present)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def write_marked_section(path: str | os.PathLike[str], name: str, block: str) -> None:
    """Put ``block`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in the Markdown
    file ``path``, replacing what was there (appended with the markers when absent), atomically.
    The rest of the file is left as it is, so several generators can share one page."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    file = Path(path)
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    wrapped = f"{begin}\n{block.rstrip()}\n{end}"
    first, last = text.find(begin), text.find(end)
    if 0 <= first < last:
        text = text[:first] + wrapped + text[last + len(end) :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + wrapped + "\n"
    _atomic.write_text(file, text)


def metric_tables(values: Mapping[str, Any], title: str = "Metrics") -> list[Table]:
    """Tables of a (nested) metrics dict.

    Scalars (and lists) of one level form a ``metric | value`` table named by the path of keys;
    a dict whose values are all flat dicts (e.g. ``{"methods": {"kd": {...}, "bkd": {...}}}``)
    becomes one table with a column per inner key (method) and a row per metric (union, in
    order of first appearance; ``-`` where a method lacks it); other dicts are rendered
    recursively.
    """
    scalars = [[key, format_value(v)] for key, v in values.items() if not isinstance(v, dict)]
    tables = [Table(title, ["metric", "value"], scalars)] if scalars else []
    for key, value in values.items():
        if not isinstance(value, dict):
            continue
        name = key if title == "Metrics" else f"{title} / {key}"
        if value and all(_is_flat_dict(inner) for inner in value.values()):
            tables.append(_side_by_side(name, value))
        else:
            tables.extend(metric_tables(value, name))
    return tables


def verdict_of(values: Mapping[str, Any]) -> str | None:
    """The convergence verdict of a run's ``metrics.json``: the demo's ``verdict`` or a fit's
    ``convergence.message`` (``None`` for methods without Markov chains)."""
    if isinstance(values.get("verdict"), str):
        return values["verdict"]
    convergence = values.get("convergence")
    if isinstance(convergence, dict) and isinstance(convergence.get("message"), str):
        return convergence["message"]
    return None


def attribute_table(attrs: Mapping[str, Any]) -> Table:
    """The run attributes of the ``InferenceData`` (method, hyper-parameters, versions, ...)."""
    return Table("Run", ["attribute", "value"], [[k, format_value(v)] for k, v in attrs.items()])


def label_set_table(idata: Any, verdict: str | None = None) -> Table | None:
    """Coverage of the credible label sets of ``posterior.nc``'s draws at each level of
    :data:`pyro_bkd.metrics.LABEL_SET_LEVELS`: the share ``c`` of test inputs whose label
    ``y_test`` lies in the set, its binomial standard error ``sqrt(c (1 - c) / N)``, the mean
    set size and the mean predictive mass of the sets (the coverage a calibrated model
    expects); see :func:`pyro_bkd.metrics.label_set_coverage`. The title carries the run's
    convergence ``verdict`` when there is one. ``None`` without ``probs`` or ``y_test``.
    """
    try:
        group = uq.probs_group(idata)
    except ValueError:
        return None
    constant = getattr(idata, "predictions_constant_data", None)
    if constant is None or "y_test" not in constant.data_vars:
        return None
    rows = metrics.label_set_coverages(group["probs"], constant["y_test"].values)
    body = [
        [
            f"{row.level:.0%}",
            format_value(row.coverage),
            format_value(row.se),
            format_value(row.mean_size),
            format_value(row.mean_mass),
        ]
        for row in rows
    ]
    title = "Credible label sets on the test set"
    if verdict is not None:
        title += f" (chains: {verdict.split(':')[0]})"
    return Table(title, ["level", "coverage", "se", "mean size", "mean mass"], body)


def convergence_table(idata: Any, top: int = TOP_ENTRIES) -> Table | None:
    """ArviZ summary of the ``top`` least-converged entries of ``predictions.probs``.

    Entries are ranked by R-hat (largest first) with two or more chains, else by bulk ESS
    (smallest first); constant entries (undefined diagnostics) and entries whose posterior
    mean is below ``MIN_MASS`` (a negligible class says nothing about the prediction) come
    last. ``None`` when the
    data hold no ``probs`` or no entry has a diagnostic (one chain of fewer than 4 draws, e.g.
    a point estimate).
    """
    import arviz as az

    try:
        group = uq.probs_group(idata)
    except ValueError:
        return None
    probs = uq.as_probs(group["probs"])
    if probs.shape[0] >= 2:
        score, criterion = metrics.rhat(probs), "largest R-hat"
    else:
        score, criterion = -metrics.ess_bulk(probs), "smallest bulk ESS (one chain)"
    if not np.isfinite(score).any():
        return None
    negligible = probs.mean(axis=(0, 1)) < MIN_MASS
    flat = np.where(np.isfinite(score) & ~negligible, score, -np.inf).ravel()
    picked = np.argsort(-flat, kind="stable")[: min(top, flat.size)]
    pairs = [divmod(int(index), probs.shape[3]) for index in picked]
    subset = export.select_pairs(group, pairs)
    summary = az.summary(subset, var_names=["probs"], hdi_prob=0.95, round_to="none")
    rows = [
        [str(label), *(format_value(float(v)) for v in row)] for label, row in summary.iterrows()
    ]
    title = f"Least-converged class probabilities ({criterion})"
    return Table(title, ["entry", *map(str, summary.columns)], rows)


def format_value(value: Any) -> str:
    """Cell text: 4 significant digits for floats, ``-`` for ``None``/NaN, JSON for lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return json.dumps(value, default=str)


def _is_flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, dict) for v in value.values())


def _side_by_side(title: str, columns: Mapping[str, Mapping[str, Any]]) -> Table:
    """One column per inner dict (e.g. per method), one row per metric key."""
    keys = list(dict.fromkeys(key for inner in columns.values() for key in inner))
    body = [[key, *(format_value(inner.get(key)) for inner in columns.values())] for key in keys]
    return Table(title, ["metric", *columns], body)


# --------------------------------------------------------------------------- rendering


def render_html(title: str, tables: Sequence[Table], images: Sequence[Path]) -> str:
    """A self-contained HTML page: inline CSS, figures as base64 ``data:`` URIs."""
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>Generated {created}.</p>",
    ]
    for table in tables:
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        parts.append(_html_table(table))
    if images:
        parts.append("<h2>Plots</h2>")
    for image in images:
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        caption = html.escape(image.stem.replace("_", " "))
        parts.append(
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(
    title: str, tables: Sequence[Table], images: Sequence[Path], run_dir: Path
) -> str:
    """Markdown with pipe tables; figures are linked relative to ``run_dir``."""
    parts = [f"# {title}", ""]
    for table in tables:
        parts += [f"## {table.title}", "", *_markdown_table(table), ""]
    if images:
        parts += ["## Plots", ""]
    for image in images:
        link = image.relative_to(run_dir).as_posix()
        parts += [f"![{image.stem.replace('_', ' ')}]({link})", ""]
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _markdown_table(table: Table) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return (
            "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"
        )

    separator = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(table.header))) + "|"
    return [line(table.header), separator, *(line(row) for row in table.rows)]


def comparison_csv(table: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``pyro-bkd compare``'s table as CSV, one column per key of ``columns`` (empty cells for
    undefined values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return buffer.getvalue()


MARKDOWN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "acc", ".4f"),
    ("nll", "NLL", ".4f"),
    ("brier", "Brier", ".4f"),
    ("ece", "ECE", ".4f"),
    ("md_auroc", "MD-AUROC", ".3f"),
    ("mean_interval_width", "95% width", ".4f"),
    ("set_coverage_95", "95% set cov (se)", ".4f"),
    ("set_size_95", "95% set size", ".2f"),
    ("max_rhat", "max R-hat", ".3f"),
    ("min_ess_bulk", "min ESS", ".0f"),
    ("elpd_test", "ELPD", ".1f"),
    ("elpd_diff", "dELPD (se)", ".1f"),
    ("draws", "draws", "d"),
    ("wall_seconds", "time (s)", ".1f"),
    ("draws_per_second", "draws/s", ".1f"),
)


def comparison_markdown(table: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """``pyro-bkd compare``'s table as a Markdown page: settings, the table, the failures."""
    header = ["method", *(title for _, title, _ in MARKDOWN_COLUMNS)]
    lines = [
        f"# Inference comparison on {settings['dataset']}",
        "",
        f"Teacher {settings['teacher']}, student {settings['student']} "
        f"({settings['student_weights']} weights); {settings['num_train']} training and "
        f"{settings['num_test']} test examples; tau {settings['temperature']:g}, KD alpha "
        f"{settings['kd_alpha']:g} (lam {settings['strength']:g}), weight prior "
        f"Normal(0, {settings['prior_scale']:g}^2); seed {settings['seed']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table:
        if row["status"] != "ok":
            cells = [row["method"], "failed", *([""] * (len(header) - 2))]
        else:
            cells = [row["method"]]
            for key, _, spec in MARKDOWN_COLUMNS:
                value = row.get(key)
                text = "–" if value is None else format(value, spec)
                if key == "elpd_diff" and value is not None:
                    text += f" ({row['elpd_dse']:.1f})"
                if key == "set_coverage_95" and value is not None:
                    text += f" ({row['set_coverage_95_se']:.4f})"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Probabilities are posterior means over the draws. ELPD is the test-set log "
        "predictive density sum_n log qbar(y_n | x_n); dELPD is the gap to the best method "
        "with its paired standard error. Set cov is the share of test inputs whose label lies "
        "in the 95% credible label set (for one draw: the smallest set of top classes with "
        "probability >= 0.95), with its binomial standard error sqrt(c (1 - c) / N); set size "
        "is the mean number of labels in it (90% and 99% are in comparison.csv). Time is each "
        "method's own stage (the Bayesian methods start from the KD student, whose training "
        "time is in the kd row).",
    ]
    failed = [row for row in table if row["status"] != "ok"]
    if failed:
        lines += ["", "Failed methods:", ""]
        lines += [f"- {row['method']}: {row['reason']}" for row in failed]
    return "\n".join(lines) + "\n"
