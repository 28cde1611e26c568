"""What real Slurm and Ray clusters showed (issue 14), each pinned without a cluster: absolute
folders, no silent local fallback, per-job threads and GPUs, scancel = interrupted (resumable),
the real cause of a lost task, queued jobs not resubmitted, impossible Ray requests and refused
submissions as one-line errors, and bookkeeping over every attempt. The same behaviour on real
daemons is checked by test_cluster_engines.py."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import _dirs, app
from benchmark.errors import UserError
from benchmark.launchers import LaunchOptions, get_launcher
from benchmark.launchers.base import Launcher, Outcome, pin_job_resources
from benchmark.launchers.ray_tasks import check_fits
from benchmark.launchers.slurm import lost_task_outcome, submission_error
from benchmark.progress import NullReporter
from benchmark.runner import default_cache_dir, default_results_dir
from benchmark.sweep import JobCall, SweepSpec, expand, job_state, run_sweep

SPEC = SweepSpec(("unet",), ("toy",), ("toy-inv",), (0,), 1, "smoke")


class Recorder(Launcher):
    """A launcher that runs nothing and reports what the test scripts for each call."""

    name = "recorder"

    def __init__(self, outcome: Callable[[JobCall], Outcome] | None = None) -> None:
        super().__init__(LaunchOptions())
        self.calls: list[JobCall] = []
        self.outcome = outcome

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Keep the calls; report the scripted outcome (or run the call here)."""
        self.calls.extend(calls)
        for call in calls:
            on_result(self.outcome(call) if self.outcome else call())


def _ctx(results: Path | str, cache: Path) -> dict[str, Any]:
    return {"results_dir": results, "cache_dir": cache, "device": "cpu",
            "checkpoint_every": None, "command": ("bench", "sweep", "--launcher", "x")}


# 1. relative folders ---------------------------------------------------------------------------

def test_results_and_cache_folders_are_absolute(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, toy_domains: Any,
                                                session_cache: Path) -> None:
    """Ray workers run in `ray start`'s folder: a relative results path must not reach them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALCBENCH_RESULTS", "res")
    assert default_results_dir() == tmp_path / "res"
    monkeypatch.setenv("CALCBENCH_CACHE", "cache")
    assert default_cache_dir() == tmp_path / "cache"
    assert _dirs(Path("a"), Path("b")) == (tmp_path / "a", tmp_path / "b")
    monkeypatch.setenv("CALCBENCH_CACHE", str(session_cache))
    launcher = Recorder(lambda c: {"run_id": c.job["run_id"], "method": "unet", "source": "toy",
                                   "seed": 0, "trial": 0, "state": "submitted"})
    run_sweep(SPEC, launcher, _ctx("results", session_cache), NullReporter())
    assert launcher.calls[0].ctx.results_dir == str(tmp_path / "results")
    assert Path(launcher.calls[0].ctx.cache_dir).is_absolute()


# 2. no silent local fallback, 8. refused submissions --------------------------------------------

def _fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_without_sbatch_is_an_error_not_a_local_run(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, toy_domains: Any,
                                                          session_cache: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm tools
    launcher = get_launcher("slurm", LaunchOptions())
    with pytest.raises(UserError, match=r"'sbatch' is not on PATH.*--opt cluster=local"):
        run_sweep(SPEC, launcher, _ctx(tmp_path / "results", session_cache), NullReporter())
    assert not list((tmp_path / "results").rglob("submitit"))  # nothing was started


def test_refused_slurm_submission_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              toy_domains: Any, session_cache: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "srun", "exit 0")
    _fake_tool(bin_dir, "sbatch", "echo 'sbatch: error: invalid partition specified: nope' >&2;"
               " echo 'sbatch: error: Batch job submission failed: Invalid partition name "
               "specified' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    launcher = get_launcher("slurm", LaunchOptions(partition="nope"))
    with pytest.raises(UserError) as err:
        run_sweep(SPEC, launcher, _ctx(tmp_path / "results", session_cache), NullReporter())
    assert str(err.value) == ("--launcher slurm: the job array was refused: Batch job "
                              "submission failed: Invalid partition name specified")
    assert submission_error("x\nsbatch: error: A\nsbatch: error: B\n") == "B"
    with pytest.raises(UserError, match="Slurm grants whole GPUs"):
        get_launcher("slurm", LaunchOptions(gpus_per_job=0.5))._executor(tmp_path, "x")


def test_cli_slurm_errors_exit_2_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    data = Path(__file__).resolve().parent / "data"
    out = CliRunner().invoke(app, ["sweep", "--launcher", "slurm", "--profile", "smoke",
                                   "--methods", "unet", "--sources",
                                   str(data / "tiny-ffdm.toml"), "--no-progress",
                                   "--results-dir", str(tmp_path / "r")])
    assert out.exit_code == 2, out.output
    assert out.output.count("\n") == 1 and "'sbatch' is not on PATH" in out.output


def test_ray_num_cpus_when_joining_a_cluster_is_one_line(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    launcher = get_launcher("ray", LaunchOptions(extra={"num_cpus": "2"}))
    with pytest.raises(UserError, match="--opt num_cpus: only for a Ray instance the sweep "
                                        "starts itself"):
        launcher.launch([object()], lambda o: None)


# 7. impossible Ray requests -----------------------------------------------------------------

def test_ray_request_no_node_can_hold_is_refused() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]
    check_fits(nodes, 2, 0)
    with pytest.raises(UserError, match=r"--gpus-per-job 1: no node .* 2 CPUs and 0 GPUs"):
        check_fits(nodes, 1, 1)
    with pytest.raises(UserError, match="--cpus-per-job 4"):
        check_fits(nodes, 4, 0)


def test_ray_gpu_request_on_a_cpu_instance_fails_at_once() -> None:
    import ray

    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        launcher = get_launcher("ray", LaunchOptions(gpus_per_job=1))
        with pytest.raises(UserError, match="--gpus-per-job 1: no node"):
            launcher.launch([object()], lambda o: None)
    finally:
        ray.shutdown()


# 3. per-job threads and GPUs ------------------------------------------------------------------

def test_pin_job_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_STEP_GPUS", "2,3")
    try:
        pin_job_resources(1, 2)
        assert torch.get_num_threads() == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
        pin_job_resources(3, 0)  # a CPU job sees no GPU it was not granted
        assert torch.get_num_threads() == 3 and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# 4./5. a task Slurm stopped ---------------------------------------------------------------------

class FakeSlurmJob:
    """What submitit knows of an array task that sacct reports as ended without a result."""

    def __init__(self, state: str, stderr: str) -> None:
        self.job_id, self.state, self._stderr = "41_1", state, stderr

    def get_info(self, mode: str = "standard") -> dict[str, str]:
        return {"State": self.state, "NodeList": "node7"}

    def stderr(self) -> str:
        return self._stderr


STDERR = ("submitit WARNING (2026-12-01 10:00:00) - Bypassing signal SIGTERM\n"
          "slurmstepd: error: *** STEP 41.0 ON node7 CANCELLED AT 2026-12-01T10:00:01 ***\n"
          "submitit WARNING (2026-12-01 10:00:00) - Bypassing signal SIGCONT\n")


def test_scancelled_task_is_interrupted_with_its_cause(toy_domains: Any, results_dir: Path,
                                                      session_cache: Path) -> None:
    [job] = expand(SPEC)
    call = JobCall(job.to_dict(), None)  # type: ignore[arg-type]
    out = lost_task_outcome(FakeSlurmJob("CANCELLED by 0", STDERR), call, RuntimeError("x"))
    assert out["state"] == "interrupted" and out["message"] == "Slurm job 41_1 CANCELLED by 0 "\
        "on node7"
    assert not any("Bypassing" in line for line in out["error"])
    assert out["error"][-1] == out["message"] and "CANCELLED AT" in out["error"][0]
    failed = lost_task_outcome(FakeSlurmJob("OUT_OF_MEMORY", ""), call, RuntimeError("oom"))
    assert failed["state"] == "failed" and failed["error"][-1].endswith("OUT_OF_MEMORY on node7")

    # through a sweep: the job stays resumable, the record names the worker's node
    launcher = Recorder(lambda c: {**lost_task_outcome(FakeSlurmJob("CANCELLED by 0", STDERR),
                                                       c, RuntimeError("x")),
                                   "slurm_job": "41_1"})
    result = run_sweep(SPEC, launcher, _ctx(results_dir, session_cache), NullReporter())
    assert [o["state"] for o in result.outcomes] == ["interrupted"]
    st = job_state(results_dir, SPEC.sweep_id, job)
    assert st.state == "not started" and "CANCELLED by 0" in st.detail
    record = json.loads((results_dir / "sweeps" / SPEC.sweep_id / "jobs"
                         / f"{job.run_id}.json").read_text())
    assert record["host"] == "node7" and record["pid"] is None
    again = run_sweep(SPEC, get_launcher("local", LaunchOptions(workers=0)),
                      _ctx(results_dir, session_cache), NullReporter())
    assert [o["state"] for o in again.outcomes] == ["done"]  # no --retry-failed needed


# 6. queued Slurm jobs -------------------------------------------------------------------------

def test_queued_slurm_jobs_show_and_are_not_resubmitted(monkeypatch: pytest.MonkeyPatch,
                                                        toy_domains: Any, results_dir: Path,
                                                        session_cache: Path) -> None:
    import benchmark.launchers.slurm_queue as slurm

    [job] = expand(SPEC)
    submitted = Recorder(lambda c: {"run_id": c.job["run_id"], "method": "unet",
                                    "source": "toy", "seed": 0, "trial": 0,
                                    "state": "submitted"})
    run_sweep(SPEC, submitted, _ctx(results_dir, session_cache), NullReporter())
    from benchmark.sweep import JobContext, record_submission

    record_submission(JobContext(str(results_dir), str(session_cache), SPEC.sweep_id),
                      job.run_id, "77_0")
    monkeypatch.setattr(slurm, "slurm_queue", lambda sweep_id: {"77_0": "PENDING"})
    from benchmark.sweep import cluster_queue

    queue = cluster_queue(results_dir, SPEC.sweep_id)
    st = job_state(results_dir, SPEC.sweep_id, job, queue)
    assert (st.state, st.detail) == ("queued", "Slurm job 77_0 pending")
    again = Recorder()
    result = run_sweep(SPEC, again, _ctx(results_dir, session_cache), NullReporter())
    assert again.calls == [] and result.in_queue == 1
    monkeypatch.setattr(slurm, "slurm_queue", lambda sweep_id: {"77_0": "RUNNING"})
    assert job_state(results_dir, SPEC.sweep_id, job,
                     cluster_queue(results_dir, SPEC.sweep_id)).state == "running"
    monkeypatch.setattr(slurm, "slurm_queue", lambda sweep_id: {})  # gone from the queue
    assert job_state(results_dir, SPEC.sweep_id, job,
                     cluster_queue(results_dir, SPEC.sweep_id)).state == "not started"


# 9. bookkeeping over every attempt ------------------------------------------------------------

def test_attempts_train_seconds_and_command_cover_every_attempt(toy_domains: Any,
                                                                 results_dir: Path,
                                                                 session_cache: Path) -> None:
    [job] = expand(SPEC)
    local = get_launcher("local", LaunchOptions(workers=0))
    run_sweep(SPEC, local, _ctx(results_dir, session_cache), NullReporter())
    folder = results_dir / "runs" / job.run_id
    first = json.loads((folder / "run.json").read_text())
    assert first["command"] == ["bench", "sweep", "--launcher", "x"]  # not the worker's argv
    # An attempt that Slurm killed after one epoch of 100 s: its last.pt is all that is left.
    last = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    last.update(epoch=0, seconds=100.0, history=last["history"][:1])
    torch.save(last, folder / "checkpoints" / "last.pt")
    status = json.loads((folder / "status.json").read_text())
    status.update(state="training", targets={})
    (folder / "status.json").write_text(json.dumps(status))
    jobs_dir = results_dir / "sweeps" / SPEC.sweep_id / "jobs"
    record = json.loads((jobs_dir / f"{job.run_id}.json").read_text())
    record.update(attempts=2, state="running")  # the killed attempt counted when it started
    (jobs_dir / f"{job.run_id}.json").write_text(json.dumps(record))
    run_sweep(SPEC, local, _ctx(results_dir, session_cache), NullReporter())
    info = json.loads((folder / "run.json").read_text())
    assert info["timings"]["train_seconds"] >= 100.0
    record = json.loads((jobs_dir / f"{job.run_id}.json").read_text())
    assert record["attempts"] == 3 and record["state"] == "done"
    assert record["pid"] == os.getpid() and sys.argv != info["command"]


# 11. the dry run names the launcher's workers ----------------------------------------------------

def test_dry_run_describes_slurm_tasks_not_local_workers(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parent / "data"
    out = CliRunner().invoke(app, ["sweep", "--launcher", "slurm", "--profile", "smoke",
                                   "--methods", "unet", "--sources",
                                   str(data / "tiny-ffdm.toml"), "--seeds", "0,1", "--dry-run",
                                   "--array-parallelism", "8", "--cpus-per-job", "2",
                                   "--results-dir", str(tmp_path / "r")],
                             env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "at most 8 Slurm array task(s) at once" in text and "2 CPU thread(s) each" in text
    assert "local worker" not in text
