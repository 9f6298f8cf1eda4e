"""Atomic file replacement and staged output folders: a reader sees old files or new ones,
never a part, and an output folder holds one run's complete set (:func:`staged_output`).

Every writer goes to a fresh temporary name in the directory of ``path`` (so the final
:func:`os.replace` is a rename within one file system, atomic on POSIX and Windows), is flushed
to disk, and only then replaces ``path``. On any failure the temporary file is removed and
``path`` is left as it was. The temporary file is created by the writer itself with the default
permissions, so the result has the same mode as a file written directly.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path``.

    The caller writes a complete file at the yielded path (any library that takes a file name
    will do). The file is fsynced before the rename. If the block raises, the temporary file is
    deleted and the exception propagates.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` atomically by a file holding ``data``; returns ``Path(path)``."""
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` atomically by a UTF-8 file holding ``text``; returns ``Path(path)``."""
    return write_bytes(path, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


#: Written last into a finished output folder: the run that wrote it and each file's digest.
MANIFEST = "manifest.json"
STAGING_SUFFIX = ".staging"
#: Free space kept in reserve beyond a file's estimated size (:func:`ensure_space`).
SPACE_MARGIN = 16 * 2**20


@contextmanager
def staged_output(out: str | os.PathLike[str], run: Mapping[str, Any]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; on a clean exit its files move into ``out``.

    The caller writes every output file under the yielded folder. On a clean exit a
    :data:`MANIFEST` naming the run (``run`` and a unique ``id``) and each file's SHA-256 is
    added and the set is moved into
    place: by one rename when ``out`` does not exist yet; otherwise the old manifest is removed
    first, each file replaces its namesake (other files in ``out`` are left alone) and the new
    manifest comes last, so a folder with a manifest always holds one run's complete set. If
    the block raises, the staging folder and any parent folders this call created are removed
    and ``out`` is untouched. Staging folders of dead processes and temporary files left in
    ``out`` by interrupted runs are removed first.
    """
    target = Path(out)
    created = _make_parents(target.parent)
    _remove_leftovers(target)
    run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = target.parent / f".{target.name[:100]}.{run_id}{STAGING_SUFFIX}"
    try:
        staging.mkdir()
        yield staging
        _write_manifest(staging, {"id": run_id, **run})
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with suppress(OSError):
                folder.rmdir()
        raise


def ensure_space(path: str | os.PathLike[str], nbytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` unless ``path``'s file system has ``nbytes`` free and a margin.

    For writers that cannot fail cleanly on a full disk (HDF5 may crash the process).
    """
    folder = Path(path).parent
    free = shutil.disk_usage(folder).free
    if free < nbytes + SPACE_MARGIN:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space to write {Path(path).name}: about "
            f"{(nbytes + SPACE_MARGIN) / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free",
            os.fspath(folder),
        )


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(exist_ok=True)
    return list(reversed(missing))


def _remove_leftovers(target: Path) -> None:
    """Remove staging folders of dead processes beside ``target`` and ``.tmp`` files in it."""
    for staging in target.parent.glob(f".{glob.escape(target.name[:100])}.*{STAGING_SUFFIX}"):
        pid = staging.name[len(target.name[:100]) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
    if target.is_dir():
        for temporary in [*target.glob(".*.tmp"), *target.glob("*/.*.tmp")]:
            temporary.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _write_manifest(staging: Path, run: Mapping[str, Any]) -> None:
    files = {
        p.relative_to(staging).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _files(staging)
    }
    manifest = {"run": dict(run), "files": files}
    write_text(staging / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def _commit(staging: Path, target: Path) -> None:
    """Move the files of ``staging`` into ``target`` (see :func:`staged_output`)."""
    if not target.exists():
        os.rename(staging, target)
        return
    (target / MANIFEST).unlink(missing_ok=True)
    for file in _files(staging):
        relative = file.relative_to(staging)
        if relative.as_posix() == MANIFEST:
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target / relative)
    os.replace(staging / MANIFEST, target / MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)
