"""The installed layout: the repository's ``models/`` folder installs as ``pyro_bkd.models``, and
nothing named ``models`` lands in site-packages to shadow a user's own ``models.py``.

The check installs the project for real (``pip install``, not editable) into a new virtual
environment. So as not to reinstall torch, that environment sees the test interpreter's
site-packages through a ``.pth`` line: a directory added that way is searched for modules but
its own ``.pth`` files are not run, so the editable finder of a development install stays
inactive and only the freshly built wheel provides ``pyro_bkd``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What a source distribution holds: enough to build the wheel.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "pyro_bkd", "models")


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(python, site_packages)`` of a new venv with pyro-bkd pip-installed from a copy of the
    sources (the work tree stays free of build folders)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "test_interpreter.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(source)],
        cwd=root, env=env, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return python, site


def test_models_installs_under_the_library_namespace(installed: tuple[Path, Path]) -> None:
    python, site = installed
    assert not (site / "models").exists() and not (site / "models.py").exists()
    assert (site / "pyro_bkd" / "models" / "mlp.py").is_file()
    cwd = site.parents[3]  # the venv's root: no models/ folder there
    failed = _run(python, "import models", cwd)
    assert failed.returncode != 0
    assert "No module named 'models'" in failed.stderr
    works = _run(
        python,
        "import pyro_bkd, pyro_bkd.models as m\n"
        "print(pyro_bkd.__file__)\n"
        "print(type(m.build('mlp', 3, in_features=4, hidden=(5,))).__name__)",
        cwd,
    )
    assert works.returncode == 0, works.stderr
    location, network = works.stdout.split()
    assert Path(location).is_relative_to(site)  # the installed copy, not the work tree
    assert network


def test_a_users_models_py_is_not_shadowed(installed: tuple[Path, Path], tmp_path: Path) -> None:
    """The issue's case: a ``models.py`` in the working directory next to the quickstart."""
    python, _ = installed
    (tmp_path / "models.py").write_text("WHO = 'user'\n")
    result = _run(
        python,
        "import models\nfrom pyro_bkd import models as library\n"
        "print(models.WHO, callable(library.build))",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["user", "True"]
