"""RealDomain: a user-bound dataset read through its format adapter, preprocessed and cached.

Fingerprint = sha256 of the format, root, options, preprocessing config, the source text of
datasets/real (the code version) and the (relative path, size, mtime) of every source file.
Sizes and mtimes rather than content hashes: hashing CBIS-DDSM's ~160 GB would take tens of
minutes on every command, while any re-download, edit or truncation changes size or mtime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import UserError
from datasets import resize
from datasets.domain import Domain, DomainData
from datasets.domain import log_message as _log
from datasets.domain import progress_task as _task
from datasets.real.bindings import Binding
from datasets.real.cases import Adapter, Case, Frame
from datasets.real.formats import make_adapter
from datasets.real.preprocess import PreprocessConfig, preprocess
from datasets.real.problems import CaseError, Problem, why
from datasets.shard_build import Sample, ShardWriter, build_store, open_or_build, rows_of
from datasets.shards import store_folder

PREPROCESS_KEYS = ("tiles", "crop", "min_breast_fraction", "crop_margin", "flip_right")
MAX_LOGGED_PROBLEMS = 10
CASES_PER_SHARD = 8  # single images per shard (~32 samples, ~40 MB at 512 px)


@cache
def code_version() -> str:
    """sha256 of the datasets/real sources and the shared resampler's module (a code change
    means a new cache)."""
    h = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(resize.__file__)]:
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
        self.workers: int | None = None  # build processes (None: every available core)
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
        """Every kept block at image_size x image_size, read lazily from the shard store (built
        first, decoding in `self.workers` processes, when missing or unsound). Without a cache
        folder the domain is decoded into memory."""
        if cache_dir is None:
            return self.build(image_size, progress)
        folder = store_folder(Path(cache_dir), "real", self.name, self.fingerprint(), image_size)
        built = []
        manifest, arrays, records = open_or_build(
            folder, image_size, lambda: built.append(self._build(folder, image_size, progress)),
            progress)
        self.problems = [Problem(**p) for p in manifest.get("problems", [])]
        rows = rows_of(records)
        if not rows["image_ids"]:
            raise UserError(self._no_image_message(self.problems))
        split = self._split(rows["patient_ids"], rows["split"], progress, warn=bool(built))
        return DomainData(domain=self.name, images=arrays["images"], masks=arrays["masks"],
                          spacing_mm=np.asarray(rows["spacing_mm"], np.float64).reshape(-1, 2),
                          patient_ids=rows["patient_ids"], image_ids=rows["image_ids"],
                          meta=rows["meta"], official_split=split)

    def units(self, cases: list[Case]) -> list[list[int]]:
        """Case indices per shard: each volume alone (a DBT volume is hundreds of samples),
        runs of up to CASES_PER_SHARD single images together."""
        out: list[list[int]] = []
        for i, case in enumerate(cases):
            if case.volume or not out or len(out[-1]) >= CASES_PER_SHARD or \
                    cases[out[-1][0]].volume:
                out.append([i])
            else:
                out[-1].append(i)
        return out

    def _build(self, folder: Path, image_size: int, progress: Any) -> int:
        """Decode and preprocess every case into the shard store, in a process pool; returns
        how many cases were decoded. Problems are collected and logged as before."""
        self.decode_count += 1
        cases, scan_problems = self.adapter.scan()
        units = self.units(cases)
        adapter, config = self.adapter, self.preprocess

        def produce(unit: int, writer: ShardWriter) -> None:
            """Decode shard `unit`'s cases into `writer` (runs in a pool worker)."""
            for i in units[unit]:
                add_case(cases[i], adapter, config, image_size, writer)
                writer.note("cases_decoded")

        header = {"name": self.name, "fingerprint": self.fingerprint(), "kind": "real",
                  "image_size": image_size, "data_format": self.binding.format,
                  "preprocess": self.preprocess.as_dict(), "code": code_version(),
                  "problems": [p.__dict__ for p in scan_problems]}
        records = build_store(folder, image_size, len(units), produce, header,
                              workers=self.workers, progress=progress,
                              label=f"decoding {self.name} ({len(cases)} cases)",
                              weights=[len(u) for u in units],
                              first=[n for n, u in enumerate(units) if cases[u[0]].volume])
        problems = scan_problems + [Problem(**p) for r in records for p in r["problems"]]
        defaulted = sum(r["notes"].get("defaulted_spacing", 0) for r in records)
        self._log_problems(problems, defaulted, progress)
        return sum(r["notes"].get("cases_decoded", 0) for r in records)

    def build(self, image_size: int, progress: Any = None) -> DomainData:
        """Decode and preprocess every case into memory (no cache: small data and tests)."""
        self.decode_count += 1
        cases, problems = self.adapter.scan()
        sink = _MemorySink()
        with _task(progress, f"decoding {self.name} ({len(cases)} cases)", len(cases)) as task:
            for case in cases:
                add_case(case, self.adapter, self.preprocess, image_size, sink)
                if task is not None:
                    task.advance(1)
        problems = problems + [Problem(**p) for p in sink.problems]
        self.problems = problems
        self._log_problems(problems, sink.notes.get("defaulted_spacing", 0), progress)
        if not sink.samples:
            raise UserError(self._no_image_message(problems))
        s = sink.samples
        pids = [x.patient_id for x in s]
        return DomainData(domain=self.name, images=np.stack([x.image for x in s]),
                          masks=np.stack([x.mask for x in s]),
                          spacing_mm=np.asarray([x.spacing_mm for x in s], np.float64),
                          patient_ids=pids, image_ids=[x.image_id for x in s],
                          meta=[x.meta for x in s],
                          official_split=self._split(pids, [x.split for x in s], progress,
                                                     warn=True))

    def _no_image_message(self, problems: list[Problem]) -> str:
        """The one-line error when no image survived."""
        first = f"; first problem: {problems[0]}" if problems else ""
        return (f"data '{self.name}' ({self.binding.format} at {self.binding.root}) has no "
                f"usable image{first}")

    def _log_problems(self, problems: list[Problem], defaulted: int, progress: Any) -> None:
        """Warn about defaulted spacings and the first MAX_LOGGED_PROBLEMS problems."""
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

    def _split(self, pids: list[str], split: list[str | None], progress: Any, warn: bool
               ) -> list[str] | None:
        """The official split per image (None when the dataset has none), one per patient;
        the move warning is logged when `warn` (after a build, not on every cache read)."""
        if not any(s is not None for s in split):
            return None
        fixed = self._one_split_per_patient(pids, split, progress, warn)
        return [s or "train" for s in fixed]

    def _one_split_per_patient(self, pids: list[str], split: list[str | None], progress: Any,
                               warn: bool = True) -> list[str | None]:
        """A patient with any official test image is test throughout (CBIS-DDSM's calc and
        mass splits were drawn separately, so `--abnormality both` can put one patient in
        both); otherwise the patient-level split would leak."""
        test_patients = {p for p, s in zip(pids, split, strict=True) if s == "test"}
        moved = sum(1 for p, s in zip(pids, split, strict=True)
                    if p in test_patients and s != "test")
        if moved and warn:
            _log(progress, f"warning: {self.name}: {moved} official-train image(s) belong to "
                           "patients with official-test images; they are moved to test so "
                           "no patient spans two splits")
        return ["test" if p in test_patients else s for p, s in zip(pids, split, strict=True)]


class _MemorySink:
    """Collects samples, problems and notes in memory (the no-cache path of `build`)."""

    def __init__(self) -> None:
        """Empty lists."""
        self.samples: list[Sample] = []
        self.problems: list[dict[str, Any]] = []
        self.notes: dict[str, int] = {}

    def add(self, sample: Sample) -> None:
        """Keep one sample."""
        self.samples.append(sample)

    def mark(self) -> tuple[int, int, dict[str, int]]:
        """Where the sink stands before a case (see `rollback`)."""
        return len(self.samples), len(self.problems), dict(self.notes)

    def rollback(self, mark: tuple[int, int, dict[str, int]]) -> None:
        """Forget everything added since `mark` (a case that failed part-way)."""
        del self.samples[mark[0]:]
        del self.problems[mark[1]:]
        self.notes = dict(mark[2])

    def problem(self, problem: dict[str, Any]) -> None:
        """Keep one problem."""
        self.problems.append(problem)

    def note(self, key: str, n: int = 1) -> None:
        """Count one event."""
        self.notes[key] = self.notes.get(key, 0) + n


def add_case(case: Case, adapter: Adapter, config: PreprocessConfig, image_size: int,
             sink: Any) -> bool:
    """Stream one case's samples into `sink`, frame by frame; all or nothing: when a frame
    fails to decode (frame 57 of a volume...), what the case already added is rolled back
    (`sink.mark` / `sink.rollback`) and the failure goes to `sink.problem`. True if kept."""
    mark = sink.mark()
    try:
        for sample in case_samples(case, adapter, config, image_size, sink):
            sink.add(sample)
    except CaseError as exc:
        sink.rollback(mark)
        sink.problem(exc.problem.__dict__)
        return False
    return True


def case_samples(case: Case, adapter: Adapter, config: PreprocessConfig, image_size: int,
                 sink: Any) -> Iterator[Sample]:
    """Decode one case frame by frame and yield its preprocessed samples (a defaulted spacing
    goes to `sink.note`); a decoding failure, even after some samples, raises CaseError."""
    for frame in read_case(case):
        sp = frame.spacing_mm
        if sp is None:
            sp = (adapter.default_spacing_mm,) * 2
            frame.spacing_source = "dataset default"
            sink.note("defaulted_spacing")
        for s in preprocess(frame.image, frame.mask, sp, image_size, config,
                            case.meta.get("laterality")):
            meta = frame_meta(case, frame, s.block, bool(s.mask.any()))
            iid = meta.pop("_image_id")
            yield Sample(s.image, s.mask, tuple(float(v) for v in s.spacing_mm),
                         case.patient_id, iid, meta, case.official_split)


def read_case(case: Case) -> Iterator[Frame]:
    """`case.read()`'s frames, one at a time, with any decoding failure (also one in the
    middle of a volume) turned into a CaseError naming the file."""
    where = case.files[0] if case.files else case.image_id
    try:
        for f in case.read():
            if not np.isfinite(f.image).all():
                raise CaseError(where, "image contains NaN or infinite values")
            yield f
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(where, f"unreadable ({why(exc)})") from None


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
