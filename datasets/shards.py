"""The on-disk cache of every domain (synthetic and real): sharded `.npy` arrays read lazily.

A domain at one image size is a folder holding shards and one manifest:

    shard-00003.images.npy   float32 (k, H, W)   images in [0, 1]
    shard-00003.masks.npy    uint8   (k, H, W)   masks in {0, 1}
    shard-00003.json         the shard's rows (ids, spacing, meta, split), sizes and crc32s
    index.csv                the small index table (one line per sample), for people and tools
    manifest.json            the shard list and the domain's header, written LAST

Why plain `.npy` files (numpy's own format) rather than zarr or blosc2: a sample is one
contiguous run of bytes at a known offset (`np.lib.format` gives the header length), so a
reader fetches it with one positioned read (`os.preadv`) into a fresh array. That keeps the
reader's memory flat however large the domain (a memory map's touched pages count in RSS and
grow with the cache), needs no extra dependency, and every tool can open a shard. Compression
would save disk but cost CPU on every read of every epoch; images stay float32 so cached
arrays are bit-identical to freshly generated ones.

Every file is written to a temp name and `os.replace`d; a shard's `.json` is written after its
arrays and the manifest after every shard, so a reader never sees a half-written shard and a
killed build resumes from the shards whose `.json` exists.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STORE_FORMAT = 1
MAX_OPEN = 128  # shard files a reader keeps open (the default ulimit is 1024 descriptors)
ARRAYS = {"images": np.dtype("<f4"), "masks": np.dtype("u1")}


class ShardError(ValueError):
    """A shard or manifest that is missing, truncated or does not match its record."""


def store_folder(cache_dir: Path, kind: str, name: str, fingerprint: str, image_size: int
                 ) -> Path:
    """The folder that holds domain `name` (kind 'synthetic' or 'real') at `image_size`."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Path(cache_dir) / "shards" / kind / f"{safe}-{fingerprint}-{image_size}"


def shard_name(number: int) -> str:
    """'shard-00042' for shard 42."""
    return f"shard-{number:05d}"


def npy_header_length(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(data offset, shape, dtype) of a C-ordered `.npy` file, read from its header only."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fh)
        if fortran:
            raise ShardError(f"{path.name} is Fortran-ordered")
        return fh.tell(), tuple(shape), dtype


def file_crc32(path: Path, chunk: int = 1 << 22) -> int:
    """crc32 of a whole file, read in 4 MiB chunks (memory stays flat)."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


@dataclass
class ShardInfo:
    """Where one shard's arrays start on disk and how many rows it holds."""

    name: str
    rows: int
    offsets: dict[str, int]  # array name -> data offset in its .npy file


def check_shard(folder: Path, name: str, image_size: int, record: dict[str, Any] | None = None,
                crc: bool = False) -> tuple[ShardInfo, dict[str, Any]]:
    """Check one shard against its `.json` record: files present, headers, exact sizes and, with
    `crc`, the crc32 of each array file. Raises ShardError naming what is wrong."""
    if record is None:
        try:
            record = json.loads((folder / f"{name}.json").read_text())
        except FileNotFoundError:
            raise ShardError(f"{name}: no record (unfinished)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardError(f"{name}.json is unreadable ({exc})") from None
    rows = int(record.get("rows", -1))
    offsets = {}
    for array, dtype in ARRAYS.items():
        path = folder / f"{name}.{array}.npy"
        try:
            offset, shape, got = npy_header_length(path)
        except FileNotFoundError:
            raise ShardError(f"{path.name} is missing") from None
        except (OSError, ValueError) as exc:
            raise ShardError(f"{path.name} has a corrupt header ({exc})") from None
        if shape != (rows, image_size, image_size) or got != dtype:
            raise ShardError(f"{path.name} holds {got} {shape}, its record says {rows} rows")
        expect = offset + rows * image_size * image_size * dtype.itemsize
        size = path.stat().st_size
        if size != expect:
            raise ShardError(f"{path.name} is {size} bytes, expected {expect} (truncated)")
        if crc and file_crc32(path) != record.get("crc32", {}).get(array):
            raise ShardError(f"{path.name} fails its crc32 check (corrupt)")
        offsets[array] = offset
    return ShardInfo(name, rows, offsets), record


class ShardReader:
    """Opens shard files lazily (one descriptor per file per process) and reads rows with
    positioned reads, so nothing is memory-mapped and nothing but the asked rows is loaded."""

    def __init__(self, folder: Path, shards: Sequence[ShardInfo], image_size: int) -> None:
        self.folder = Path(folder)
        self.shards = list(shards)
        self.image_size = image_size
        starts = np.cumsum([0] + [s.rows for s in self.shards])
        self.n = int(starts[-1])
        self.shard_of = np.repeat(np.arange(len(self.shards)), [s.rows for s in self.shards])
        self.row_in_shard = np.arange(self.n) - starts[self.shard_of]
        self._fds: dict[tuple[int, str], int] = {}  # insertion order = least recently opened
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open descriptors or the lock (a new process opens its own)."""
        state = dict(self.__dict__)
        state["_fds"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle: a fresh lock; descriptors open on first read."""
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _fd(self, shard: int, array: str) -> int:
        """The read-only descriptor of one shard file, opened on first use in this process;
        at most MAX_OPEN stay open (a paper-scale store has thousands of shards). Call it
        holding `_lock`."""
        if self._pid != os.getpid():  # forked: keep the parent's, open our own
            self._fds, self._pid = {}, os.getpid()
        key = (shard, array)
        fd = self._fds.get(key)
        if fd is None:
            while len(self._fds) >= MAX_OPEN:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(self.folder / f"{self.shards[shard].name}.{array}.npy", os.O_RDONLY)
            self._fds[key] = fd
        return fd

    def close(self) -> None:
        """Close every descriptor this process opened."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        """Close descriptors when the reader goes away."""
        try:
            self.close()
        except Exception:  # interpreter shutdown: descriptors go with the process
            pass

    def read(self, array: str, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (any order, repeats allowed) of `array` as a fresh (k, H, W) array;
        consecutive rows of one shard are fetched with one read."""
        dtype = ARRAYS[array]
        size = self.image_size
        out = np.empty((len(rows), size, size), dtype)
        if not len(rows):
            return out
        row_bytes = size * size * dtype.itemsize
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for start, stop in _runs(rows, self.shard_of):
            first = int(rows[start])
            shard = int(self.shard_of[first])
            offset = self.shards[shard].offsets[array] + int(self.row_in_shard[first]) * row_bytes
            view = memoryview(flat[start:stop].reshape(-1))
            with self._lock:  # reader threads share descriptors; the LRU may close one
                got = os.preadv(self._fd(shard, array), [view], offset)
            if got != len(view):
                raise ShardError(f"{self.shards[shard].name}.{array}.npy is shorter than its "
                                 "record (truncated after it was opened)")
        return out


def _runs(rows: np.ndarray, shard_of: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) positions in `rows` of maximal runs of consecutive row numbers that lie
    in one shard (each run is one read)."""
    if len(rows) == 1:
        yield 0, 1
        return
    shards = shard_of[rows]
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shards) != 0)) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    yield from itertools.pairwise(edges)


class LazyArray:
    """A read-only (N, H, W) array-like backed by shards: `len`, `.shape`, `.dtype`, and
    indexing by int, slice, int array or bool mask returning in-memory numpy arrays.

    `np.asarray(lazy)` reads EVERY row; it exists for tests and small domains only: the
    harness indexes the rows it needs.
    """

    def __init__(self, reader: ShardReader, array: str) -> None:
        self.reader = reader
        self.array = array
        self.dtype = ARRAYS[array]
        self.shape = (reader.n, reader.image_size, reader.image_size)
        self.ndim = 3

    def __len__(self) -> int:
        """Number of rows."""
        return self.shape[0]

    @property
    def size(self) -> int:
        """Number of elements (as numpy's `.size`)."""
        return int(np.prod(self.shape))

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows selected by int / slice / int array / bool mask (then any further indices),
        read from the shards into a new array."""
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            out = self.reader.read(self.array, np.asarray([i]))[0]
        else:
            if isinstance(key, slice):
                rows = np.arange(self.shape[0])[key]
            else:
                rows = np.asarray(key)
                if rows.dtype == bool:
                    rows = np.flatnonzero(rows)
                rows = rows.astype(np.int64).reshape(-1)
                rows = np.where(rows < 0, rows + self.shape[0], rows)
                if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
                    raise IndexError(f"rows out of range for {self.shape[0]} rows")
            out = self.reader.read(self.array, rows)
        return out[(slice(None), *rest)] if rest and out.ndim == 3 else out[rest] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row (a whole-domain read: tests and tiny domains only)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __iter__(self) -> Iterator[np.ndarray]:
        """One row at a time."""
        for i in range(self.shape[0]):
            yield self[i]


def open_store(folder: Path, image_size: int) -> tuple[dict[str, Any], dict[str, LazyArray],
                                                       list[dict[str, Any]]]:
    """Read a complete store: (manifest, lazy arrays, per-shard records). Raises ShardError
    when the manifest or any shard is missing, truncated or inconsistent."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise ShardError("no manifest (never built, or the build did not finish)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"manifest.json is unreadable ({exc})") from None
    if manifest.get("format") != STORE_FORMAT or manifest.get("image_size") != image_size:
        raise ShardError("manifest.json is from another format or image size")
    infos, records = [], []
    for name in manifest["shards"]:
        info, record = check_shard(folder, name, image_size)
        infos.append(info)
        records.append(record)
    reader = ShardReader(folder, infos, image_size)
    return manifest, {a: LazyArray(reader, a) for a in ARRAYS}, records
