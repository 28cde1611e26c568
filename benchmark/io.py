"""Atomic file writes (temp file in the same folder + os.replace) and a per-folder lock.

Every result file is written this way so a killed process never leaves a half-written file,
and read-modify-write updates of one run folder are serialised with an flock. The content is
serialised in memory first, so its size is known: a folder without room for it is a one-line
UserError naming the folder and the space needed (torch.save on a full disk raises a bare
RuntimeError, "unexpected pos", rather than an OSError), and nothing is left under the final
name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from benchmark.errors import UserError


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(fh)` into memory, then put the bytes in a temp file next to `path`, fsync,
    and rename it over `path`; a full disk is a UserError (see the module docstring)."""
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getbuffer()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space(path, len(data)) from None
        raise
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(path, len(data)) from None
        raise


def _no_space(path: Path, needed: int) -> UserError:
    """The one-line error for a write that does not fit on its filesystem."""
    try:
        free = f"{_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    return UserError(f"no space left in '{path.parent}': writing {path.name} needs "
                     f"{_size(needed)} ({free}); free some space and run the same command "
                     "again (finished work is kept)")


def _size(n: int) -> str:
    """Bytes in the largest unit that keeps the number >= 1 (B, KiB, MiB, GiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive advisory lock on `folder/.lock` for read-modify-write sequences."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
