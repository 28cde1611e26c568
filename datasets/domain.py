"""The Domain contract: a named source of samples, synthetic or real, loaded as arrays.

A Domain turns its source (generator parameters, DICOM files...) into a `DomainData` at the
requested square image size, cached as a shard store (datasets/shards.py) read lazily.
Images are float32 in [0, 1], bright = dense/calcification (MONOCHROME2), masks uint8
{0, 1}; spacing is (row, col) mm in the returned pixel grid.
"""

from __future__ import annotations

import abc
import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.shards import LazyArray


@dataclass
class DomainData:
    """All samples of one domain at one image size. `images` and `masks` are numpy arrays or,
    when read from the cache, `LazyArray`s that read only the rows asked for (so a domain
    larger than RAM trains); index them with the rows you need, never whole."""

    domain: str
    images: np.ndarray | LazyArray  # (N, H, W) float32 in [0, 1]
    masks: np.ndarray | LazyArray  # (N, H, W) uint8 in {0, 1}
    spacing_mm: np.ndarray  # (N, 2) float64, (row, col) mm per pixel of `images`
    patient_ids: list[str]
    image_ids: list[str]
    meta: list[dict[str, Any]] = field(default_factory=list)  # view, laterality, slice...
    official_split: list[str] | None = None  # "train"/"test" where the dataset defines one

    def __post_init__(self) -> None:
        n = len(self.images)
        if not self.meta:
            self.meta = [{} for _ in range(n)]
        lengths = {
            "masks": len(self.masks),
            "spacing_mm": len(self.spacing_mm),
            "patient_ids": len(self.patient_ids),
            "image_ids": len(self.image_ids),
            "meta": len(self.meta),
        }
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"domain {self.domain}: {n} images but {bad}")

    def __len__(self) -> int:
        return len(self.images)

    def neighbour_index(self, i: int, depth: int) -> tuple[np.ndarray, bool]:
        """Indices of the `depth` slices centred on image `i`, and whether they are real.

        Images of one volume share meta["volume_id"] and are ordered by meta["slice"]; at a
        volume's edge the nearest slice is repeated. Images with no volume get themselves
        `depth` times (the slice-replicated input), flagged False.
        """
        volumes = self._volumes()
        vid = self.meta[i].get("volume_id")
        members = volumes.get(vid) if vid not in (None, "") else None
        if not members or len(members) < 2:
            return np.full(depth, i, dtype=np.int64), False
        pos = members.index(i)
        offsets = np.arange(depth) - depth // 2
        picks = np.clip(pos + offsets, 0, len(members) - 1)
        return np.asarray([members[p] for p in picks], dtype=np.int64), True

    def _volumes(self) -> dict[Any, list[int]]:
        """volume_id -> image indices ordered by slice (computed once)."""
        cached = self.__dict__.get("_volume_cache")
        if cached is None:
            groups: dict[Any, list[int]] = {}
            for j, m in enumerate(self.meta):
                if m.get("volume_id") not in (None, ""):
                    groups.setdefault(m["volume_id"], []).append(j)
            cached = {v: sorted(ix, key=lambda j: float(self.meta[j].get("slice", 0)))
                      for v, ix in groups.items()}
            self.__dict__["_volume_cache"] = cached
        return cached

    def subset(self, index: np.ndarray | list[int]) -> DomainData:
        """Rows `index` as a new DomainData (those rows are read into memory)."""
        idx = np.asarray(index, dtype=np.int64)
        return DomainData(
            domain=self.domain,
            images=self.images[idx],
            masks=self.masks[idx],
            spacing_mm=self.spacing_mm[idx],
            patient_ids=[self.patient_ids[i] for i in idx],
            image_ids=[self.image_ids[i] for i in idx],
            meta=[self.meta[i] for i in idx],
            official_split=None
            if self.official_split is None
            else [self.official_split[i] for i in idx],
        )


class Domain(abc.ABC):
    """A named source of samples. Subclasses: synthetic (TOML) and real-data adapters."""

    name: str
    synthetic: bool
    workers: int | None = None  # processes that build the cache (None: every available core)

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A short hash identifying the data and its preprocessing (changes => new cache/run)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Counts, spacing, source of truth, synthetic or real: for `bench data show`."""

    @abc.abstractmethod
    def load(self, image_size: int, cache_dir: Path, progress: Any = None) -> DomainData:
        """Return every sample at `image_size` x `image_size`, from cache when possible.

        `progress` is a `benchmark.progress.Progress`-like object (or None) used to report
        long work such as generating or decoding images.
        """

    @property
    def kind(self) -> str:
        """'synthetic' or 'real': results of the two kinds never share a table."""
        return "synthetic" if self.synthetic else "real"


def log_message(progress: Any, message: str) -> None:
    """Log through the reporter when a domain's `load` got one, else as a Python warning."""
    if progress is not None and hasattr(progress, "log"):
        progress.log(message)
    else:
        warnings.warn(message, stacklevel=3)


@contextlib.contextmanager
def progress_task(progress: Any, description: str, total: int) -> Iterator[Any]:
    """`progress.task(...)` when a reporter is given, else nothing."""
    if progress is None or not hasattr(progress, "task"):
        yield None
        return
    with progress.task(description, total) as task:
        yield task
