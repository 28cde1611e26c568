"""Sweeps: expansion into run ids, skip/resume, status, retry of failed jobs, dry-run costs.

These run in this process (`--workers 0`) on the in-memory toy domains; the real launchers
and the kill -9 test are in test_launchers.py and test_sweep_faults.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmark.config import HParam, resolve_hparams
from benchmark.errors import UserError
from benchmark.launchers import LaunchOptions, get_launcher
from benchmark.progress import NullReporter
from benchmark.registry import METHODS, register_method
from benchmark.runner import RunRequest, plan_run
from benchmark.sweep import (
    SweepSpec,
    estimate_costs,
    expand,
    job_lock,
    job_state,
    make_spec,
    parse_seeds,
    read_manifest,
    run_sweep,
)
from methods.unet import UnetMethod

FLAKY = {"fail": True}


class FlakyUnet(UnetMethod):
    """U-Net whose update raises while FLAKY['fail'] is set (a bug fixed between launches)."""

    def update(self, batches: dict[str, Any]) -> dict[str, float]:
        if FLAKY["fail"]:
            raise RuntimeError("boom: flaky update")
        return super().update(batches)


@pytest.fixture()
def flaky_method() -> Iterator[str]:
    """Register 'flakyunet' for one test, then remove it so other tests never see it."""
    register_method("flakyunet", display_name="FlakyUnet", group="plugin")(FlakyUnet)
    FLAKY["fail"] = True
    yield "flakyunet"
    METHODS._entries.pop("flakyunet", None)


def _spec(methods: tuple[str, ...] = ("unet",), seeds: tuple[int, ...] = (0,),
          trials: int = 1) -> SweepSpec:
    return SweepSpec(methods, ("toy",), ("toy", "toy-inv"), seeds, trials, "smoke")


def _ctx(results: Path, cache: Path) -> dict[str, Any]:
    return {"results_dir": results, "cache_dir": cache, "device": "cpu",
            "checkpoint_every": None}


def test_parse_and_validate_selections() -> None:
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds("3-5,1") == [3, 4, 5, 1]
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds("a")
    with pytest.raises(UserError, match="range '3-1' is empty"):  # was 0 jobs / an IndexError
        parse_seeds("3-1")
    with pytest.raises(UserError, match=r"unknown method 'unt'.*did you mean 'unet'"):
        make_spec("unt", "ffdm", "dbt", "0", 1, "smoke", None)
    with pytest.raises(UserError, match="hparam-trials"):
        make_spec("unet", "ffdm", "dbt", "0", 0, "smoke", None)
    spec = make_spec("all", "ffdm", None, "0", 1, "smoke", None)
    assert spec.methods == tuple(sorted(METHODS.all())) and "unet" in spec.methods


def test_expand_names_jobs_by_the_runners_run_id(toy_domains: dict[str, object]) -> None:
    spec = _spec(seeds=(0, 1), trials=2)
    jobs = expand(spec)
    assert len(jobs) == 4  # 1 method x 1 source x 2 seeds x 2 trials
    assert {(j.seed, j.trial) for j in jobs} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for job in jobs:
        assert job.targets == ["toy-inv"]  # the source is never a target of its own
        assert job.target_keys[0].startswith("toy@") and job.target_keys[1].startswith("toy-inv@")
        req = RunRequest(method="unet", source="toy", targets=["toy-inv"], profile="smoke",
                         seed=job.seed, trial=job.trial)
        assert plan_run(req, NullReporter()).run_id == job.run_id
    by = {(j.seed, j.trial): j.hparams for j in jobs}
    assert by[(0, 0)] == resolve_hparams(UnetMethod.hparam_space(), "smoke")
    assert by[(0, 1)] != by[(0, 0)] and by[(0, 1)] == by[(1, 1)]  # trial draw, seed-free
    assert [j.run_id for j in expand(spec)] == [j.run_id for j in jobs]  # stable order
    assert spec.sweep_id == _spec(seeds=(0, 1), trials=2).sweep_id
    assert spec.sweep_id != _spec(seeds=(0, 2), trials=2).sweep_id


def test_adding_an_hparam_never_reshuffles_the_others() -> None:
    base = UnetMethod.hparam_space()
    extended = [HParam("zeta", 0.5, lambda r: float(r.uniform())),
                *base, HParam("alpha", 1, lambda r: int(r.randint(10)))]
    for trial in range(1, 6):
        before = resolve_hparams(base, "quick", trial)
        after = resolve_hparams(extended, "quick", trial)
        assert {k: after[k] for k in before} == before
    assert resolve_hparams(base, "quick", 1) != resolve_hparams(base, "quick", 2)


def test_skip_status_failure_and_retry(toy_domains: dict[str, object], results_dir: Path,
                                      session_cache: Path, flaky_method: str) -> None:
    spec = _spec(methods=("unet", flaky_method))
    launcher = get_launcher("local", LaunchOptions(workers=0))
    first = run_sweep(spec, launcher, _ctx(results_dir, session_cache), NullReporter())
    assert sorted(o["state"] for o in first.outcomes) == ["done", "failed"]
    _, jobs = read_manifest(results_dir, spec.sweep_id)
    states = {j.method: job_state(results_dir, spec.sweep_id, j) for j in jobs}
    assert states["unet"].state == "done"
    failed = states[flaky_method]
    assert failed.state == "failed" and "boom: flaky update" in failed.error[-1]
    run_status = json.loads((results_dir / "runs" / jobs[[j.method for j in jobs].index(
        flaky_method)].run_id / "status.json").read_text())
    assert run_status["state"] == "failed" and run_status["error_tail"][-1] == failed.error[-1]

    out = CliRunner().invoke(_app(), ["sweep", "status", "--sweep", spec.sweep_id,
                                      "--results-dir", str(results_dir)],
                             env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "boom: flaky update" in out.output and "1 done" in out.output \
        and "1 failed" in out.output

    FLAKY["fail"] = False  # the bug is fixed, but failed jobs stay failed without the flag
    again = run_sweep(spec, launcher, _ctx(results_dir, session_cache), NullReporter())
    assert again.outcomes == [] and again.already_done == 1 and again.skipped_failed == 1
    retried = run_sweep(spec, launcher, _ctx(results_dir, session_cache), NullReporter(),
                        retry_failed=True)
    assert [(o["method"], o["state"]) for o in retried.outcomes] == [(flaky_method, "done")]
    assert all(job_state(results_dir, spec.sweep_id, j).state == "done" for j in jobs)
    record = json.loads((results_dir / "sweeps" / spec.sweep_id / "jobs" /
                         f"{retried.outcomes[0]['run_id']}.json").read_text())
    assert record["state"] == "done" and record["attempts"] == 2


def test_incomplete_and_running_states(toy_domains: dict[str, object], results_dir: Path,
                                       session_cache: Path) -> None:
    """A job whose training died resumes from last.pt; a locked job shows as running."""
    spec = _spec()
    [job] = expand(spec)
    launcher = get_launcher("local", LaunchOptions(workers=0))
    run_sweep(spec, launcher, _ctx(results_dir, session_cache), NullReporter())
    folder = results_dir / "runs" / job.run_id
    # Pretend it was killed before evaluating: status back to training, a half-written temp.
    status = json.loads((folder / "status.json").read_text())
    status.update(state="training", targets={})
    (folder / "status.json").write_text(json.dumps(status))
    (folder / "checkpoints" / ".last.pt.x.tmp").write_bytes(b"half a checkpoint")
    assert job_state(results_dir, spec.sweep_id, job).state == "incomplete"
    with job_lock(results_dir, job.run_id, wait=False) as got:
        assert got and job_state(results_dir, spec.sweep_id, job).state == "running"
    again = run_sweep(spec, launcher, _ctx(results_dir, session_cache), NullReporter())
    assert [o["state"] for o in again.outcomes] == ["done"]
    assert job_state(results_dir, spec.sweep_id, job).state == "done"
    assert not list(folder.rglob("*.tmp"))  # the killed writer's leftover was removed
    log = (results_dir / "sweeps" / spec.sweep_id / "logs" / f"{job.run_id}.log").read_text()
    assert "resuming from" in log and log.count("training Unet") == 2


def test_dry_run_lists_jobs_and_estimates(toy_domains: dict[str, object], results_dir: Path,
                                         session_cache: Path) -> None:
    spec = _spec(seeds=(0, 1))
    jobs = expand(spec)
    measured = estimate_costs(jobs, results_dir)
    assert all(e.seconds > 0 and "measured" in e.how for e in measured.values())
    run_sweep(SweepSpec(("unet",), ("toy",), ("toy-inv",), (0,), 1, "smoke"),
              get_launcher("local", LaunchOptions(workers=0)), _ctx(results_dir, session_cache),
              NullReporter())
    from_runs = estimate_costs(jobs, results_dir)
    assert all(e.how == "median of 1 finished run(s)" for e in from_runs.values())
    out = CliRunner().invoke(_app(), [
        "sweep", "--profile", "smoke", "--methods", "unet", "--sources", "toy",
        "--targets", "toy,toy-inv", "--seeds", "0,1", "--dry-run",
        "--results-dir", str(results_dir)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "2 jobs, 1 done, 1 to run" in out.output and "dry run" in out.output
    assert not (results_dir / "sweeps" / spec.sweep_id).exists()  # nothing written


def test_cli_errors_are_one_line(results_dir: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(_app(), ["sweep", "--methods", "unet", "--results-dir",
                                 str(results_dir)])
    assert out.exit_code == 2 and "--sources are required" in out.output
    out = runner.invoke(_app(), ["sweep", "--methods", "unet", "--sources", "ffdm",
                                 "--launcher", "slurmm", "--results-dir", str(results_dir)])
    assert out.exit_code == 2 and "did you mean 'slurm'" in out.output
    out = runner.invoke(_app(), ["sweep", "status", "--sweep", "nope", "--results-dir",
                                 str(results_dir)])
    assert out.exit_code == 2 and "no sweep 'nope'" in out.output


def _app() -> Any:
    from benchmark.cli import app

    return app


def test_makespan_is_the_busiest_workers_total() -> None:
    from benchmark.sweep import Estimate, Job, makespan

    jobs = [Job(f"j{i}", "unet", "toy", [], 0, 0, "smoke", [], {}) for i in range(4)]
    costs = {"j0": Estimate(10, ""), "j1": Estimate(1, ""), "j2": Estimate(1, ""),
             "j3": Estimate(5, "")}
    assert makespan(jobs, costs, 1) == 17
    assert makespan(jobs, costs, 2) == 10  # j1, j2 and j3 go to the second worker
    assert makespan(jobs, costs, 8) == 10


def test_local_workers_split_the_cores_this_process_may_use() -> None:
    """Under taskset (or a Slurm allocation) the workers share the allowed cores, not the
    machine's: one allowed core gives each of 1 or 2 workers one thread."""
    import os
    import subprocess
    import sys

    from benchmark.launchers.local import cpu_threads_per_worker

    allowed = len(os.sched_getaffinity(0))
    assert cpu_threads_per_worker(1) == allowed
    assert cpu_threads_per_worker(2) == max(1, allowed // 2)
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
            "from benchmark.launchers.local import cpu_threads_per_worker as f;"
            "print(f(1), f(2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "1"]
