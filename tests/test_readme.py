"""The README's Python quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README has no python block"
    namespace: dict = {}
    exec(compile(blocks[0], "README quickstart", "exec"), namespace)
    probs = namespace["probs"]
    assert probs.shape[:2] == (2, 50)
    assert float(namespace["accuracy"]) > 0.85


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
