"""Launcher plugins: the registry, and the local pool, submitit's local executor and a local
Ray instance each running a one-job smoke sweep for real."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.launchers import LAUNCHERS, LaunchOptions, get_launcher
from benchmark.launchers.base import Launcher
from benchmark.launchers.local import visible_gpus
from benchmark.progress import NullReporter
from benchmark.sweep import SweepSpec, job_state, read_manifest, run_sweep

DATA = Path(__file__).resolve().parent / "data"
# Tiny synthetic domains (generated in seconds); workers in other processes cannot see the
# in-memory toy domains, so these are passed as TOML paths.
SPEC = SweepSpec(("unet",), (str(DATA / "tiny-ffdm.toml"),), (str(DATA / "tiny-dbt.toml"),),
                 (0,), 1, "smoke")


def test_builtin_launchers_come_from_the_entry_point_group() -> None:
    found = LAUNCHERS.all()
    assert {"local", "slurm", "ray"} <= set(found)
    assert all(issubclass(found[n].cls, Launcher) for n in ("local", "slurm", "ray"))
    assert found["local"].provider.package == "calcbench"
    with pytest.raises(UserError, match=r"unknown launcher 'rey'.*did you mean 'ray'"):
        get_launcher("rey", LaunchOptions())
    with pytest.raises(UserError, match="--opt partitionn: not an option of the 'slurm'"):
        get_launcher("slurm", LaunchOptions(extra={"partitionn": "gpu"}))


class _GpuProbe:
    """A picklable stand-in job that reports which GPU its worker was pinned to."""

    def __call__(self) -> dict[str, Any]:
        return {"state": "done", "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "pid": os.getpid()}


def test_local_pins_one_gpu_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several visible GPUs each worker process gets exactly one of them."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    seen: list[dict[str, Any]] = []
    get_launcher("local", LaunchOptions()).launch([_GpuProbe() for _ in range(6)], seen.append)
    assert len(seen) == 6 and {o["gpu"] for o in seen} <= {"3", "5"}
    by_pid: dict[int, set[str]] = {}
    for o in seen:
        by_pid.setdefault(o["pid"], set()).add(o["gpu"])
    assert all(len(g) == 1 for g in by_pid.values())  # a worker never changes GPU
    assert len({next(iter(g)) for g in by_pid.values()}) == len(by_pid)  # nor shares one
    with pytest.raises(UserError, match="only 2 GPUs are visible"):
        get_launcher("local", LaunchOptions(workers=3)).launch([_GpuProbe()] * 3, seen.append)


def _sweep(launcher: Launcher, results: Path, cache: Path) -> None:
    outcome = run_sweep(SPEC, launcher, {"results_dir": results, "cache_dir": cache,
                                         "device": "cpu", "checkpoint_every": None},
                        NullReporter())
    assert [o["state"] for o in outcome.outcomes] == ["done"], outcome.outcomes
    _, jobs = read_manifest(results, SPEC.sweep_id)
    assert [job_state(results, SPEC.sweep_id, j).state for j in jobs] == ["done"]
    cases = pd.read_parquet(results / "runs" / jobs[0].run_id / "per_case.parquet")
    assert set(cases["target"]) == set(SPEC.sources) | set(SPEC.targets)
    again = run_sweep(SPEC, launcher, {"results_dir": results, "cache_dir": cache,
                                       "device": "cpu", "checkpoint_every": None},
                      NullReporter())
    assert again.outcomes == [] and again.already_done == 1  # finished jobs are skipped


def test_local_launcher_process_pool(results_dir: Path, session_cache: Path) -> None:
    _sweep(get_launcher("local", LaunchOptions(workers=1)), results_dir, session_cache)


def test_slurm_launcher_with_submitits_local_executor(results_dir: Path,
                                                       session_cache: Path) -> None:
    launcher = get_launcher("slurm", LaunchOptions(time_min=10, extra={"cluster": "local"}))
    _sweep(launcher, results_dir, session_cache)
    logs = list((results_dir / "sweeps" / SPEC.sweep_id / "submitit").rglob("*_log.out"))
    assert logs  # the job really ran through submitit (its own log folder)
    assert _torch_threads(results_dir) == [1]  # --cpus-per-job (default 1), not every core


def _torch_threads(results: Path) -> list[int]:
    return [json.loads(p.read_text())["torch_threads"] for p in results.glob("runs/*/run.json")]


def test_ray_launcher_on_a_local_instance(results_dir: Path, session_cache: Path) -> None:
    import ray  # in the `test` extra, so CI always runs this

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        _sweep(get_launcher("ray", LaunchOptions(cpus_per_job=1)), results_dir, session_cache)
        assert _torch_threads(results_dir) == [1]
    finally:
        ray.shutdown()
