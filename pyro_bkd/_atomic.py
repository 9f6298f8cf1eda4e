"""Atomic file replacement: a reader of ``path`` sees the old file or the new one, never a part.

Every writer goes to a fresh temporary name in the directory of ``path`` (so the final
:func:`os.replace` is a rename within one file system, atomic on POSIX and Windows), is flushed
to disk, and only then replaces ``path``. On any failure the temporary file is removed and
``path`` is left as it was. The temporary file is created by the writer itself with the default
permissions, so the result has the same mode as a file written directly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
