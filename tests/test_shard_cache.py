"""The shard store: same arrays as before, lazy reads, kill -9 resume, corrupt shards,
concurrent readers during a build, full disk, and the same per-case rows as the old code."""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.errors import UserError
from benchmark.feed import batch_stream
from datasets import shard_build
from datasets.domain import DomainData
from datasets.real.bindings import Binding
from datasets.real.domain import RealDomain
from datasets.shard_build import Sample, ShardWriter, build_lock, build_store, open_or_build
from datasets.shards import ShardError, open_store
from datasets.synthetic.domain import SyntheticDomain
from tests.real_fixtures import folder_tree

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


def test_synthetic_cache_gives_todays_arrays_and_reads_lazily(tmp_path: Path) -> None:
    """The cached arrays are bit-identical to the pre-store generator output (hashes from the
    old code) and to an in-memory generation; rows are read lazily with numpy semantics."""
    golden = json.loads((DATA / "golden-stream-smoke.json").read_text())["arrays_32px"]
    for name in ("tiny-ffdm", "tiny-dbt"):
        dom = SyntheticDomain.from_toml(DATA / f"{name}.toml")
        dom.workers = 2
        data = dom.load(32, tmp_path)
        assert type(data.images).__name__ == "LazyArray" and data.images.shape == (24, 32, 32)
        images, masks = np.asarray(data.images), np.asarray(data.masks)
        assert hashlib.sha256(images.tobytes()).hexdigest() == golden[name]["images"]
        assert hashlib.sha256(masks.tobytes()).hexdigest() == golden[name]["masks"]
        fresh = SyntheticDomain.from_toml(DATA / f"{name}.toml").generate(32)
        np.testing.assert_array_equal(images, fresh.images)
        assert data.meta == fresh.meta and data.image_ids == fresh.image_ids
        np.testing.assert_array_equal(data.spacing_mm, fresh.spacing_mm)
        picks = np.array([23, 0, 5, 5, 6, 7, 8, 1])  # repeats, runs across shards, any order
        np.testing.assert_array_equal(data.images[picks], images[picks])
        np.testing.assert_array_equal(data.images[-1], images[-1])
        np.testing.assert_array_equal(data.masks[3:17:2], masks[3:17:2])
        np.testing.assert_array_equal(data.masks[images.mean(axis=(1, 2)) > 0.2],
                                      masks[images.mean(axis=(1, 2)) > 0.2])
        np.testing.assert_array_equal(data.images[4, 3:5], images[4, 3:5])
        with pytest.raises(IndexError):
            data.images[24]


def test_real_cache_gives_todays_arrays(tmp_path: Path) -> None:
    """Built through the shard store (2 workers), a real folder dataset equals its in-memory
    decode exactly, and reading it again decodes nothing."""
    root = tmp_path / "data"
    folder_tree(root)
    binding = Binding("f", "folder", str(root), {})
    with pytest.warns(UserWarning):
        direct = RealDomain(binding).build(32)
    dom = RealDomain(binding)
    dom.workers = 2
    with pytest.warns(UserWarning):
        cached = dom.load(32, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(cached.images), direct.images)
    np.testing.assert_array_equal(np.asarray(cached.masks), direct.masks)
    np.testing.assert_array_equal(cached.spacing_mm, direct.spacing_mm)
    assert cached.image_ids == direct.image_ids and cached.meta == direct.meta
    assert cached.patient_ids == direct.patient_ids
    assert cached.official_split == direct.official_split
    again = RealDomain(binding)
    again.load(32, tmp_path / "cache")
    assert again.decode_count == 0 and again.problems == dom.problems


def test_kill_9_during_build_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """SIGKILL a 2-worker build after some shards finished; the rerun keeps them, builds the
    rest, and every file equals an uninterrupted build's."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _build(whole, 12)
    proc = _spawn(f"from tests.test_shard_cache import builder_main; "
                  f"builder_main({str(killed)!r}, 12, 0.15, 2)")
    deadline = time.monotonic() + 60
    while len(list(killed.glob("shard-*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # orphaned pool workers notice the dead parent and exit
    finished = {p.name for p in killed.glob("shard-*.json")}
    assert 3 <= len(finished) < 12 and not (killed / "manifest.json").exists()
    built: list[int] = []
    original = _produce(0.0)

    def counting(unit: int, writer: ShardWriter) -> None:
        """Record which units the resumed build produces."""
        built.append(unit)
        original(unit, writer)

    with build_lock(killed):
        build_store(killed, SIZE, 12, counting, {"name": "t"}, workers=1)
    assert len(built) == 12 - len(finished)  # the finished shards were kept
    assert _files(killed) == _files(whole)


def test_corrupt_or_truncated_shard_is_named_and_rebuilt(tmp_path: Path) -> None:
    """A truncated array, a garbage header and a flipped byte (crc32, checked when a build
    resumes) are each named in a one-line warning and rebuilt to the original bytes."""
    folder = tmp_path / "s"
    _build(folder, 6)
    good = _files(folder)
    logs: list[str] = []

    class Log:
        """A reporter that keeps log lines."""

        def log(self, message: str) -> None:
            """Keep one line."""
            logs.append(message)

    def reopen() -> None:
        """Open the store, rebuilding what is broken."""
        open_or_build(folder, SIZE, lambda: build_store(folder, SIZE, 6, _produce(0.0),
                                                        {"name": "t"}, workers=1,
                                                        progress=Log()), Log())

    shard = folder / "shard-00002.images.npy"
    shard.write_bytes(shard.read_bytes()[:-7])  # truncated
    reopen()
    assert any("shard-00002.images.npy" in m and "truncated" in m for m in logs)
    (folder / "shard-00004.masks.npy").write_bytes(b"not a numpy file at all")
    reopen()
    assert any("shard-00004.masks.npy" in m and "corrupt header" in m for m in logs)
    assert all("\n" not in m for m in logs) and _files(folder) == good
    # a flipped byte passes the size checks; the crc32 catches it when the build resumes
    (folder / "manifest.json").unlink()
    raw = bytearray((folder / "shard-00001.images.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "shard-00001.images.npy").write_bytes(bytes(raw))
    reopen()
    assert any("shard-00001.images.npy" in m and "crc32" in m for m in logs)
    assert _files(folder) == good


def test_readers_never_see_a_half_written_shard(tmp_path: Path) -> None:
    """Two reader processes poll the store while a third builds it (2 workers, slow units):
    every shard they can see is complete and right, and the store opens only when whole."""
    folder = tmp_path / "s"
    folder.mkdir()
    readers = [_spawn(f"from tests.test_shard_cache import reader_main; "
                      f"reader_main({str(folder)!r}, 6.0)") for _ in range(2)]
    builder = _spawn(f"from tests.test_shard_cache import builder_main; "
                     f"builder_main({str(folder)!r}, 16, 0.08, 2)")
    assert builder.wait(timeout=120) == 0, builder.stderr.read() if builder.stderr else ""
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["bad"] == [] and report["checked"] > 16


def test_full_disk_is_one_line_and_leaves_no_partial_shard(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Too little free space (checked before every sample) or ENOSPC while writing: a
    one-line UserError naming the cache folder and the space needed; no shard file is left."""
    folder = tmp_path / "cache" / "s"

    class Usage:
        """shutil.disk_usage's answer on a nearly full disk."""

        free = 5 << 20

    monkeypatch.setattr(shard_build.shutil, "disk_usage", lambda _p: Usage())
    with pytest.raises(UserError) as info:
        _build(folder, 4, workers=2)
    message = str(info.value)
    assert "\n" not in message and str(folder.parent) in message and "MiB" in message
    assert "needs at least" in message and "5 MiB free" in message
    assert sorted(p.name for p in folder.iterdir()) == [".build.lock"]
    monkeypatch.undo()

    real_add = ShardWriter.add

    def enospc_on_unit_2(self: ShardWriter, sample: Sample) -> None:
        """Fail shard 2's first sample."""
        if self.name == "shard-00002":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, sample)

    monkeypatch.setattr(ShardWriter, "add", enospc_on_unit_2)
    with pytest.raises(OSError):  # a raw OSError from add itself is not swallowed...
        _build(folder, 4, workers=1)
    assert not list(folder.glob("shard-00002*")) and not list(folder.glob(".*.tmp"))
    monkeypatch.undo()

    def enospc_write(self: ShardWriter, sample: Sample) -> None:
        """Make the images file full, then add."""
        self.files["images"] = _FullFile(self.files["images"])
        real_add(self, sample)

    monkeypatch.setattr(ShardWriter, "add", enospc_write)
    with pytest.raises(UserError, match="is full"):  # ...but ENOSPC from a write is
        _build(folder, 4, workers=1)
    assert not list(folder.glob(".*.tmp")) and not (folder / "manifest.json").exists()
    stray = {p.name.split(".")[0] for p in folder.glob("shard-*.npy")}
    assert stray == {p.name.split(".")[0] for p in folder.glob("shard-*.json")}


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


def test_same_seed_same_per_case_rows_as_before_the_store(tmp_path: Path) -> None:
    """A smoke U-Net run tiny-ffdm -> tiny-dbt gives the per-case rows and training history
    recorded with the code before the shard store (tests/data/golden-stream-smoke.json)."""
    from benchmark.progress import NullReporter
    from benchmark.runner import RunRequest, run

    golden = json.loads((DATA / "golden-stream-smoke.json").read_text())
    run(RunRequest(method="unet", source=str(DATA / "tiny-ffdm.toml"),
                   targets=[str(DATA / "tiny-dbt.toml")], profile="smoke",
                   results_dir=tmp_path / "res", cache_dir=tmp_path / "cache",
                   eval_last=True), NullReporter())  # the golden rows hold both checkpoints
    folder = next((tmp_path / "res" / "runs").iterdir())
    history = json.loads((folder / "run.json").read_text())["training"]["history"]
    assert history == golden["history"]
    rows = pd.read_parquet(folder / "per_case.parquet")
    rows = json.loads(rows[list(golden["rows"][0])].to_json(orient="records"))
    assert rows == golden["rows"]


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
