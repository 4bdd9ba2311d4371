"""Atomic file writes: a file is either the old complete one or the new complete one.

Everything the project writes (archives, checkpoints, histories, predictions,
figures) goes through :func:`atomic_path` or one of the small wrappers below. The
data is written to a temporary file in the same folder, flushed and fsynced, then
moved over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows. An interrupted write leaves at most a ``.tmp-*`` file, never a
half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; move it onto ``dest`` on success.

    The caller writes the temporary file by any means (``model.save``,
    ``fig.savefig``...). If the block raises, the temporary file is removed and
    ``dest`` is untouched. ``suffix`` defaults to ``dest``'s own suffix, because
    some writers (Keras, matplotlib) choose the format from it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=TMP_PREFIX + dest.name + ".", suffix=dest.suffix if suffix is None else suffix, dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written; {dest} is left unchanged")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically and return ``dest`` as a Path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``dest`` atomically and return ``dest`` as a Path."""
    return write_bytes(dest, text.encode(encoding))


def write_json(dest: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``dest`` atomically."""
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


__all__ = ["TMP_PREFIX", "atomic_path", "write_bytes", "write_json", "write_text"]
