"""The README's Python quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2, "every python block of the README must be run by a test here"
    return blocks


def test_readme_quickstart_runs_and_is_reproducible():
    """The quickstart as written, twice: the seeds fix everything (the identical numbers
    also show the initial weights are seeded); then the second block (``pyro.infer.MCMC``
    with the HMC kernel) on the first block's model."""
    blocks = _python_blocks()
    runs = []
    for _ in range(2):
        namespace: dict = {}
        exec(compile(blocks[0], "README quickstart", "exec"), namespace)
        runs.append(namespace)
    probs = runs[0]["probs"]
    assert probs.shape[:2] == (2, 100)
    assert float(runs[0]["accuracy"]) > 0.85
    assert torch.equal(probs, runs[1]["probs"])
    namespace = runs[0]
    exec(compile(blocks[1], "README MCMC block", "exec"), namespace)
    draws = namespace["mcmc"].get_samples()
    assert set(draws) == set(namespace["model"].site_names)
    assert all(torch.isfinite(v).all() for v in draws.values())


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
