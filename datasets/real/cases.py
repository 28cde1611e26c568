"""What a format adapter hands the loader: cases that read into (image, mask) frames.

An adapter (cbis_ddsm.py, inbreast.py, ...) scans its root into `Case`s without decoding
pixels; `Case.read()` returns an iterable of `Frame`s (a DBT volume's is lazy: each frame is
decoded when the consumer asks for it, so a worker never holds a whole volume) and raises
`CaseError` naming the file and the reason when the case cannot be used (possibly mid-way).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.real.problems import Problem


@dataclass
class Frame:
    """One 2D image in [0, 1] (bright = dense) with its binary mask and acquisition facts."""

    image: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, float] | None  # None: the file has none (dataset default applies)
    spacing_source: str
    photometric: str
    window: str
    slice: int | None = None  # frame index within a volume


@dataclass
class Case:
    """One image or volume of the dataset, identified by pseudonymous ids only."""

    image_id: str
    patient_id: str
    files: list[str]
    read: Callable[[], Iterable[Frame]]  # frames may be produced lazily, one at a time
    meta: dict[str, Any] = field(default_factory=dict)  # view, laterality, ...
    official_split: str | None = None
    volume: bool = False


class Adapter(abc.ABC):
    """A dataset format: lists its source files and scans them into cases."""

    format: str
    label: str  # the dataset's name in messages, e.g. "CBIS-DDSM"
    default_spacing_mm: float  # used, with a warning, when a file carries no spacing
    spacing_note: str  # where the default comes from

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        self.root = Path(root)
        self.options = dict(options)

    @abc.abstractmethod
    def source_files(self) -> list[Path]:
        """Every file the data depends on (for the fingerprint; no decoding)."""

    @abc.abstractmethod
    def scan(self) -> tuple[list[Case], list[Problem]]:
        """The usable cases and the problems found while listing them (missing files...)."""


def walk_files(root: Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    """All files under `root` (sorted), optionally only those with the given suffixes."""
    keep = None if suffixes is None else {s.lower() for s in suffixes}
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if keep is None or p.suffix.lower() in keep:
                out.append(p)
    return sorted(out)
