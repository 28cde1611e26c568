"""RealDomain: a user-bound dataset read through its format adapter, preprocessed and cached.

Fingerprint = sha256 of the format, root, options, preprocessing config, the source text of
datasets/real (the code version) and the (relative path, size, mtime) of every source file.
Sizes and mtimes rather than content hashes: hashing CBIS-DDSM's ~160 GB would take tens of
minutes on every command, while any re-download, edit or truncation changes size or mtime.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import UserError
from datasets.domain import Domain, DomainData
from datasets.domain import log_message as _log
from datasets.domain import progress_task as _task
from datasets.real.bindings import Binding
from datasets.real.cache import cache_path, read_cache, write_cache
from datasets.real.cases import Adapter, Case, Frame
from datasets.real.formats import make_adapter
from datasets.real.preprocess import PreprocessConfig, preprocess
from datasets.real.problems import CaseError, Problem, why

PREPROCESS_KEYS = ("tiles", "crop", "min_breast_fraction", "crop_margin")
MAX_LOGGED_PROBLEMS = 10


@cache
def code_version() -> str:
    """sha256 of the datasets/real sources and the shared resampler's module (a code change
    means a new cache)."""
    from datasets.synthetic import domain as synthetic_domain  # area_matrix lives there

    h = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(synthetic_domain.__file__)]:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def preprocess_config(options: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing settings stored in a binding's options (defaults otherwise)."""
    keys = {k: options[k] for k in PREPROCESS_KEYS if k in options}
    return PreprocessConfig(**keys)


class RealDomain(Domain):
    """Real data bound by `bench data add`: adapter + preprocessing + npz cache."""

    synthetic = False

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.name = binding.name
        self.preprocess = preprocess_config(binding.options)
        self._adapter: Adapter | None = None
        self._fingerprint: str | None = None
        self.decode_count = 0  # how many times images were decoded (not read from cache)
        self.problems: list[Problem] = []

    @property
    def adapter(self) -> Adapter:
        """The format adapter (built lazily; checks the root exists)."""
        if self._adapter is None:
            self._adapter = make_adapter(self.binding)
        return self._adapter

    def fingerprint(self) -> str:
        """Short hash of files (path, size, mtime), options, preprocessing and code version."""
        if self._fingerprint is None:
            a = self.adapter
            h = hashlib.sha256()
            h.update(json.dumps({"format": self.binding.format,
                                 "root": str(Path(self.binding.root).resolve()),
                                 "options": self.binding.options,
                                 "preprocess": self.preprocess.as_dict(),
                                 "code": code_version()}, sort_keys=True, default=str).encode())
            for p in a.source_files():
                st = p.stat()
                h.update(f"{p.relative_to(a.root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n"
                         .encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Format, root, options, preprocessing and fingerprint (decodes nothing)."""
        a = self.adapter
        return {"name": self.name, "kind": "real", "synthetic": False,
                "format": self.binding.format, "root": self.binding.root,
                "options": self.binding.options, "preprocess": self.preprocess.as_dict(),
                "default_spacing_mm": a.default_spacing_mm, "default_spacing_from": a.spacing_note,
                "source_files": len(a.source_files()), "fingerprint": self.fingerprint()}

    def load(self, image_size: int, cache_dir: Path | None, progress: Any = None) -> DomainData:
        """Every kept block at image_size x image_size, from the cache when it is sound."""
        path = None if cache_dir is None else cache_path(Path(cache_dir), self.name,
                                                         self.fingerprint(), image_size)
        if path is not None and path.exists():
            try:
                data, header = read_cache(path, self.fingerprint(), image_size)
                self.problems = [Problem(**p) for p in header.get("problems", [])]
                return data
            except Exception as exc:  # corrupt / truncated / foreign: rebuild
                _log(progress, f"warning: cache {path.name} is unreadable ({why(exc)}); "
                               "rebuilding")
        data = self.build(image_size, progress)
        if path is not None:
            header = {"name": self.name, "fingerprint": self.fingerprint(),
                      "image_size": image_size, "data_format": self.binding.format,
                      "preprocess": self.preprocess.as_dict(), "code": code_version(),
                      "problems": [p.__dict__ for p in self.problems],
                      "created": time.time()}
            write_cache(path, data, header)
        return data

    def build(self, image_size: int, progress: Any = None) -> DomainData:
        """Decode and preprocess every case (no cache); problems are collected and logged."""
        self.decode_count += 1
        cases, problems = self.adapter.scan()
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        spacing: list[tuple[float, float]] = []
        pids: list[str] = []
        iids: list[str] = []
        metas: list[dict[str, Any]] = []
        split: list[str | None] = []
        defaulted = 0
        with _task(progress, f"decoding {self.name} ({len(cases)} cases)", len(cases)) as task:
            for case in cases:
                try:
                    frames = read_case(case)
                except CaseError as exc:
                    problems.append(exc.problem)
                    frames = []
                for frame in frames:
                    sp = frame.spacing_mm
                    if sp is None:
                        sp, defaulted = (self.adapter.default_spacing_mm,) * 2, defaulted + 1
                        frame.spacing_source = "dataset default"
                    for s in preprocess(frame.image, frame.mask, sp, image_size, self.preprocess):
                        meta = frame_meta(case, frame, s.block, bool(s.mask.any()))
                        images.append(s.image)
                        masks.append(s.mask)
                        spacing.append(s.spacing_mm)
                        pids.append(case.patient_id)
                        iids.append(meta.pop("_image_id"))
                        metas.append(meta)
                        split.append(case.official_split)
                if task is not None:
                    task.advance(1)
        self.problems = problems
        if defaulted:
            _log(progress, f"warning: {self.name} ({self.adapter.label}): {defaulted} image(s) "
                           f"carry no PixelSpacing/ImagerPixelSpacing; using the "
                           f"{self.adapter.label} default {self.adapter.default_spacing_mm:g} mm "
                           f"({self.adapter.spacing_note})")
        for p in problems[:MAX_LOGGED_PROBLEMS]:
            _log(progress, f"warning: {self.name}: excluded {p}")
        if len(problems) > MAX_LOGGED_PROBLEMS:
            _log(progress, f"warning: {self.name}: {len(problems) - MAX_LOGGED_PROBLEMS} more "
                           f"problem(s); `bench data verify {self.name}` lists them all")
        if not images:
            first = f"; first problem: {problems[0]}" if problems else ""
            raise UserError(f"data '{self.name}' ({self.binding.format} at "
                            f"{self.binding.root}) has no usable image{first}")
        has_split = any(s is not None for s in split)
        if has_split:
            split = self._one_split_per_patient(pids, split, progress)
        return DomainData(domain=self.name, images=np.stack(images), masks=np.stack(masks),
                          spacing_mm=np.asarray(spacing, np.float64), patient_ids=pids,
                          image_ids=iids, meta=metas,
                          official_split=[s or "train" for s in split] if has_split else None)

    def _one_split_per_patient(self, pids: list[str], split: list[str | None], progress: Any
                               ) -> list[str | None]:
        """A patient with any official test image is test throughout (CBIS-DDSM's calc and
        mass splits were drawn separately, so `--abnormality both` can put one patient in
        both); otherwise the patient-level split would leak."""
        test_patients = {p for p, s in zip(pids, split, strict=True) if s == "test"}
        moved = sum(1 for p, s in zip(pids, split, strict=True)
                    if p in test_patients and s != "test")
        if moved:
            _log(progress, f"warning: {self.name}: {moved} official-train image(s) belong to "
                           "patients with official-test images; they are moved to test so "
                           "no patient spans two splits")
        return ["test" if p in test_patients else s for p, s in zip(pids, split, strict=True)]


def read_case(case: Case) -> list[Frame]:
    """`case.read()` with any decoding failure turned into a CaseError naming the file."""
    try:
        frames = case.read()
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(case.files[0] if case.files else case.image_id,
                        f"unreadable ({why(exc)})") from None
    for f in frames:
        if not np.isfinite(f.image).all():
            raise CaseError(case.files[0], "image contains NaN or infinite values")
    return frames


def frame_meta(case: Case, frame: Frame, block: str, has_cluster: bool) -> dict[str, Any]:
    """Per-sample meta; blocks of a volume's slices form one volume per block position."""
    meta: dict[str, Any] = {**case.meta, "block": block, "photometric_stored": frame.photometric,
                            "window": frame.window, "spacing_source": frame.spacing_source,
                            "has_cluster": has_cluster, "synthetic": False}
    iid = case.image_id
    if frame.slice is not None:
        meta["slice"] = int(frame.slice)
        meta["volume_id"] = f"{meta.get('volume_id', case.image_id)}#{block}"
        if case.volume:  # a slice row's image_id already names its slice
            iid += f"-S{frame.slice:03d}"
    else:
        meta.pop("volume_id", None)
    meta["_image_id"] = f"{iid}-{block}"
    return meta
