"""Tests of the figures and of the HTML/Markdown report of a run directory."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from pyro_bkd import export, metrics, plots, report, uq

# ArviZ 0.23's matplotlib backend calls an API deprecated in matplotlib 3.11; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _draws(chains: int, draws: int, num_obs: int, num_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.5, 5.0, size=(num_obs, num_classes))
    gamma = rng.gamma(alpha, size=(chains, draws, num_obs, num_classes))
    return gamma / gamma.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = _draws(3, 40, 30, 4, seed=0)
    y = np.random.default_rng(1).integers(0, 4, size=30)
    return probs, y, probs[0, 0]


def _check_figure(figure: Figure, tmp_path: Path, name: str) -> None:
    """A figure with titled, labelled axes that renders to PNG."""
    assert isinstance(figure, Figure) and figure.axes
    assert figure.get_suptitle() or figure.axes[0].get_title()
    assert any(axes.get_xlabel() for axes in figure.axes)
    path = tmp_path / f"{name}.png"
    figure.savefig(path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_reliability_diagram(data: tuple, tmp_path: Path) -> None:
    probs, y, _ = data
    figure = plots.reliability_diagram(probs, y)
    _check_figure(figure, tmp_path, "reliability")
    ece = metrics.expected_calibration_error(probs, y)
    assert f"ECE = {ece:.3f}" in figure.axes[0].get_title()
    assert len(figure.axes[1].patches) == metrics.NUM_BINS


def test_ranking_curves(data: tuple, tmp_path: Path) -> None:
    probs, y, _ = data
    figure = plots.ranking_curves({"bkd": probs, "kd": probs[:1, :1]}, y)
    _check_figure(figure, tmp_path, "ranking")
    assert [line.get_label() for line in figure.axes[0].lines] == ["bkd", "kd"]


def test_deviance_vs_noise(tmp_path: Path) -> None:
    levels = [0.0, 0.1, 0.2]
    per_input = np.random.default_rng(2).random((3, 10)) + np.arange(3)[:, None]
    figure = plots.deviance_vs_noise(levels, {"kd": [0.5, 0.8, 1.0], "bkd": per_input})
    _check_figure(figure, tmp_path, "noise")
    assert len(figure.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(ValueError, match=r"deviance_by_method\['kd'\] must have shape \(3,\)"):
        plots.deviance_vs_noise(levels, {"kd": [0.5, 0.8]})


def test_interval_forest(data: tuple, tmp_path: Path) -> None:
    probs, y, p_true = data
    figure = plots.interval_forest(probs, [0, 5, 7], y=y, p_true=p_true, level=0.9, kind="eti")
    _check_figure(figure, tmp_path, "forest")
    assert len(figure.axes) == 3
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match=r"obs must be a non-empty list of indices in \[0, 30\)"):
        plots.interval_forest(probs, [30])
    with pytest.raises(ValueError, match="level must be in"):
        plots.interval_forest(probs, [0], level=1.0)


def test_trace_and_rank_plots(data: tuple, tmp_path: Path) -> None:
    probs, _, _ = data
    pairs = [(0, 1), (3, 2)]
    trace = plots.trace_plot(probs, pairs)
    _check_figure(trace, tmp_path, "trace")
    assert len(trace.axes) == 4 and "obs=3, label=2" in trace.axes[2].get_title()
    rank = plots.rank_plot(probs, [*pairs, (4, 0), (5, 0)])
    _check_figure(rank, tmp_path, "rank")
    assert sum(axes.get_visible() for axes in rank.axes) == 4
    assert not plt.get_fignums()  # ArviZ drew into our axes: nothing left open in pyplot


# --------------------------------------------------------------------------- report


def _run_dir(tmp_path: Path, probs: np.ndarray, y: np.ndarray) -> Path:
    """A run directory as the CLI writes it: metrics.json, posterior.nc, plots/*.png."""
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    values = {
        "dataset": "toy",
        "wall_time_s": 1.5,
        "methods": {
            "kd": metrics.summarize(probs[:1, :1], y),
            "bkd": metrics.summarize(probs, y),
        },
        "teacher": {"mll": {"accuracy": 0.9}, "notes": {"depth": {"x": 1}}},
    }
    (run / "metrics.json").write_text(json.dumps(values))
    idata = export.to_inference_data(probs, y_test=y, attrs={"method": "sgld", "seed": 0})
    export.save(idata, run / "posterior.nc")
    plots.reliability_diagram(probs, y).savefig(run / "plots" / "reliability.png")
    plots.ranking_curves({"bkd": probs}, y).savefig(run / "plots" / "ranking_curve.png")
    return run


def test_report_embeds_plots_and_tables(data: tuple, tmp_path: Path) -> None:
    probs, y, _ = data
    run = _run_dir(tmp_path, probs, y)
    (run / "report.html").write_text("old report")
    html_path, md_path = report.write_report(run)
    assert sorted(p.name for p in run.iterdir()) == [
        "metrics.json",
        "plots",
        "posterior.nc",
        "report.html",
        "report.md",
    ]
    page = html_path.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in images)
    for text in ("<h2>methods</h2>", "bkd", "<h2>Run</h2>", "sgld", "teacher / notes"):
        assert text in page
    markdown = md_path.read_text(encoding="utf-8")
    assert "![ranking curve](plots/ranking_curve.png)" in markdown
    assert "| metric | kd | bkd |" in markdown
    assert "| set_coverage_95 |" in markdown  # from metrics.summarize
    # The label-set table from posterior.nc: the coverage of the 95% sets, recomputed.
    assert "## Credible label sets on the test set" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| 95% |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    mask = uq.credible_sets(probs, 0.95)
    assert float(cells[1]) == pytest.approx(mask[np.arange(y.size), y].mean(), abs=5e-4)
    assert float(cells[3]) == pytest.approx(mask.sum(1).mean(), rel=1e-3)


def test_report_convergence_table_lists_largest_rhat(data: tuple, tmp_path: Path) -> None:
    """Pull chain 0 of input 2 halfway to class 1: entry (2, 1) moves most, so it has the
    largest R-hat."""
    probs, y, _ = data
    shifted = probs.copy()
    shifted[0, :, 2] = 0.5 * shifted[0, :, 2] + 0.5 * np.eye(4)[1]
    idata = export.to_inference_data(shifted, y_test=y)
    table = report.convergence_table(idata)
    assert table is not None and len(table.rows) == report.TOP_ENTRIES
    assert table.rows[0][0] == "probs[obs=2, label=1]"
    rhat = [float(row[table.header.index("r_hat")]) for row in table.rows]
    assert rhat == sorted(rhat, reverse=True)
    one_chain = report.convergence_table(export.to_inference_data(probs[:1]), top=3)
    assert one_chain is not None and "bulk ESS" in one_chain.title and len(one_chain.rows) == 3
    assert report.convergence_table(export.to_inference_data(probs[:1, :1])) is None


def test_report_needs_metrics_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run_dir must contain metrics\.json"):
        report.write_report(tmp_path)


def test_report_without_posterior_or_plots(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "coverage": None}))
    html_path, md_path = report.write_report(tmp_path)
    assert "data:image" not in html_path.read_text(encoding="utf-8")
    assert "| coverage | - |" in md_path.read_text(encoding="utf-8")


def test_metric_tables_render_nested_dicts() -> None:
    tables = report.metric_tables(
        {"a": 1, "methods": {"kd": {"acc": 0.5}, "bkd": {"acc": 0.6, "ece": 0.01}}}
    )
    assert [t.title for t in tables] == ["Metrics", "methods"]
    assert tables[1].header == ["metric", "kd", "bkd"]
    assert tables[1].rows == [["acc", "0.5", "0.6"], ["ece", "-", "0.01"]]


def test_write_marked_section_replaces_only_its_block(tmp_path: Path) -> None:
    from pyro_bkd.report import write_marked_section

    page = tmp_path / "results.md"
    write_marked_section(page, "a", "first")
    assert page.read_text() == "<!-- a:begin -->\nfirst\n<!-- a:end -->\n"
    write_marked_section(page, "b", "| x |\n")
    page.write_text("# Results\n\n" + page.read_text() + "\nnotes\n")
    write_marked_section(page, "a", "second")
    text = page.read_text()
    assert text.startswith("# Results\n\n<!-- a:begin -->\nsecond\n<!-- a:end -->")
    assert "first" not in text and "<!-- b:begin -->\n| x |\n<!-- b:end -->" in text
    assert text.endswith("\nnotes\n")


def test_mean_sd_formats_seeds() -> None:
    from pyro_bkd.report import mean_sd

    assert mean_sd([0.9, 0.92, None], scale=100) == "91.00 ± 1.41"  # sd of (90, 92) = sqrt(2)
    assert mean_sd([0.5], digits=3) == "0.500"  # one value: no sd
    assert mean_sd([None]) == "–"
