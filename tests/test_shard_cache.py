"""The shard store: same arrays as before, lazy reads, kill -9 resume, corrupt shards,
concurrent readers during a build, full disk, and the same per-case rows as the old code."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.errors import UserError
from benchmark.feed import batch_stream
from datasets.domain import DomainData
from datasets.shard_build import Sample, ShardWriter, build_lock, build_store
from datasets.shards import ShardError, open_store
from datasets.synthetic.domain import SyntheticDomain

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
SIZE = 16


def _unit_sample(unit: int, row: int) -> Sample:
    """A deterministic sample whose pixels say which unit and row it is."""
    image = np.full((SIZE, SIZE), unit / 100 + row / 1000, np.float32)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[unit % SIZE, row % SIZE] = 1
    return Sample(image, mask, (0.1, 0.1), f"P{unit}", f"U{unit}-R{row}", {"unit": unit})


def _produce(delay: float) -> Any:
    """A produce function: unit u has u % 3 + 1 rows, each after `delay` seconds."""
    def produce(unit: int, writer: ShardWriter) -> None:
        """Unit `unit`'s rows, slowly."""
        for row in range(unit % 3 + 1):
            time.sleep(delay)
            writer.add(_unit_sample(unit, row))
    return produce


def _build(folder: Path, units: int, delay: float = 0.0, workers: int = 1,
           progress: Any = None) -> list[dict[str, Any]]:
    """build_store of the deterministic test units, under the build lock."""
    with build_lock(folder):
        return build_store(folder, SIZE, units, _produce(delay), {"name": "t"},
                           workers=workers, progress=progress)


def builder_main(folder: str, units: int, delay: float, workers: int) -> None:
    """Entry point of the builder subprocess (killed or not by the tests)."""
    _build(Path(folder), units, delay, workers)


def reader_main(folder: str, seconds: float) -> None:
    """Entry point of a reader subprocess: for `seconds`, read every visible shard and the
    store when complete; print a JSON line {"checked": n, "bad": [...]}."""
    path, end, checked, bad = Path(folder), time.monotonic() + seconds, 0, []
    while time.monotonic() < end:
        for record_path in sorted(path.glob("shard-*.json")):
            name = record_path.name[:-5]
            unit = int(name.split("-")[1])
            try:
                images = np.load(path / f"{name}.images.npy")
                masks = np.load(path / f"{name}.masks.npy")
            except FileNotFoundError:
                continue  # removed by a rebuild between glob and open
            expect = [_unit_sample(unit, r) for r in range(unit % 3 + 1)]
            if images.shape != (len(expect), SIZE, SIZE) or not all(
                    np.array_equal(images[r], e.image) and np.array_equal(masks[r], e.mask)
                    for r, e in enumerate(expect)):
                bad.append(name)
            checked += 1
        try:
            _manifest, arrays, _records = open_store(path, SIZE)
            checked += len(np.asarray(arrays["images"]))
        except ShardError:
            pass  # not complete yet: never half-visible
    print(json.dumps({"checked": checked, "bad": bad}))


def _spawn(code: str) -> subprocess.Popen[str]:
    """A python subprocess running `code` from the repository root."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _files(folder: Path) -> dict[str, bytes]:
    """Every store file's bytes (lock file excluded)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".build.lock"}


def test_synthetic_cache_gives_the_generators_arrays_and_reads_lazily(tmp_path: Path) -> None:
    """The cached arrays are bit-identical to an in-memory generation, and rows are read
    lazily with numpy semantics. (What the generator gives is pinned by the golden test.)"""
    for name in ("tiny-ffdm", "tiny-dbt"):
        dom = SyntheticDomain.from_toml(DATA / f"{name}.toml")
        dom.workers = 2
        data = dom.load(32, tmp_path)
        assert type(data.images).__name__ == "LazyArray" and data.images.shape == (24, 32, 32)
        images, masks = np.asarray(data.images), np.asarray(data.masks)
        fresh = SyntheticDomain.from_toml(DATA / f"{name}.toml").generate(32)
        np.testing.assert_array_equal(images, fresh.images)
        np.testing.assert_array_equal(masks, fresh.masks)
        assert data.meta == fresh.meta and data.image_ids == fresh.image_ids


class _FullFile:
    """A file object whose writes fail with ENOSPC (a disk filling up mid-shard)."""

    def __init__(self, inner: Any) -> None:
        """Wrap the real file."""
        self.inner = inner

    def write(self, _data: bytes) -> int:
        """Fail as a full disk does."""
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        """Everything else from the real file."""
        return getattr(self.inner, name)


def test_streamed_batches_do_not_depend_on_loader_workers(tmp_path: Path) -> None:
    """Reader threads prefetch the very batches the in-process path reads, in order,
    including the slice context of a DBT domain."""
    dom = SyntheticDomain.from_toml(DATA / "tiny-dbt.toml")
    data = dom.load(32, tmp_path)
    batches = [np.array([3, 1, 2]), np.array([20, 21]), np.array([7, 0, 15, 9])]
    cpu = torch.device("cpu")
    plain = list(batch_stream(data, batches, cpu, context_slices=3, workers=0))
    pooled = list(batch_stream(data, batches, cpu, context_slices=3, workers=2))
    assert len(plain) == len(pooled) == 3
    for a, b in zip(plain, pooled, strict=True):
        assert a.keys() == b.keys() == {"image", "mask", "slices", "slices_real"}
        for key in a:
            assert torch.equal(a[key], b[key]), key
    ref = DomainData("x", np.asarray(data.images), np.asarray(data.masks), data.spacing_mm,
                     data.patient_ids, data.image_ids, data.meta)
    in_memory = list(batch_stream(ref, batches, cpu, context_slices=3, workers=0))
    for a, b in zip(plain, in_memory, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def golden_run() -> dict[str, Any]:
    """tests/golden_stream.py's payload, computed in a process with CALCBENCH_PORTABLE=1 and
    two threads: the same on any x86-64 CPU with AVX2 and any core count."""
    from benchmark.numerics import PORTABLE_ENV
    from tests.golden_stream import ENV

    env = {**{k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}, **ENV}
    done = subprocess.run([sys.executable, "-m", "tests.golden_stream"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stand_in_arrays_are_the_golden_ones(golden_run: dict[str, Any]) -> None:
    """The tiny stand-ins' 32 px arrays hash as recorded in tests/data/golden-stream-smoke.json
    (a generator change must say so by re-recording them), with the kernels pinned."""
    golden = json.loads((DATA / "golden-stream-smoke.json").read_text())
    assert golden_run["arrays_32px"] == golden["arrays_32px"]
    assert golden_run["numerics"]["portable"] is True
    assert golden_run["numerics"]["avx2_kernels"] is True


def test_same_seed_same_per_case_rows_and_history(golden_run: dict[str, Any]) -> None:
    """A smoke U-Net run tiny-ffdm -> tiny-dbt gives the recorded training history and
    per-case rows, bit for bit (tests/data/golden-stream-smoke.json)."""
    golden = json.loads((DATA / "golden-stream-smoke.json").read_text())
    assert golden_run["history"] == golden["history"]
    assert golden_run["rows"] == golden["rows"]


def test_stand_in_arrays_do_not_depend_on_the_blas_kernel(tmp_path: Path) -> None:
    """Generation gives the same bytes whichever kernel OpenBLAS picks (it picks SkylakeX on
    Intel AVX-512 and Haswell on AMD Zen 4); the resampler sums taps, not a GEMM."""
    code = ("import hashlib, sys; import numpy as np; "
            "from datasets.synthetic.domain import SyntheticDomain; "
            f"d = SyntheticDomain.from_toml({str(DATA / 'tiny-ffdm.toml')!r}).generate(32); "
            "print(hashlib.sha256(np.asarray(d.images).tobytes()).hexdigest())")
    digests = set()
    for kernel in ("Haswell", "Sandybridge", "Prescott"):  # each runs on any AVX2 CPU
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
        env.pop("CALCBENCH_PORTABLE", None)
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1, digests


def test_perf_data_scale_and_data_build_commands(tmp_path: Path) -> None:
    """`bench perf data --scale` runs end to end on tiny frames and prints every target line;
    `bench data build` builds a cache that a second call reuses without generating."""
    from tests.real_cli import bench

    res = bench("perf", "data", "--scale", "4", "--rows", "64", "--cols", "48",
                "--image-size", "32", "--dbt-frames", "2", "--workers", "2", "--no-progress")
    assert res.exit_code == 0, res.output
    for needle in ("build peak RSS 16 vs 4 frames", "loader peak RSS 16 vs 4 frames",
                   "build with 2 workers vs 1", "samples/s at 32 px",
                   "DICOM decodes when reading the built cache: 0 (target 0): PASS"):
        assert needle in res.output, needle
    bad = bench("perf", "data", "x", "--scale", "4")
    assert bad.exit_code == 2 and "leave out the data name" in bad.output
    cache = tmp_path / "cache"
    args = ("data", "build", str(DATA / "tiny-ffdm.toml"), "--image-size", "16", "--workers",
            "2", "--cache-dir", str(cache), "--no-progress")
    first = bench(*args)
    assert first.exit_code == 0 and "24 samples at 16 px cached" in first.output, first.output
    manifest = next(cache.rglob("manifest.json"))
    mtime = manifest.stat().st_mtime_ns
    assert bench(*args).exit_code == 0 and manifest.stat().st_mtime_ns == mtime


def test_reader_keeps_few_descriptors_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A store with more shards than MAX_OPEN reads every row right, closing the least
    recently opened shard files (a paper-scale store has thousands of shards)."""
    from datasets import shards

    folder = tmp_path / "s"
    _build(folder, 12)
    monkeypatch.setattr(shards, "MAX_OPEN", 3)
    _manifest, arrays, records = open_store(folder, SIZE)
    expect = [_unit_sample(r["samples"][0]["meta"]["unit"], row).image
              for r in records for row in range(r["rows"])]
    order = np.random.default_rng(0).permutation(len(expect))
    got = arrays["images"][order]
    assert all(np.array_equal(got[j], expect[i]) for j, i in enumerate(order))
    assert len(arrays["images"].reader._fds) <= 3


def test_data_statistics_stream_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """`bench data show` statistics read the store block by block and equal those of the
    whole domain in memory (block edges not aligned with the pixel subsampling stride)."""
    from datasets import report

    data = SyntheticDomain.from_toml(DATA / "tiny-dbt.toml").load(32, tmp_path)
    whole = DomainData("tiny-dbt", np.asarray(data.images), np.asarray(data.masks),
                       data.spacing_mm, data.patient_ids, data.image_ids, data.meta)
    monkeypatch.setattr(report, "CHUNK_ROWS", 5)
    lazy_stats, whole_stats = report.intensity_stats(data), report.intensity_stats(whole)
    assert lazy_stats.keys() == whole_stats.keys()
    for key, value in whole_stats.items():
        if isinstance(value, str):
            assert lazy_stats[key] == value
        else:
            assert lazy_stats[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    step_pixels = report.breast_pixels(data, max_pixels=7_000)
    flat = np.asarray(data.images).reshape(-1)[::int(np.ceil(data.images.size / 7_000))]
    np.testing.assert_array_equal(step_pixels, flat[(flat > 0) & (flat < 1)])


def test_loader_workers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader threads: none on CPU, some on CUDA, $CALCBENCH_LOADER_WORKERS overrides, and a
    bad value is a one-line user error naming the variable."""
    from benchmark.feed import loader_workers

    monkeypatch.delenv("CALCBENCH_LOADER_WORKERS", raising=False)
    assert loader_workers(torch.device("cpu")) == 0
    assert 1 <= loader_workers(torch.device("cuda")) <= 4
    monkeypatch.setenv("CALCBENCH_LOADER_WORKERS", "3")
    assert loader_workers(torch.device("cpu")) == 3
    monkeypatch.setenv("CALCBENCH_LOADER_WORKERS", "many")
    with pytest.raises(UserError, match="CALCBENCH_LOADER_WORKERS must be a whole number"):
        loader_workers(torch.device("cpu"))


def test_phase_peak_rss_is_the_phase_s_own() -> None:
    """A phase started from a parent that once held ~300 MiB reports its own small peak (Linux
    carries ru_maxrss across exec, so bench perf data reads VmHWM instead)."""
    import subprocess
    import sys

    code = ("import subprocess, sys; a = bytearray(300 << 20); a[::4096] = b'x' * len(a[::4096]);"
            "print(subprocess.run([sys.executable, '-c', 'from benchmark.perf.data_scale import "
            "own_peak_mib; print(own_peak_mib())'], capture_output=True, text=True, "
            "check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert float(out.strip()) < 200
