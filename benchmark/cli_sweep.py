"""`bench sweep` and `bench sweep status`: resumable grids of runs through a launcher plugin."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from benchmark.cli_common import (
    CacheOpt,
    EvalLastOpt,
    NoProgressOpt,
    ResultsOpt,
    _dirs,
    _reporter,
    console,
    user_errors,
)
from benchmark.errors import UserError

sweep_app = typer.Typer(invoke_without_command=True, help=(
    "Run methods x sources x seeds x hparam trials as resumable jobs (finished jobs are "
    "skipped, interrupted ones resume from their checkpoint); `bench sweep status` shows them."))

MethodsOpt = Annotated[str | None, typer.Option(
    "--methods", help="comma-separated method names, or 'all'")]
SourcesOpt = Annotated[str | None, typer.Option("--sources", help="comma-separated sources")]
TargetsOpt = Annotated[str | None, typer.Option(
    "--targets", help="comma-separated targets (a target equal to the source is skipped: the "
                      "source's own test split is always evaluated)")]
SeedsOpt = Annotated[str, typer.Option("--seeds", help="seeds: '0,1,2' or a range '0-4'")]
TrialsOpt = Annotated[int, typer.Option(
    "--hparam-trials", help="hparam trials per cell: trial 0 = defaults, others random draws",
    min=1, max=10_000)]
ProfileOpt = Annotated[str, typer.Option("--profile", help="smoke | quick | paper")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="override a profile field or method hparam in every job: key=value")]
SweepIdOpt = Annotated[str | None, typer.Option("--sweep", help="sweep id (bench sweep status)")]


def _spec(methods: str | None, sources: str | None, targets: str | None, seeds: str,
          trials: int, profile: str, sets: list[str] | None) -> Any:
    from benchmark.sweep import make_spec

    if not methods or not sources:
        raise UserError("bench sweep: --methods and --sources are required "
                        "(or use `bench sweep status`)")
    return make_spec(methods, sources, targets, seeds, trials, profile, sets)


def _parse_opts(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--opt '{pair}': expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@sweep_app.callback()
@user_errors
def sweep(
    ctx: typer.Context,
    methods: MethodsOpt = None,
    sources: SourcesOpt = None,
    targets: TargetsOpt = None,
    seeds: SeedsOpt = "0",
    hparam_trials: TrialsOpt = 1,
    profile: ProfileOpt = "quick",
    set_: SetOpt = None,
    launcher: Annotated[str, typer.Option(
        help="local | slurm | ray, or a plugin's launcher")] = "local",
    workers: Annotated[int | None, typer.Option(
        help="local: worker processes (default: one per GPU, else 1; 0 = this process)")
    ] = None,
    cpus_per_job: Annotated[int, typer.Option(help="slurm/ray: CPUs per job", min=1,
                                              max=4096)] = 1,
    gpus_per_job: Annotated[float, typer.Option(help="slurm/ray: GPUs per job", min=0.0,
                                                max=64.0)] = 0.0,
    time_min: Annotated[int, typer.Option(
        "--time", help="slurm: time limit per array task, minutes (requeued with resume)",
        min=1, max=525_600)] = 240,
    partition: Annotated[str | None, typer.Option(help="slurm: partition")] = None,
    mem_gb: Annotated[float | None, typer.Option(help="slurm: memory per job, GB")] = None,
    array_parallelism: Annotated[int, typer.Option(
        help="slurm: array tasks running at once", min=1, max=100_000)] = 64,
    address: Annotated[str | None, typer.Option(
        help="ray: cluster address (default: start a local instance)")] = None,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="slurm: submit the array and return")] = False,
    opt: Annotated[list[str] | None, typer.Option(
        "--opt", help="launcher-specific option key=value (e.g. slurm account=..., "
                      "cluster=local)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        help="also checkpoint every N training steps (default: at each epoch's end)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="rerun jobs that failed before (otherwise they stay failed)")
    ] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="list the jobs and an estimate of their cost; run nothing")] = False,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    eval_last: EvalLastOpt = False,
) -> None:
    """Expand the selection into jobs and run the unfinished ones with LAUNCHER."""
    if ctx.invoked_subcommand is not None:
        return
    from benchmark.launchers import LaunchOptions, get_launcher
    from benchmark.sweep import run_sweep

    spec = _spec(methods, sources, targets, seeds, hparam_trials, profile, set_)
    results, cache = _dirs(results_dir, cache_dir)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise UserError(f"--checkpoint-every {checkpoint_every}: expected >= 1")
    if mem_gb is not None and not (math.isfinite(mem_gb) and 0 < mem_gb <= 1e6):
        raise UserError(f"--mem-gb {mem_gb}: expected a number of GB in (0, 1000000]")
    if workers is not None and workers < 0:
        raise UserError(f"--workers {workers}: expected >= 0 (0 = this process)")
    options = LaunchOptions(workers=workers, cpus_per_job=cpus_per_job,
                            gpus_per_job=gpus_per_job, time_min=time_min, partition=partition,
                            mem_gb=mem_gb, array_parallelism=array_parallelism,
                            address=address, wait=not no_wait, extra=_parse_opts(opt))
    chosen = get_launcher(launcher, options)
    if dry_run:
        _print_dry_run(spec, results, options, launcher)
        return
    chosen.preflight()
    reporter = _reporter(no_progress)
    outcome = run_sweep(spec, chosen, {"results_dir": results, "cache_dir": cache,
                                       "device": device, "checkpoint_every": checkpoint_every,
                                       "command": tuple(sys.argv), "eval_last": eval_last},
                        reporter, retry_failed=retry_failed)
    failed, interrupted = outcome.count("failed"), outcome.count("interrupted")
    console.print(f"sweep {outcome.sweep_id}: {outcome.total} jobs; "
                  f"{outcome.already_done} were done, {outcome.count('done')} ran now, "
                  f"{outcome.count('skipped')} finished elsewhere, {failed} failed now, "
                  f"{outcome.skipped_failed} failed before and were kept"
                  + (f", {outcome.count('submitted')} submitted" if outcome.count("submitted")
                     else "")
                  + (f", {outcome.in_queue} already in Slurm's queue" if outcome.in_queue
                     else "")
                  + (f", {interrupted} interrupted (launch again to resume)" if interrupted
                     else "")
                  + f". `bench sweep status --sweep {outcome.sweep_id}` shows every job.",
                  highlight=False)
    if failed or outcome.skipped_failed or interrupted:
        raise typer.Exit(1)


def _print_dry_run(spec: Any, results: Path, options: Any, launcher: str = "local") -> None:
    """The job table with each job's state and estimated cost, and the sweep's wall time on
    LAUNCHER's workers (local processes, Slurm array tasks or Ray tasks)."""
    from benchmark.launchers.local import cpu_threads_per_worker, visible_gpus
    from benchmark.sweep import estimate_costs, expand, format_seconds, job_state, makespan

    jobs = expand(spec)
    states = {j.run_id: job_state(results, spec.sweep_id, j).state for j in jobs}
    todo = [j for j in jobs if states[j.run_id] != "done"]
    from benchmark.cli_common import err_console

    if launcher == "local":
        workers = options.workers or 1
        # measure with the CPU threads each local worker will get
        threads = None if visible_gpus() else cpu_threads_per_worker(workers)
        where = f"{workers} local worker(s)"
    else:  # cluster jobs run side by side, each with its own --cpus-per-job threads
        workers = options.array_parallelism if launcher == "slurm" else max(1, len(todo))
        threads = None if options.gpus_per_job else options.cpus_per_job
        where = (f"at most {workers} Slurm array task(s) at once" if launcher == "slurm"
                 else f"{workers} {launcher} task(s) at once")
        where += " (if the cluster has room for them)"
    costs = estimate_costs(todo, results, lambda m: err_console.print(m, highlight=False),
                           threads=threads)
    table = Table(title=f"sweep {spec.sweep_id} (dry run: nothing is started)")
    for col in ("job", "method", "source", "targets", "seed", "trial", "state", "estimate",
                "how"):
        table.add_column(col, justify="right" if col in ("seed", "trial", "estimate")
                         else "left", overflow="fold")
    for job in jobs:
        est = costs.get(job.run_id)
        table.add_row(job.run_id, job.method, job.source, ",".join(job.targets) or "-",
                      str(job.seed), str(job.trial), states[job.run_id],
                      format_seconds(est.seconds) if est else "-", est.how if est else "")
    console.print(table)
    total = sum(c.seconds for c in costs.values())
    wall = makespan(todo, costs, workers)
    per = f", {threads} CPU thread(s) each" if threads else ""
    console.print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} done, {len(todo)} to run; "
                  f"estimated {format_seconds(total)} of worker time, ~{format_seconds(wall)} "
                  f"wall with {where}{per} taking the jobs in this order. "
                  "Estimates: the median of finished runs of the same method and profile "
                  "settings, else the profile's steps x a step time measured here on random "
                  "tensors (+ validation and test predictions).", highlight=False)


@sweep_app.command("status")
@user_errors
def status(
    sweep_id: SweepIdOpt = None,
    methods: MethodsOpt = None,
    sources: SourcesOpt = None,
    targets: TargetsOpt = None,
    seeds: SeedsOpt = "0",
    hparam_trials: TrialsOpt = 1,
    profile: ProfileOpt = "quick",
    set_: SetOpt = None,
    lines: Annotated[int, typer.Option(help="error lines shown per failed job", min=0,
                                       max=1000)] = 3,
    results_dir: ResultsOpt = None,
) -> None:
    """Each job's state: done / running / failed (with the error's last lines) / incomplete /
    not started. Without --sweep or a selection: one line per known sweep."""
    from benchmark.sweep import (
        cluster_queue,
        expand,
        job_state,
        list_sweeps,
        read_manifest,
        sweep_dir,
    )

    results, _ = _dirs(results_dir, None)
    if sweep_id is None and methods is None:
        known = list_sweeps(results)
        if not known:
            raise UserError(f"no sweeps under '{results / 'sweeps'}'; start one with "
                            "`bench sweep --methods ... --sources ...`")
        table = Table(title="sweeps")
        for col in ("sweep", "profile", "jobs", "done", "running", "queued", "failed",
                    "incomplete", "not started"):
            table.add_column(col)
        for sid in known:
            spec, jobs = read_manifest(results, sid)
            queue = cluster_queue(results, sid)
            states = [job_state(results, sid, j, queue).state for j in jobs]
            table.add_row(sid, spec.profile, str(len(jobs)),
                          *(str(states.count(s)) for s in ("done", "running", "queued", "failed",
                                                           "incomplete", "not started")))
        console.print(table)
        return
    if sweep_id is None:
        spec = _spec(methods, sources, targets, seeds, hparam_trials, profile, set_)
        sweep_id = spec.sweep_id
        if (sweep_dir(results, sweep_id) / "sweep.json").is_file():
            _, jobs = read_manifest(results, sweep_id)
        else:
            jobs = expand(spec)
    else:
        _, jobs = read_manifest(results, sweep_id)
    table = Table(title=f"sweep {sweep_id}")
    for col in ("job", "method", "source", "seed", "trial", "state", "detail"):
        table.add_column(col, overflow="fold")
    colours = {"done": "green", "running": "cyan", "queued": "cyan", "failed": "red",
               "incomplete": "yellow"}
    counts: dict[str, int] = {}
    queue = cluster_queue(results, sweep_id)
    for job in jobs:
        st = job_state(results, sweep_id, job, queue)
        counts[st.state] = counts.get(st.state, 0) + 1
        detail = "\n".join(st.error[-lines:]) if st.state == "failed" and st.error \
            else st.detail
        colour = colours.get(st.state)
        shown = f"[{colour}]{st.state}[/{colour}]" if colour else st.state
        table.add_row(job.run_id, job.method, job.source, str(job.seed), str(job.trial), shown,
                      detail)
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
