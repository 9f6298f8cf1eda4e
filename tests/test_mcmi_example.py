"""Smoke test of ``examples/mcmi_fewshot.py --quick --datasets digits`` (MCMI teachers, SPEC §6)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
SCRIPT = REPO / "examples" / "mcmi_fewshot.py"
# --quick runs one seed: a mean without "± sd" (the sd of one value is undefined).
PERCENT = re.compile(r"(\d+\.\d{2})")


def _rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the Markdown table whose header starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_quick_digits_table(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept text\n", encoding="utf-8")
    proc = subprocess.run(
        [str(PYTHON), str(SCRIPT), "--quick", "--datasets", "digits", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    assert "kept text" in text  # --out only replaces its own block
    assert "<!-- mcmi_fewshot:begin -->" in text and "<!-- mcmi_fewshot:end -->" in text

    teachers = _rows(text, "| data set | teacher |")
    assert [row[1] for row in teachers] == ["MLL", "MCMI"]
    for row in teachers:
        assert 0 <= float(row[2]) / 100 <= 1
        assert float(row[3]) >= 0

    students = _rows(text, "| data set | setting |")
    # quick defaults: fractions 0.1 and 1.0, one zero-shot setting, two teachers each
    assert len(students) == 6
    assert {row[2] for row in students} == {"MLL", "MCMI"}
    for row in students:
        assert row[0] == "digits"
        accuracies = [PERCENT.fullmatch(cell) for cell in row[3:5]]
        assert all(accuracies), row
        for match in accuracies:
            assert 0 <= float(match.group(1)) / 100 <= 1
        if row[1].startswith("zero-shot"):
            omitted = [PERCENT.fullmatch(cell) for cell in row[5:7]]
            assert all(omitted), row
            assert all(0 <= float(m.group(1)) / 100 <= 1 for m in omitted)
        else:
            assert row[5:7] == ["–", "–"]
