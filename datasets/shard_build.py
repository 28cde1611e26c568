"""Parallel, resumable build of a shard store (see datasets/shards.py for the format).

A domain's work is cut into numbered units (a group of synthetic patients, a group of real
cases); unit i becomes shard i. Units run in a process pool (`workers`, default: the cores this
process may use) and each worker streams its samples straight into its shard's temp files, so
a worker holds one case at a time, never a shard. A finished shard is renamed into place and
its `.json` record written last; a killed build therefore resumes from the shards whose record
exists and passes its crc32 check. The manifest and index table are written once every shard is
there. Free space is checked before every sample and ENOSPC is caught: a full disk is a one-line
`UserError` naming the cache folder and the space needed, and leaves no partial shard.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmark.errors import UserError
from benchmark.io import atomic_write_text
from datasets.domain import log_message, progress_task
from datasets.shards import ARRAYS, STORE_FORMAT, ShardError, check_shard, file_crc32, shard_name

HEADER_BYTES = 128  # a (k, H, W) .npy v1.0 header for any k < 1e10 pads to 128 bytes
SPACE_MARGIN = 16 << 20  # keep this much free beyond the next sample (filesystem metadata)
INDEX_COLUMNS = ("row", "shard", "image_id", "patient_id", "view", "slice", "volume_id",
                 "spacing_row_mm", "spacing_col_mm", "split")


def default_workers() -> int:
    """The cores this process may run on (`os.sched_getaffinity`, which honours taskset and
    cgroup cpusets, unlike `os.cpu_count`)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Sample:
    """One preprocessed sample and its row of the index."""

    image: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray  # (H, W) uint8 {0, 1}
    spacing_mm: tuple[float, float]
    patient_id: str
    image_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None  # the dataset's official split, if any


@dataclass(frozen=True)
class ShardMark:
    """A shard writer's position before a case, to roll a failed case back to."""

    rows: int
    problems: int
    notes: dict[str, int]
    offsets: dict[str, int]  # array name -> byte offset in its temp file


class DiskFullError(Exception):
    """Not enough space for the next shard (message is the one-line user error)."""


def _write_header(fh: IO[bytes], rows: int, size: int, dtype: np.dtype) -> None:
    """Write a .npy v1.0 header for (rows, size, size) of exactly HEADER_BYTES bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (rows, size, size)})
    if len(buf.getvalue()) != HEADER_BYTES:
        raise ValueError(f"unexpected .npy header length {len(buf.getvalue())}")
    fh.write(buf.getvalue())


class ShardWriter:
    """Streams samples of one shard into temp `.npy` files; `finish` renames them into place
    and writes the record; `abort` removes every file of the shard."""

    def __init__(self, folder: Path, number: int, image_size: int) -> None:
        self.folder = folder
        self.name = shard_name(number)
        self.size = image_size
        self.rows: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.notes: dict[str, int] = {}
        tag = f"{os.getpid()}"
        self.tmp = {a: folder / f".{self.name}.{a}.npy.{tag}.tmp" for a in ARRAYS}
        self.files: dict[str, IO[bytes]] = {}
        for array, dtype in ARRAYS.items():
            fh = open(self.tmp[array], "wb")
            self.files[array] = fh
            _write_header(fh, 0, image_size, dtype)

    def problem(self, problem: dict[str, Any]) -> None:
        """Record a problem (an excluded file and why) found while producing this shard."""
        self.problems.append(problem)

    def note(self, key: str, n: int = 1) -> None:
        """Count an event (e.g. images with a defaulted spacing) for the build's summary."""
        self.notes[key] = self.notes.get(key, 0) + n

    def add(self, sample: Sample) -> None:
        """Append one sample (checks free space first; ENOSPC becomes DiskFullError)."""
        image = np.ascontiguousarray(sample.image, dtype=ARRAYS["images"])
        mask = np.ascontiguousarray(sample.mask, dtype=ARRAYS["masks"])
        if image.shape != (self.size, self.size) or mask.shape != image.shape:
            raise ValueError(f"sample {sample.image_id} has shape {image.shape}")
        need = image.nbytes + mask.nbytes + SPACE_MARGIN
        free = shutil.disk_usage(self.folder).free
        if free < need:
            raise DiskFullError(self._full_message(need, free))
        try:
            self.files["images"].write(image.tobytes())
            self.files["masks"].write(mask.tobytes())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(self._full_message(need, 0)) from None
            raise
        self.rows.append({"image_id": sample.image_id, "patient_id": sample.patient_id,
                          "spacing_mm": [float(s) for s in sample.spacing_mm],
                          "meta": sample.meta, "split": sample.split})

    def mark(self) -> ShardMark:
        """Where the shard stands before a case: rows, problems, notes and the byte offset of
        each array's temp file (see `rollback`)."""
        return ShardMark(len(self.rows), len(self.problems), dict(self.notes),
                         {a: fh.tell() for a, fh in self.files.items()})

    def rollback(self, mark: ShardMark) -> None:
        """Drop every sample, problem and note added since `mark`, truncating the temp files
        back to their offsets: a case that fails part-way (frame 57 of a volume) leaves no
        partial rows, without buffering its samples in memory."""
        del self.rows[mark.rows:]
        del self.problems[mark.problems:]
        self.notes = dict(mark.notes)
        for array, fh in self.files.items():
            fh.seek(mark.offsets[array])
            fh.truncate()

    def _full_message(self, need: int, free: int) -> str:
        """The one-line disk-full error: folder, space needed, space free."""
        done = len(self.rows) * self.size * self.size * 5
        return (f"cache folder {self.folder.parent} is full: shard {self.name} needs at least "
                f"{need / 2**20:.0f} MiB more ({done / 2**20:.0f} MiB written so far), "
                f"{free / 2**20:.0f} MiB free; free some space or use --cache-dir")

    def finish(self) -> dict[str, Any]:
        """Fix the headers, fsync, rename the arrays into place, then write the record."""
        record: dict[str, Any] = {"shard": self.name, "rows": len(self.rows), "crc32": {},
                                  "samples": self.rows, "problems": self.problems,
                                  "notes": self.notes}
        try:
            for array, fh in self.files.items():
                fh.seek(0)
                _write_header(fh, len(self.rows), self.size, ARRAYS[array])
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            for array, tmp in self.tmp.items():
                record["crc32"][array] = file_crc32(tmp)
                os.replace(tmp, self.folder / f"{self.name}.{array}.npy")
            atomic_write_text(self.folder / f"{self.name}.json", json.dumps(record))
        except OSError as exc:
            self.abort()
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(self._full_message(SPACE_MARGIN, 0)) from None
            raise
        return record

    def abort(self) -> None:
        """Close and remove this shard's temp and final files (no partial shard is left)."""
        for fh in self.files.values():
            with contextlib.suppress(OSError):
                fh.close()
        remove_shard(self.folder, self.name, extra=list(self.tmp.values()))


def remove_shard(folder: Path, name: str, extra: list[Path] | None = None) -> None:
    """Delete a shard's record first (so it stops counting as finished), then its arrays."""
    for path in [folder / f"{name}.json", *(folder / f"{name}.{a}.npy" for a in ARRAYS),
                 *(extra or [])]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


Produce = Callable[[int, ShardWriter], None]
_JOB: dict[str, Any] = {}  # set in the parent before the pool forks; read by workers


def _run_unit(number: int) -> dict[str, Any]:
    """Worker: produce unit `number` into its shard and return the shard's record."""
    writer = ShardWriter(_JOB["folder"], number, _JOB["image_size"])
    try:
        _JOB["produce"](number, writer)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


_LOCK_FDS: set[int] = set()  # build-lock descriptors held by this process


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One builder per store at a time (others wait, then find it built)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _LOCK_FDS.add(fh.fileno())
        try:
            yield
        finally:
            _LOCK_FDS.discard(fh.fileno())
            fcntl.flock(fh, fcntl.LOCK_UN)


def _worker_init() -> None:
    """In a forked worker: one BLAS/OpenMP thread (the pool is the parallelism: threaded GEMMs
    in N workers on N cores oversubscribe them; measured 2x slower on 2 cores), drop the
    inherited build-lock descriptors (a flock lives as long as any copy, so an orphan would
    keep the store locked) and die with the parent (Linux PR_SET_PDEATHSIG), so a killed build
    leaves no worker behind."""
    threadpool_limits(1)
    for fd in list(_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()
    with contextlib.suppress(Exception):  # not Linux: orphans finish their shard and exit
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != _JOB.get("parent"):  # the parent died before prctl took effect
            os._exit(1)


def build_store(folder: Path, image_size: int, n_units: int, produce: Produce,
                header: dict[str, Any], *, workers: int | None = None, progress: Any = None,
                label: str = "building", weights: list[int] | None = None,
                first: list[int] | None = None) -> list[dict[str, Any]]:
    """Build (or finish building) the store in `folder`; returns the shard records in order.

    The progress bar counts `weights[i]` per finished unit i (images or cases; 1 by default)
    and shows the images written per second; its ETA follows from the rate. Units listed in
    `first` (the likely biggest, e.g. DBT volumes) start first, so no long unit is left to run
    alone at the end while the other workers idle.

    Call it holding `build_lock(folder)`. Shards already finished and sound are kept; an
    unsound one is named in a one-line warning and rebuilt.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (folder / "manifest.json").unlink()  # nobody trusts a store being repaired
    for stray in folder.glob(".shard-*.tmp"):  # temp files of a killed build (we hold the lock)
        stray.unlink(missing_ok=True)
    records: dict[int, dict[str, Any]] = {}
    for number in range(n_units):
        name = shard_name(number)
        if not (folder / f"{name}.json").exists():
            remove_shard(folder, name)
            continue
        try:
            records[number] = check_shard(folder, name, image_size, crc=True)[1]
        except ShardError as exc:
            log_message(progress, f"warning: cache shard {folder.name}/{name} is unusable "
                                  f"({exc}); rebuilding it")
            remove_shard(folder, name)
    early = set(first or [])
    todo = sorted((n for n in range(n_units) if n not in records),
                  key=lambda n: (n not in early, n))
    workers = default_workers() if workers is None else max(1, int(workers))
    _JOB.update(folder=folder, image_size=image_size, produce=produce, parent=os.getpid())
    t0, images = time.perf_counter(), 0
    weights = weights or [1] * n_units
    with progress_task(progress, f"{label}, {n_units} shards, {workers} worker"
                                 f"{'s' if workers > 1 else ''}", sum(weights)) as task:
        if task is not None and records:
            task.advance(sum(weights[n] for n in records), resumed_shards=len(records))

        def done(number: int, record: dict[str, Any]) -> None:
            """Keep a finished shard's record and advance the bar."""
            nonlocal images
            records[number] = record
            images += record["rows"]
            if task is not None:
                rate = images / max(time.perf_counter() - t0, 1e-9)
                task.advance(weights[number], **{"images/s": f"{rate:.1f}"})

        try:
            if workers == 1 or len(todo) <= 1:
                with threadpool_limits(1):  # as in a pool worker: 1 worker = 1 core
                    for number in todo:
                        done(number, _run_unit(number))
            else:
                _pool_build(todo, min(workers, len(todo)), done)
        except DiskFullError as exc:
            raise UserError(str(exc)) from None
        finally:
            _JOB.clear()
    ordered = [records[n] for n in range(n_units)]
    write_manifest(folder, image_size, ordered, header)
    return ordered


def _pool_build(todo: list[int], workers: int, done: Callable[[int, dict[str, Any]], None]
                ) -> None:
    """Run units in a forked pool (a unit's reader may be a closure, which cannot be pickled;
    forked workers inherit `_JOB`). The first failure cancels the units not yet started."""
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(_run_unit, n): n for n in todo}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    done(futures[fut], fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def write_manifest(folder: Path, image_size: int, records: list[dict[str, Any]],
                   header: dict[str, Any]) -> None:
    """Write index.csv, then manifest.json (atomically, last: the store is complete)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(INDEX_COLUMNS)
    row = 0
    for record in records:
        for s in record["samples"]:
            m = s["meta"]
            writer.writerow([row, record["shard"], s["image_id"], s["patient_id"],
                             m.get("view", ""), m.get("slice", ""), m.get("volume_id", ""),
                             *s["spacing_mm"], s["split"] or ""])
            row += 1
    atomic_write_text(folder / "index.csv", out.getvalue())
    manifest = {**header, "format": STORE_FORMAT, "image_size": image_size, "rows": row,
                "shards": [r["shard"] for r in records],
                "problems": [*header.get("problems", []),
                             *(p for r in records for p in r["problems"])]}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, sort_keys=True))


def open_or_build(folder: Path, image_size: int, build: Callable[[], Any], progress: Any = None
                  ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """`open_store(folder)` when it is complete and sound; otherwise run `build()` (which calls
    `build_store`) under the folder's build lock and open the result. A store that existed but
    is unsound is named in a one-line warning first."""
    from datasets.shards import open_store

    try:
        return open_store(folder, image_size)
    except ShardError as exc:
        if (folder / "manifest.json").exists():
            log_message(progress, f"warning: cache {folder} is unusable ({exc}); rebuilding "
                                  "what is broken")
            with contextlib.suppress(FileNotFoundError):
                (folder / "manifest.json").unlink()
    with build_lock(folder):
        try:  # another process may have finished it while we waited for the lock
            return open_store(folder, image_size)
        except ShardError:
            pass
        build()
        return open_store(folder, image_size)


def rows_of(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-row lists (image ids, patient ids, spacing, meta, split) of a store, in row order."""
    samples = [s for r in records for s in r["samples"]]
    return {"image_ids": [s["image_id"] for s in samples],
            "patient_ids": [s["patient_id"] for s in samples],
            "spacing_mm": [s["spacing_mm"] for s in samples],
            "meta": [s["meta"] for s in samples],
            "split": [s["split"] for s in samples]}
