"""Faults (issue 7, section 3): kill -9 a sweep at several moments and launch it again; run two
sweeps on one results folder at once. Nothing finished is lost, nothing runs twice, no file is
left corrupt or half-written, and the numbers equal those of an uninterrupted sweep."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"
BENCH = Path(sys.executable).parent / "bench"
# Two jobs (seeds 0 and 1) of six steps per epoch, checkpointed after every step so that a
# kill inside an epoch exercises the mid-epoch resume.
SWEEP = ["sweep", "--profile", "smoke", "--methods", "unet",
         "--sources", str(DATA / "tiny-ffdm.toml"), "--targets", str(DATA / "tiny-dbt.toml"),
         "--seeds", "0,1", "--set", "steps_per_epoch=6", "--checkpoint-every", "1",
         "--workers", "1", "--no-progress"]


def _start(results: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    """Launch the sweep in its own process group (so kill -9 takes its workers too)."""
    env = {**os.environ, "CALCBENCH_RESULTS": str(results), "CALCBENCH_CACHE": str(cache),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    with open(log, "ab") as fh:
        return subprocess.Popen([str(BENCH), *SWEEP], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    assert proc.wait(timeout=600) == 0, log.read_text()
    return log.read_text()


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    """kill -9 the sweep's whole process group as soon as `ready()` holds."""
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, "the sweep ended before the moment of the kill"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _job_records(results: Path) -> list[dict[str, object]]:
    out = []
    for path in results.glob("sweeps/*/jobs/*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue  # not possible with atomic writes; the final checks would catch it
    return out


def _check_sound(results: Path, max_attempts: int = 1) -> None:
    """Every job done once, no temp file, every JSON/parquet/checkpoint readable; attempts
    (counted when each starts, so a killed one counts) at most `max_attempts` per job."""
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")]
    for path in results.rglob("*.json"):
        json.loads(path.read_text())
    for path in results.rglob("*.parquet"):
        pd.read_parquet(path)
    for path in results.rglob("*.pt"):
        torch.load(path, weights_only=True)
    records = _job_records(results)
    assert len(records) == 2 and all(r["state"] == "done" for r in records)
    assert all(1 <= r["attempts"] <= max_attempts for r in records), records  # never redone


def _runs(results: Path) -> dict[str, tuple[pd.DataFrame, dict[str, torch.Tensor]]]:
    """Per run: its per-case rows (sorted) and the weights of its best checkpoint."""
    out = {}
    for folder in sorted((results / "runs").iterdir()):
        status = json.loads((folder / "status.json").read_text())
        assert status["state"] == "trained"
        assert all(t["state"] == "done" for t in status["targets"].values())
        cases = pd.read_parquet(folder / "per_case.parquet")
        # measured costs (timings, memory) vary between processes; everything else must not
        cases = cases.drop(columns=[c for c in cases if re.search(r"seconds|time|mem", c)])
        cases = cases.sort_values([c for c in ("target_key", "checkpoint", "image_id")
                                   if c in cases]).reset_index(drop=True)
        best = torch.load(folder / "checkpoints" / "best.pt", weights_only=True)
        out[folder.name] = (cases, best["method"]["modules"]["network"])
    return out


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory: pytest.TempPathFactory, session_cache: Path
               ) -> tuple[Path, list[str]]:
    """Two sweeps started together on one results folder, both run to the end."""
    results = tmp_path_factory.mktemp("concurrent") / "results"
    logs = [results.parent / f"sweep-{i}.log" for i in range(2)]
    procs = [_start(results, session_cache, log) for log in logs]
    return results, [_finish(p, log) for p, log in zip(procs, logs, strict=True)]


def test_two_sweeps_on_one_folder_share_the_work(concurrent: tuple[Path, list[str]]) -> None:
    results, outputs = concurrent
    _check_sound(results)
    ran = [int(re.findall(r"(\d+) ran now", out)[-1]) for out in outputs]
    assert sum(ran) == 2, outputs  # each job trained by exactly one of the two sweeps
    assert len(_runs(results)) == 2


def test_kill_9_at_any_moment_then_relaunch(concurrent: tuple[Path, list[str]],
                                            tmp_path: Path, session_cache: Path) -> None:
    reference = _runs(concurrent[0])
    results, log = tmp_path / "results", tmp_path / "sweep.log"

    # 1. in the middle of the first training (its first mid-epoch checkpoint exists)
    proc = _start(results, session_cache, log)
    _kill_when(proc, lambda: any(results.glob("runs/*/checkpoints/last.pt")))
    # 2. right after the first job finished
    proc = _start(results, session_cache, log)
    _kill_when(proc, lambda: any(r.get("state") == "done" for r in _job_records(results)))
    # 3. relaunched to the end
    output = _finish(_start(results, session_cache, log), log)

    assert "resuming from" in "".join(p.read_text() for p in results.glob("sweeps/*/logs/*"))
    assert int(re.findall(r"(\d+) were done", output)[-1]) >= 1  # the last launch skipped it
    # the job killed mid-training was started twice; none was started after it finished
    _check_sound(results, max_attempts=2)
    assert max(r["attempts"] for r in _job_records(results)) == 2
    resumed = _runs(results)
    assert sorted(resumed) == sorted(reference)  # the same runs, none lost or duplicated
    for run_id, (cases, weights) in resumed.items():
        ref_cases, ref_weights = reference[run_id]
        pd.testing.assert_frame_equal(cases, ref_cases)
        assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_workers_die_with_a_killed_sweep(concurrent: tuple[Path, list[str]], tmp_path: Path,
                                         session_cache: Path) -> None:
    """kill -9 of the sweep process alone (not its group) takes its worker with it: no orphan
    keeps training, holding the job's lock and a core, and the relaunch finishes the work."""
    results, log = tmp_path / "results", tmp_path / "sweep.log"
    proc = _start(results, session_cache, log)
    deadline = time.monotonic() + 600
    while not (any(results.glob("runs/*/checkpoints/last.pt")) and _children(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [w for w in workers if Path(f"/proc/{w}").exists()
                 and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]]
        time.sleep(0.1)
    for w in alive:  # leave nothing behind even when the check fails
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their sweep"
    _finish(_start(results, session_cache, log), log)
    _check_sound(results, max_attempts=2)
    assert sorted(_runs(results)) == sorted(_runs(concurrent[0]))
