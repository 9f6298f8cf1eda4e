"""The README's Python quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from pyro_bkd.cli import build_parser

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


def test_readme_commands_exist_as_written():
    """``make demo``/``make test`` are Makefile targets (CI runs ``make test``), and every flag
    of the README's command-line synopsis is a flag of that ``pyro-bkd`` subcommand."""
    text = README.read_text()
    root = README.parent
    targets = re.findall(r"^(\w+):", (root / "Makefile").read_text(), flags=re.MULTILINE)
    for command in ("make demo", "make test"):
        assert command in text and command.split()[1] in targets, command
    assert "make test" in (root / ".ci" / "run").read_text()
    synopsis = re.search(r"## Command line\n\n```\n(.*?)```", text, flags=re.DOTALL)
    assert synopsis, "the README's command-line synopsis"
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    lines = re.findall(r"^pyro-bkd (\w+)(.*(?:\n {10,}.*)*)", synopsis.group(1), re.MULTILINE)
    assert {name for name, _ in lines} == set(subcommands)  # every subcommand, shown once
    for name, rest in lines:
        known = {flag for action in subcommands[name]._actions for flag in action.option_strings}
        flags = set(re.findall(r"--[a-z][a-z-]*", rest.split("#")[0]))
        assert flags and flags <= known, (name, flags - known)
