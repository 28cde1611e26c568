"""A full disk at a write is one line and exit 2, leaves no broken file, and the same command
finishes once space is back (a real small filesystem: a tmpfs mounted for the test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmark.errors import UserError
from benchmark.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root, as CI and `make test` run), unmounted even when a test fails."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (the test needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on `folder`'s filesystem."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return filler


def test_a_write_that_does_not_fit_is_one_line_and_leaves_nothing(small_fs: Path) -> None:
    _fill(small_fs, 64 * 1024)
    target = small_fs / "run" / "checkpoint.pt"
    with pytest.raises(UserError) as info:
        atomic_write(target, lambda fh: torch.save({"w": torch.zeros(200_000)}, fh))
    text = str(info.value)
    assert "\n" not in text and f"no space left in '{target.parent}'" in text
    assert re.search(r"writing checkpoint\.pt needs 78\d\.\d KiB \(\d+\.\d KiB free\)", text), text
    assert not target.exists() and not [p for p in target.parent.iterdir()]  # no temp file


@pytest.mark.slow
def test_bench_run_on_a_full_disk_then_after_freeing_space(small_fs: Path,
                                                          session_cache: Path) -> None:
    results = small_fs / "results"
    filler = _fill(small_fs, 600 * 1024)  # room for run.json and the rows, not a checkpoint
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--method", "unet", "--profile",
           "smoke", "--source", "ffdm", "--no-progress", "--results-dir", str(results),
           "--cache-dir", str(session_cache)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 2, first.stdout + first.stderr
    err = first.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in first.stdout + first.stderr
    assert "no space left in '" in err and "needs" in err
    for ckpt in results.glob("runs/*/checkpoints/*.pt"):  # whatever exists loads
        torch.load(ckpt, weights_only=True)
    assert not list(results.glob("runs/*/checkpoints/.*.tmp"))
    filler.unlink()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert list(results.glob("runs/*/checkpoints/best.pt"))
    assert "DSC" in second.stdout
