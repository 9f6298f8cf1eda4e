"""The example scripts run end to end (``--quick``) and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("linear-binary", "nonlinear-binary", "linear-5class", "nonlinear-5class")


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``examples/<name>`` with the interpreter running the tests (the project's venv)."""
    return run_script(f"examples/{name}", *args, timeout=timeout)


def run_script(path: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the repo's script ``path`` on one thread with the tests' interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table_rows(text: str) -> list[list[str]]:
    """Cells of the Markdown table rows in ``text`` (header and separator included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def tables(text: str) -> list[list[list[str]]]:
    """Each Markdown table of ``text`` (consecutive ``|`` lines) as :func:`table_rows`."""
    blocks, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(table_rows("\n".join(current)))
            current = []
    return blocks


def test_synthetic_coverage_quick_prints_one_row_per_scenario(tmp_path: Path) -> None:
    out = tmp_path / "coverage.md"
    proc = run_example("synthetic_coverage.py", "--quick", "--seed", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, separator, *rows = table_rows(proc.stdout)
    assert header[0] == "scenario"
    assert all(re.fullmatch(r"-+:?", cell) for cell in separator)
    assert [row[0] for row in rows] == list(SCENARIOS)
    coverage = header.index("BKD coverage")
    width = header.index("BKD width")
    for row in rows:
        assert len(row) == len(header)
        assert 0.0 <= float(row[coverage]) <= 1.0
        assert 0.0 <= float(row[width]) <= 1.0
        for column in ("BKD acc", "KD acc", "KD ECE", "KD MAE(q,p*)"):
            assert 0.0 <= float(row[header.index(column)]) <= 1.0
    # The file written by --out holds the printed table.
    assert out.read_text() == proc.stdout


def test_paper_table_quick_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept\n")
    runs = tmp_path / "runs"

    def paper_table(*extra: str) -> subprocess.CompletedProcess:
        argv = ["--quick", "--datasets", "digits", "--seeds", "0", "1", *extra]
        return run_script(
            "benchmarks/paper_table.py", *argv, "--out", str(out), "--runs", str(runs)
        )

    proc = paper_table()
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Results\n\nkept\n")
    assert "<!-- paper_table:begin -->" in text and "<!-- paper_table:end -->" in text
    (header, _, *rows), (set_header, _, *set_rows) = tables(text)
    assert header[:2] == ["data set", "method"]
    names = [row[1] for row in rows]
    assert names == [
        "teacher",
        "student alone",
        "KD",
        "KD + BNN (SVI mean-field)",
        "KD + MC dropout",
        "KD deep ensemble",
        "BKD (SGHMC)",
        "BKD (SGLD)",
        "BKD (pSGLD)",
    ]
    accuracy, verdict = header.index("acc (%)"), header.index("verdict")
    for row in rows:  # no method fails at this budget (the repaired pSGLD included)
        assert "failed" not in row[header.index("time (s)")], row
        mean, sd = (float(part) for part in row[accuracy].split(" ± "))
        assert 0 <= mean <= 100 and sd >= 0
        markov = row[1].startswith("BKD")
        assert (row[verdict] != "–") == markov, row  # chains carry their verdict
        if markov:
            assert row[verdict].endswith("(2/2)") or ", " in row[verdict], row
    # The label-set table: every method, coverage in % with the binomial se in brackets.
    assert set_header[2:5] == ["set cov 90% (%)", "set cov 95% (%)", "set cov 99% (%)"]
    assert [row[1] for row in set_rows] == names
    for row in set_rows:
        for cell in row[2:5]:
            match = re.fullmatch(r"(\d+\.\d+)( ± \d+\.\d+)? \[(\d+\.\d+)\]", cell)
            assert match and 0 <= float(match[1]) <= 100 and float(match[3]) >= 0, row
        assert (row[-1] != "–") == row[1].startswith("BKD"), row
    runs_csv = (runs / "paper_table.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + 2 * 9  # header + 2 seeds x 9 rows
    assert "set_coverage_95" in runs_csv[0].split(",")
    # --resume reuses both completed runs: no run redone, the same table.
    finished = runs / "digits" / "seed0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    resumed = paper_table("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert finished.stat().st_mtime_ns == stamp
    assert tables(out.read_text())[0][2:] == rows
    # Coverage against test-set size from the stored draws of those runs, with its figure.
    plot = tmp_path / "figures" / "size.png"
    by_size = run_script(
        "benchmarks/coverage_by_size.py",
        *("--dataset", "digits", "--runs", str(runs), "--seeds", "0", "1"),
        *("--sizes", "16", "32", "64", "--out", str(out), "--plot", str(plot)),
    )
    assert by_size.returncode == 0, by_size.stderr[-3000:]
    assert "<!-- coverage_by_size:begin -->" in out.read_text()
    size_header, _, *size_rows = tables(out.read_text())[-1]
    assert size_header[1:4] == ["m = 16", "m = 32", "m = 64"]
    assert [row[0] for row in size_rows] == names
    assert plot.read_bytes()[:4] == b"\x89PNG" and "(figures/size.png)" in out.read_text()


def test_coverage_vs_strength_quick_writes_tables_and_plot(tmp_path: Path) -> None:
    """Coverage against lam and T on one synthetic scenario, the validation choice, the plot."""
    out, plot = tmp_path / "results.md", tmp_path / "figures" / "strength.png"
    proc = run_example("coverage_vs_strength.py", "--quick", "--out", str(out), "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "<!-- coverage_vs_strength:begin -->" in text
    (header, _, *rows), (choice_header, _, *choices) = tables(text)
    lam, verdict = header.index("lam"), header.index("verdict")
    assert [row[lam] for row in rows] == ["144", "0", "144", "144"]  # KD, lam grid, T
    assert rows[0][verdict] == "–" and all(row[verdict] != "–" for row in rows[1:])
    for row in rows:
        coverage = row[header.index("test set cov (%) ± se")]
        assert re.fullmatch(r"\d+\.\d ± \d+\.\d", coverage), row
        p_cov = row[header.index("test p* cov (%)")]
        assert p_cov == "n/a" if row[1].startswith("KD") else 0 <= float(p_cov) <= 100
    assert [row[0] for row in choices] == ["nonlinear-5class"]
    chosen_lam = choices[0][choice_header.index("chosen lam (val cov %)")].split()[0]
    assert chosen_lam in {"0", "144"}
    assert plot.read_bytes()[:4] == b"\x89PNG" and "(figures/strength.png)" in text


def test_mcmi_dose_response_quick_measures_teachers_and_students(tmp_path: Path) -> None:
    out, plot = tmp_path / "results.md", tmp_path / "dose.png"
    proc = run_example("mcmi_dose_response.py", "--quick", "--out", str(out), "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (header, _, *teachers), (_, _, *students) = tables(out.read_text())
    assert [row[2] for row in teachers] == ["–", "0", "0.4"]  # start, control, MCMI
    control = teachers[1]
    assert control[header.index("vs w = 0 control")] == "+0.0000"
    cmi_values = [float(row[header.index("train CMI (nats)")]) for row in teachers]
    assert all(0 < value < 2.31 for value in cmi_values)  # 0 < CMI < log 10
    assert len(students) == 4  # (few-shot, zero-shot) x (w = 0, 0.4)
    for row in students:
        assert 0 <= float(row[4]) <= 100 and 0 <= float(row[5]) <= 100
        assert re.fullmatch(r"(converged|borderline|not converged|failed) \(1/1\)", row[-1])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_mcmi_dose_response_paper_scale_config_builds_its_networks() -> None:
    """The documented GPU command's configuration (not run here): resnet56 -> resnet20 on
    CIFAR-shaped inputs, the authors' schedule lengths."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "mcmi_dose_response", ROOT / "examples" / "mcmi_dose_response.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--paper-scale", "--device", "cuda", "--datasets", "cifar10-subset", "--lengths", "20"]
    args = module.parse_args(argv)
    config = module.config_for("cifar10-subset", args)
    assert (config.teacher, config.student) == ("resnet56", "resnet20")
    assert (config.teacher_epochs, config.mcmi_epochs) == (240, 20)
    x = torch.zeros(2, 3, 32, 32)
    for name, kwargs in ((config.teacher, config.teacher_kwargs), (config.student, {})):
        net = module.base.build(name, {**kwargs, **config.student_kwargs}, 10, seed=0).eval()
        assert net(x).shape == (2, 10)
