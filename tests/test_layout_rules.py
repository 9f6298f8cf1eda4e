"""Layout rules of the code base: short functions in the jobs, so each reads as its stages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The longest function allowed in ``pyro_bkd/pipeline/`` and ``pyro_bkd/cli.py``: lines from
#: ``def`` to the last line of the body, docstring included.
MAX_LINES = 60


def _function_lengths(source: str) -> list[tuple[str, int, int]]:
    """``(name, first line, length in lines)`` of every function, nested ones included."""
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_in_the_pipeline_or_the_cli_is_longer_than_the_limit() -> None:
    files = [*sorted((ROOT / "pyro_bkd" / "pipeline").glob("*.py")), ROOT / "pyro_bkd" / "cli.py"]
    assert len(files) > 2
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in files
        for name, line, length in _function_lengths(path.read_text())
        if length > MAX_LINES
    ]
    assert not long, "split these into stages:\n" + "\n".join(long)


def test_lengths_count_from_def_to_the_last_line_of_the_body() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    source = f'def short():\n    """Doc."""\n    return 1\n\n\ndef long():\n{body}\n'
    assert _function_lengths(source) == [("short", 1, 3), ("long", 6, 62)]
