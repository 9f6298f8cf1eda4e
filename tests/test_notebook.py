"""``examples/compare_inference.ipynb`` runs headless (quick budget) and is committed clean."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "compare_inference.ipynb"
METHODS = ("SGLD", "pSGLD", "SVI mean-field", "SVI low-rank", "MAP")
KERNEL = "python3"
# Appended to the in-memory copy only: which interpreter did the kernel run?
PROBE = "import sys\nprint(sys.prefix)\nprint(sys.executable)"


def kernel_manager_class(kernel_dir: Path) -> type[AsyncKernelManager]:
    """A kernel manager that finds kernelspecs in ``kernel_dir`` only.

    A ``python3`` kernelspec found on the Jupyter path may start another interpreter (the one
    shipped in the venv runs ``python`` from ``PATH``); the spec written by ipykernel's
    ``install`` runs ``sys.executable``, the interpreter running the tests.
    """

    class VenvKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)

    return VenvKernelManager


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or returned, as text (plain and HTML)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        for mime in ("text/plain", "text/html"):
            parts.append(str(output.get("data", {}).get(mime, "")))
    return "".join(parts)


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]


def test_progress_bars_are_plain_tqdm() -> None:
    """The library's own bars are ``tqdm.std.tqdm`` (text, in notebooks too), never
    ``tqdm.auto``, which needs ipywidgets in a kernel."""
    import tqdm.std

    from pyro_bkd import distill, teachers
    from pyro_bkd.infer import driver, svi

    for module in (distill, teachers, driver, svi):
        assert module.tqdm is tqdm.std.tqdm, module.__name__


def test_notebook_runs_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits the environment of this process.
    monkeypatch.setenv("PYRO_BKD_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    install_kernelspec(kernel_name=KERNEL, prefix=str(tmp_path))
    kernel_dir = tmp_path / "share" / "jupyter" / "kernels"
    assert (kernel_dir / KERNEL / "kernel.json").is_file()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name=KERNEL,
        kernel_manager_class=kernel_manager_class(kernel_dir),
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        assert not errors, f"{cell.source[:80]!r}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert cell.execution_count is not None, cell.source[:80]
        # `import pyro` imports tqdm.auto, which warns in a kernel without ipywidgets (the
        # notebook extra installs it); the notebook does not filter that warning.
        assert "IProgress" not in text_of(cell), cell.source[:80]
    prefix, executable = text_of(code[-1]).split()
    assert (prefix, executable) == (sys.prefix, sys.executable)
    table = text_of(tagged(nb, "comparison-table"))
    for method in METHODS:
        assert method in table
    comparison = text_of(tagged(nb, "elpd-comparison"))
    assert "elpd_diff" in comparison
    for method in METHODS:  # the held-out ELPD is defined for a single draw (MAP) too
        assert method in comparison
