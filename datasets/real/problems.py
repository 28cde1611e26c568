"""Problems found in a dataset: one file and one reason each, collected, never fatal alone.

Adapters raise `CaseError` for a case that cannot be used; the loader and `bench data verify`
collect them as `Problem`s so the rest of the dataset stays usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """A file (relative to the dataset root where possible) and why it was excluded."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class CaseError(Exception):
    """One case (image or volume) cannot be used; carries the file and the reason."""

    def __init__(self, file: str | Path, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.problem = Problem(str(file), reason)


def rel(path: Path, root: Path) -> str:
    """`path` relative to `root` when it lies under it (keeps reports short), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def why(exc: BaseException) -> str:
    """A short reason from an exception: its type and the first line of its message."""
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
