"""`bench sweep`: expand methods x sources x seeds x hparam trials into resumable jobs.

A job is one training (every target evaluated from it) and is named by the run id the runner
computes (`runner.plan_run`), so finished jobs are skipped and interrupted ones resume from
their checkpoint. A sweep's manifest lives in `<results>/sweeps/<sweep id>/sweep.json` (the id
hashes the sweep's spec); each job's outcome in `jobs/<run id>.json` beside it, written by the
worker itself so cluster jobs record their outcome even when the submitting process is gone.
A per-job flock (`<results>/sweeps/.locks/<run id>.lock`) keeps two sweeps (or a sweep and a
requeued copy) from running one job twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import seed_hash
from benchmark.errors import UserError
from benchmark.io import atomic_write_text, folder_lock
from benchmark.progress import NullReporter, Reporter
from benchmark.store import ResultsStore, now_iso

ERROR_TAIL_LINES = 12  # how much of a failed job's traceback status shows


def parse_csv(text: str, what: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'] (duplicates dropped, order kept); empty is a UserError."""
    items = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not items:
        raise UserError(f"{what}: expected a comma-separated list, got '{text}'")
    return items


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' (inclusive) -> seed list."""
    seeds: list[int] = []
    for part in parse_csv(text, "--seeds"):
        try:
            if "-" in part.lstrip("-"):
                lo, hi = part.split("-", 1)
                span = range(int(lo), int(hi) + 1)
                if not span:
                    raise UserError(f"--seeds: the range '{part}' is empty; write the lower "
                                    "seed first, e.g. 0-4")
                seeds.extend(span)
            else:
                seeds.append(int(part))
        except ValueError:
            raise UserError(f"--seeds: '{part}' is not an integer or a range like 0-4") from None
    return list(dict.fromkeys(seeds))


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep covers; its hash is the sweep id."""

    methods: tuple[str, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    hparam_trials: int = 1  # trial 0 is the profile defaults, trials 1..N-1 are random draws
    profile: str = "quick"
    sets: tuple[str, ...] = ()

    @property
    def sweep_id(self) -> str:
        """'<profile>-<8 hex digits of the spec's hash>'."""
        return f"{self.profile}-{seed_hash(self.to_dict()):08x}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists), as stored in the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        """Inverse of `to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def make_spec(methods: str, sources: str, targets: str | None, seeds: str, hparam_trials: int,
              profile: str, sets: list[str] | None) -> SweepSpec:
    """Validate CLI selections (`--methods all` = every registered method) into a spec."""
    from benchmark.config import get_profile
    from benchmark.registry import METHODS

    get_profile(profile)
    names = parse_csv(methods, "--methods")
    if names == ["all"]:
        names = sorted(METHODS.all())
    else:
        for name in names:
            METHODS.get(name)  # UserError naming the closest method
    if hparam_trials < 1:
        raise UserError(f"--hparam-trials {hparam_trials}: expected >= 1")
    return SweepSpec(tuple(names), tuple(parse_csv(sources, "--sources")),
                     tuple(parse_csv(targets, "--targets")) if targets else (),
                     tuple(parse_seeds(seeds)), hparam_trials, profile, tuple(sets or []))


@dataclass
class Job:
    """One training: method x source x seed x hparam trial; `target_keys` must all be done."""

    run_id: str
    method: str
    source: str
    targets: list[str]
    seed: int
    trial: int
    profile: str
    sets: list[str]
    hparams: dict[str, Any]
    target_keys: list[str] = field(default_factory=list)  # source first, then the targets

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the manifest and shipped to workers."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """Inverse of `to_dict`."""
        return cls(**d)


def expand(spec: SweepSpec) -> list[Job]:
    """One job per method x source x seed x trial (deduplicated by run id), shuffled.

    The order is a shuffle seeded by the sweep id (DomainBed does the same) so a partly done
    sweep covers every method a little rather than a few methods fully; methods that share
    another's training come after all the others.
    """
    from benchmark.runner import RunRequest, plan_run, target_key

    quiet = NullReporter()  # run_sweep prints the stand-in notes once, not once per job
    jobs: dict[str, Job] = {}
    for method in spec.methods:
        for source in spec.sources:
            targets = [t for t in spec.targets if t != source]
            for seed in spec.seeds:
                for trial in range(spec.hparam_trials):
                    req = RunRequest(method=method, source=source, targets=targets,
                                     profile=spec.profile, seed=seed, sets=list(spec.sets),
                                     trial=trial)
                    plan = plan_run(req, quiet)
                    if plan.run_id in jobs:  # e.g. a method without samplers: trials coincide
                        continue
                    keys = [target_key(s, plan.domains[s]) for s in [source, *targets]]
                    jobs[plan.run_id] = Job(plan.run_id, method, source, targets, seed, trial,
                                            spec.profile, list(spec.sets), plan.hparams, keys)
    ordered = list(jobs.values())
    random.Random(seed_hash(spec.sweep_id, "order")).shuffle(ordered)
    # Inference-time variants go last: by then the training they share is usually done, so
    # they only evaluate instead of waiting for (or doing) the owner's training.
    return sorted(ordered, key=lambda j: _reuses_training(j))


def _reuses_training(job: Job) -> bool:
    """Whether `job` evaluates another run's training (a variant, or inference-only --set)."""
    from benchmark.runner import RunRequest, shared_training_request

    return shared_training_request(RunRequest(
        method=job.method, source=job.source, targets=job.targets, profile=job.profile,
        seed=job.seed, sets=job.sets, trial=job.trial)) is not None


# --- folders, manifest, locks -----------------------------------------------------------------

def sweeps_root(results_dir: Path) -> Path:
    """`<results>/sweeps`: manifests, job records, logs and the job locks."""
    return Path(results_dir) / "sweeps"


def sweep_dir(results_dir: Path, sweep_id: str) -> Path:
    """The folder of one sweep: sweep.json, jobs/, logs/ (and submitit/ for Slurm)."""
    return sweeps_root(results_dir) / sweep_id


def remove_temp_files(folder: Path, pattern: str = ".*.tmp") -> list[Path]:
    """Delete temp files that a killed writer left (only call while holding their lock)."""
    removed = []
    if folder.is_dir():
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_manifest(results_dir: Path, spec: SweepSpec, jobs: list[Job]) -> Path:
    """Write sweeps/<id>/sweep.json atomically (keeping its creation time) and return it."""
    folder = sweep_dir(results_dir, spec.sweep_id)
    path = folder / "sweep.json"
    with folder_lock(folder):
        remove_temp_files(folder, ".sweep.json.*.tmp")
        created = now_iso()
        if path.is_file():
            with contextlib.suppress(json.JSONDecodeError, OSError):
                created = json.loads(path.read_text()).get("created", created)
        manifest = {"sweep_id": spec.sweep_id, "spec": spec.to_dict(), "created": created,
                    "updated": now_iso(), "jobs": [j.to_dict() for j in jobs]}
        atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(results_dir: Path, sweep_id: str) -> tuple[SweepSpec, list[Job]]:
    """Load a sweep's spec and jobs, or raise a UserError naming the missing/corrupt file."""
    path = sweep_dir(results_dir, sweep_id) / "sweep.json"
    if not path.is_file():
        known = list_sweeps(results_dir)
        hint = f"; known sweeps: {', '.join(known[:10])}" if known else ""
        raise UserError(f"no sweep '{sweep_id}' under '{sweeps_root(results_dir)}'{hint}")
    try:
        data = json.loads(path.read_text())
        return SweepSpec.from_dict(data["spec"]), [Job.from_dict(j) for j in data["jobs"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"'{path}' is corrupt: {exc}") from None


def list_sweeps(results_dir: Path) -> list[str]:
    """Ids of the sweeps that have a manifest, oldest first."""
    root = sweeps_root(results_dir)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/sweep.json")]
    return [p.name for p in sorted(found, key=lambda p: (p / "sweep.json").stat().st_mtime)]


@contextlib.contextmanager
def job_lock(results_dir: Path, run_id: str, wait: bool) -> Iterator[bool]:
    """Hold the job's flock for the block; yields False (without waiting) when it is taken."""
    path = sweeps_root(results_dir) / ".locks" / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_is_held(path: Path) -> bool:
    """Whether some process holds an flock on `path` (probes without creating the file)."""
    if not path.is_file():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


# --- job state --------------------------------------------------------------------------------

STATES = ("done", "running", "queued", "failed", "incomplete", "not started")
# Slurm job states (squeue) in which a job still holds its place in the queue.
SLURM_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                "RESV_DEL_HOLD", "SUSPENDED")


@dataclass
class JobState:
    """A job's state for `bench sweep status`, with a short detail and the error's last lines."""

    state: str
    detail: str = ""
    error: list[str] = field(default_factory=list)
    cluster_job: str | None = None  # the Slurm job queued or running for it, if any


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _interrupted(error: str | None) -> bool:
    """Ctrl-C/termination is an interruption to resume, not a failure to retry."""
    return bool(error) and str(error).startswith(("KeyboardInterrupt", "SystemExit"))


def job_is_done(store: ResultsStore, job: Job) -> bool:
    """Trained (best.pt present) and every target of the job evaluated."""
    folder = store.run_dir(job.run_id)
    status = _read_json(folder / "status.json")
    if status.get("state") != "trained" or not (folder / "checkpoints" / "best.pt").is_file():
        return False
    targets = status.get("targets", {})
    return all(targets.get(k, {}).get("state") == "done" for k in job.target_keys)


def job_record(results_dir: Path, sweep_id: str, run_id: str) -> dict[str, Any]:
    """The job's record `jobs/<run id>.json` ({} when it has none or it is unreadable)."""
    return _read_json(sweep_dir(results_dir, sweep_id) / "jobs" / f"{run_id}.json")


def cluster_queue(results_dir: Path, sweep_id: str) -> dict[str, str]:
    """Slurm job id -> queue state of this sweep's jobs that Slurm still holds ({} without
    any Slurm job on record, or without Slurm): one `squeue` call for a whole status."""
    folder = sweep_dir(results_dir, sweep_id) / "jobs"
    ids = {str(r["slurm_job"]) for r in (_read_json(p) for p in folder.glob("*.json"))
           if r.get("slurm_job")} if folder.is_dir() else set()
    if not ids:
        return {}
    from benchmark.launchers import slurm_queue

    return {jid: st for jid, st in slurm_queue.slurm_queue(sweep_id).items() if jid in ids}


def job_state(results_dir: Path, sweep_id: str, job: Job,
              queue: dict[str, str] | None = None) -> JobState:
    """done / running / queued (in Slurm's queue) / failed / incomplete (resumes from its
    checkpoint) / not started. `queue`: `cluster_queue`'s answer (None: not consulted)."""
    store = ResultsStore(results_dir)
    folder = store.run_dir(job.run_id)
    if job_is_done(store, job):
        return JobState("done")
    record = job_record(results_dir, sweep_id, job.run_id)
    slurm_job = str(record.get("slurm_job") or "")
    if queue and slurm_job in queue:
        st = queue[slurm_job]
        if st in SLURM_QUEUED:
            return JobState("queued", f"Slurm job {slurm_job} {st.lower()}",
                            cluster_job=slurm_job)
        status = _read_json(folder / "status.json")
        tail = read_log_tail(results_dir, sweep_id, job.run_id, 1)
        return JobState("running", f"Slurm job {slurm_job} {st.lower()}: "
                        f"{status.get('state', 'starting')}"
                        + (f": {tail[-1].strip()}" if tail else ""), cluster_job=slurm_job)
    if _lock_is_held(sweeps_root(results_dir) / ".locks" / f"{job.run_id}.lock") or \
            _lock_is_held(folder / ".train.lock"):
        status = _read_json(folder / "status.json")
        tail = read_log_tail(results_dir, sweep_id, job.run_id, 1)
        return JobState("running", f"{status.get('state', 'starting')}"
                        + (f": {tail[-1].strip()}" if tail else ""))
    status = _read_json(folder / "status.json")
    failed_targets = {k: v for k, v in status.get("targets", {}).items()
                      if v.get("state") == "failed" and not _interrupted(v.get("error"))}
    if record.get("state") == "failed" or (
            status.get("state") == "failed" and not _interrupted(status.get("error"))) \
            or failed_targets:
        lines = status.get("error_tail") or record.get("error") or \
            [str(status.get("error") or next(iter(failed_targets.values()), {}).get("error"))]
        return JobState("failed", lines[-1] if lines else "", list(lines))
    last = folder / "checkpoints" / "last.pt"
    # an interrupted attempt (scancel, preemption, node loss) shows why it stopped
    cause = str(record.get("message") or "") if record.get("state") == "interrupted" else ""
    lines = list(record.get("error") or []) if cause else []
    if (folder / "run.json").is_file() or last.is_file():
        return JobState("incomplete", ("resumes from its last checkpoint" if last.is_file()
                                       else "restarts (no checkpoint yet)")
                        + (f"; stopped: {cause}" if cause else ""), lines)
    return JobState("not started", f"stopped: {cause}" if cause else "", lines)


# --- running one job (inside a launcher's worker) ---------------------------------------------

@dataclass(frozen=True)
class JobContext:
    """What every worker needs besides the job: folders, device, checkpoint interval."""

    results_dir: str
    cache_dir: str
    sweep_id: str
    device: str = "auto"
    checkpoint_every: int | None = None
    command: tuple[str, ...] = ()  # the `bench sweep` command, recorded in each run.json
    eval_last: bool = False  # also evaluate last.pt (opt-in, for --select last)


@dataclass(frozen=True)
class JobCall:
    """A picklable call of `run_job` (what launchers ship to their workers)."""

    job: dict[str, Any]
    ctx: JobContext
    wait: bool = False  # block on the job lock instead of reporting "busy"
    threads: int | None = None  # torch CPU threads in the worker (None: leave as is)
    gpus: float | None = None  # GPUs granted to the job (0: hide every GPU; None: leave)

    def __call__(self) -> dict[str, Any]:
        """Run the job in whichever process the launcher chose, within its CPU/GPU share."""
        from benchmark.launchers.base import pin_job_resources

        pin_job_resources(self.threads, self.gpus)
        return run_job(Job.from_dict(self.job), self.ctx, self.wait)


# Keys of a job record that outlive one attempt (the others describe the latest attempt).
_KEPT_KEYS = ("attempts", "slurm_job", "submitted", "started")


def _record(ctx: JobContext, run_id: str, payload: dict[str, Any], new_attempt: bool = False,
            **where: Any) -> None:
    """Write the job's record: `payload` plus what earlier attempts left (attempt count, Slurm
    job). `new_attempt` counts an attempt that starts now; `where` overrides the host and pid
    (the submitter records a dead worker with the worker's node, not its own)."""
    folder = sweep_dir(Path(ctx.results_dir), ctx.sweep_id) / "jobs"
    path = folder / f"{run_id}.json"
    old = _read_json(path)
    kept = {k: old[k] for k in _KEPT_KEYS if k in old}
    kept["attempts"] = int(old.get("attempts", 0)) + (1 if new_attempt else 0)
    stamp = "started" if payload.get("state") == "running" else "finished"
    payload = {**kept, **payload, "host": os.uname().nodename, "pid": os.getpid(), **where,
               stamp: now_iso()}
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))


def record_submission(ctx: JobContext, run_id: str, cluster_job: str) -> None:
    """Note that `cluster_job` (a Slurm job) was queued for the job, so that status shows it
    queued and a relaunch does not queue a duplicate."""
    _record(ctx, run_id, {"run_id": run_id, "state": "queued", "slurm_job": cluster_job,
                          "submitted": now_iso()})


def run_job(job: Job, ctx: JobContext, wait: bool = False) -> dict[str, Any]:
    """Run one job with the same code as `bench run`; returns its outcome as a plain dict.

    States: done, skipped (was already done), failed (with the traceback's last lines),
    busy (another process holds the job; the sweep retries it later with `wait`).
    """
    from benchmark.runner import RunBusyError, RunRequest, plan_run, run

    results = Path(ctx.results_dir)
    store = ResultsStore(results)
    base = {"run_id": job.run_id, "method": job.method, "source": job.source,
            "seed": job.seed, "trial": job.trial}
    with job_lock(results, job.run_id, wait) as acquired:
        if not acquired:
            return {**base, "state": "busy"}
        folder = store.run_dir(job.run_id)
        # We hold the job, so temp files here are leftovers of a killed writer.
        for sub in (folder, folder / "checkpoints"):
            remove_temp_files(sub)
        remove_temp_files(sweep_dir(results, ctx.sweep_id) / "jobs", f".{job.run_id}.json.*.tmp")
        if job_is_done(store, job):
            return {**base, "state": "skipped"}
        log_path = sweep_dir(results, ctx.sweep_id) / "logs" / f"{job.run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # counted when it starts: an attempt killed by Slurm or a signal records nothing later
        _record(ctx, job.run_id, {**base, "state": "running"}, new_attempt=True)
        req = RunRequest(method=job.method, source=job.source, targets=job.targets,
                         profile=job.profile, seed=job.seed, device=ctx.device, sets=job.sets,
                         results_dir=results, cache_dir=Path(ctx.cache_dir), trial=job.trial,
                         checkpoint_every=ctx.checkpoint_every,
                         command=list(ctx.command) or None, eval_last=ctx.eval_last)
        t0 = time.monotonic()
        try:
            now_id = plan_run(req, NullReporter()).run_id
        except Exception as exc:  # e.g. a domain file that disappeared since the expansion
            now_id = f"unplannable ({type(exc).__name__}: {exc})"
        if now_id != job.run_id:  # the code (or data) changed after the sweep was expanded
            message = (f"the code or data changed since this sweep was expanded (the job is "
                       f"now run {now_id}); launch the sweep again to re-plan its jobs")
            result = {**base, "state": "failed", "error": [message], "message": message}
            _record(ctx, job.run_id, result)
            return result
        with open(log_path, "a") as log, contextlib.redirect_stdout(log):
            from rich.console import Console

            print(f"--- {now_iso()} {job.run_id} (pid {os.getpid()})", flush=True)
            reporter = Reporter(console=Console(file=log, width=120), plain=True)
            try:
                outcome = run(req, reporter)
            except RunBusyError:
                return {**base, "state": "busy"}
            except Exception as exc:
                tail = traceback.format_exc().rstrip().splitlines()[-ERROR_TAIL_LINES:]
                print("\n".join(tail), flush=True)
                if (folder / "status.json").is_file():
                    store.update_status(job.run_id, error_tail=tail)
                result = {**base, "state": "failed", "error": tail,
                          "message": f"{type(exc).__name__}: {exc}",
                          "seconds": round(time.monotonic() - t0, 2)}
                _record(ctx, job.run_id, result)
                return result
        result = {**base, "state": "done", "seconds": round(time.monotonic() - t0, 2),
                  "reused": outcome.reused}
        if (folder / "status.json").is_file():
            store.update_status(job.run_id, error_tail=None)
        _record(ctx, job.run_id, result)
        return result


# --- the sweep --------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """Counts of a finished `bench sweep` and the outcome of every job it ran."""

    sweep_id: str
    total: int
    already_done: int
    skipped_failed: int
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    in_queue: int = 0  # jobs Slurm already holds (queued or running): not submitted again

    def count(self, state: str) -> int:
        """How many of this launch's outcomes are in `state`."""
        return sum(1 for o in self.outcomes if o["state"] == state)


def _outcome_line(o: dict[str, Any]) -> str:
    where = f"{o['method']} {o['source']} seed {o['seed']} trial {o['trial']}"
    if o["state"] == "failed":
        return f"[red]failed[/red] {o['run_id']} ({where}): {o.get('message') or o['error'][-1]}"
    if o["state"] == "submitted":
        return f"submitted {o['run_id']} ({where}) as Slurm job {o.get('slurm_job')}"
    if o["state"] == "skipped":
        return f"done (by another process) {o['run_id']} ({where})"
    if o["state"] == "interrupted":
        return (f"[yellow]interrupted[/yellow] {o['run_id']} ({where}): "
                f"{o.get('message') or o['error'][0]}; launch again to resume")
    return f"[green]done[/green] {o['run_id']} ({where}) in {o.get('seconds', 0):.0f}s"


def run_sweep(spec: SweepSpec, launcher: Any, ctx_kwargs: dict[str, Any], reporter: Reporter,
              retry_failed: bool = False,
              on_outcome: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Expand, write the manifest, and hand every unfinished job to `launcher`.

    Done jobs are skipped; failed ones too unless `retry_failed`; jobs that another process
    holds are retried at the end, waiting for their lock, so the sweep ends with all its jobs
    settled (finished here or elsewhere) and none run twice.
    """
    from benchmark.registry import resolve_domain, stand_in_note

    for name in dict.fromkeys([*spec.sources, *spec.targets]):
        note = stand_in_note(name, resolve_domain(name))
        if note:
            reporter.log(f"[yellow]{note}[/yellow]")
    jobs = expand(spec)
    # Absolute folders: workers on other nodes, or Ray workers started in another folder,
    # resolve a relative path against their own working folder.
    ctx_kwargs = {k: str(Path(v).expanduser().absolute()) if k.endswith("_dir") else v
                  for k, v in ctx_kwargs.items()}
    results = Path(ctx_kwargs["results_dir"])
    ResultsStore(results).ensure_writable()
    write_manifest(results, spec, jobs)
    ctx = JobContext(sweep_id=spec.sweep_id, **ctx_kwargs)
    queue = cluster_queue(results, spec.sweep_id)
    states = {j.run_id: job_state(results, spec.sweep_id, j, queue) for j in jobs}
    todo = [j for j in jobs if states[j.run_id].cluster_job is None and (
        states[j.run_id].state not in ("done", "failed")
        or (retry_failed and states[j.run_id].state == "failed"))]
    result = SweepResult(spec.sweep_id, len(jobs),
                         sum(s.state == "done" for s in states.values()),
                         0 if retry_failed else sum(s.state == "failed" for s in states.values()),
                         in_queue=sum(s.cluster_job is not None for s in states.values()))
    queued = (f", {result.in_queue} already queued or running in Slurm (not submitted again)"
              if result.in_queue else "")
    reporter.log(f"sweep {spec.sweep_id}: {len(jobs)} jobs, {result.already_done} already done, "
                 f"{result.skipped_failed} failed before (kept; --retry-failed reruns them)"
                 f"{queued}, {len(todo)} to run with the '{launcher.name}' launcher")
    if not todo:
        return result
    by_id = {j.run_id: j for j in jobs}
    with reporter.task("sweep jobs", total=len(todo), every=True) as bar:
        pending = [JobCall(j.to_dict(), ctx) for j in todo]
        for _round in ("first", "waiting"):
            busy: list[str] = []

            def collect(o: dict[str, Any], busy: list[str] = busy) -> None:
                if o["state"] == "busy":
                    busy.append(o["run_id"])
                    return
                record = job_record(results, spec.sweep_id, o["run_id"])
                if o["state"] in ("failed", "interrupted") and record.get("state") in (
                        None, "running", "queued"):
                    # the worker died before recording it: record it with the worker's node
                    # (when the launcher knows it), not this submitting process's host and pid
                    where = {"host": o.get("host"), "pid": o.get("pid"),
                             "recorded_by": f"{os.uname().nodename}:{os.getpid()}"}
                    _record(ctx, o["run_id"], {k: v for k, v in o.items()
                                               if k not in ("host", "pid")}, **where)
                result.outcomes.append(o)
                reporter.log(_outcome_line(o))
                bar.advance(1, failed=result.count("failed"))
                if on_outcome:
                    on_outcome(o)

            launcher.launch(pending, collect)
            if not busy:
                break
            reporter.log(f"{len(busy)} job(s) are being run by another process; waiting for them")
            pending = [JobCall(by_id[r].to_dict(), ctx, wait=True) for r in busy]
    return result


def call_outcome(call: JobCall, state: str, **extra: Any) -> dict[str, Any]:
    """An outcome dict for `call` made by a launcher rather than by `run_job`."""
    job = call.job
    return {"run_id": job["run_id"], "method": job["method"], "source": job["source"],
            "seed": job["seed"], "trial": job["trial"], "state": state, **extra}


def failure_outcome(call: JobCall, exc: BaseException) -> dict[str, Any]:
    """The outcome a launcher reports when its worker itself died (not the job's code)."""
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)
    lines = "".join(tail).rstrip().splitlines()[-ERROR_TAIL_LINES:]
    return call_outcome(call, "failed", error=lines,
                        message=f"worker failed: {type(exc).__name__}: {exc}")


# --- dry-run cost estimate --------------------------------------------------------------------

@dataclass
class Estimate:
    """Estimated seconds of one job and how the number was obtained."""

    seconds: float
    how: str


def _split_sizes(job: Job, profile: Any) -> dict[str, int]:
    """Train/val/test image counts from the domain's described size and the profile."""
    from benchmark.registry import resolve_domain

    described = resolve_domain(job.source).describe()
    n = int(described.get("images") or 0)
    if not n:
        from benchmark.runner import DataCache, default_cache_dir

        _, split = DataCache(profile, default_cache_dir(), NullReporter()).get(
            job.source, resolve_domain(job.source))
        return {k: len(v) for k, v in split.items()}
    sizes = {k: max(1, round(n * f)) for k, f in zip(("train", "val", "test"),
                                                     profile.split_fractions, strict=True)}
    if profile.max_images:
        sizes = {k: min(v, profile.max_images.get(k, v)) for k, v in sizes.items()}
    return sizes


def _measure_step(job: Job, profile: Any, steps: int = 2,
                  threads: int | None = None) -> tuple[float, float]:
    """Seconds per training step and per predicted image, on random tensors (after warm-up),
    with `threads` torch CPU threads (None: as configured)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time_step(job, profile, steps)
    finally:
        torch.set_num_threads(before)


def _time_step(job: Job, profile: Any, steps: int) -> tuple[float, float]:
    import torch

    from benchmark.registry import get_method

    torch.manual_seed(0)
    hparams = dict(job.hparams)
    if "pretrained" in hparams:  # the start weights do not change a step's time
        hparams["pretrained"] = "none"
    method = get_method(job.method).cls(hparams, torch.device("cpu"), profile.image_size)
    s, b = profile.image_size, profile.batch_size
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(b, 1, s, s, generator=gen),
             "mask": (torch.rand(b, 1, s, s, generator=gen) > 0.95).float()}
    if method.context_slices:
        batch["slices"] = torch.rand(b, method.context_slices, s, s, generator=gen)
        batch["slices_real"] = torch.ones(b, dtype=torch.bool)
    groups = method.training_groups()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        method.update({g: method.make_view(g, batch, gen) for g in groups})
        times.append(time.perf_counter() - t0)
    method.train(False)
    t0 = time.perf_counter()
    method.predict_batch(batch)
    per_image = (time.perf_counter() - t0) / b
    return float(sorted(times[1:])[len(times[1:]) // 2]), per_image


def estimate_costs(jobs: list[Job], results_dir: Path,
                   log: Callable[[str], None] | None = None,
                   threads: int | None = None) -> dict[str, Estimate]:
    """Per-job seconds: the median of finished runs of the same method and profile settings
    when there are any, else profile steps x a step time measured here on random tensors.

    The measured estimate counts training steps, validation and test predictions; it leaves
    out data generation and the HD/ASD metrics, which are small at smoke/quick sizes. A job
    that shares the training of another job in the list costs that job's evaluation only.
    `threads`: torch's CPU threads while measuring, i.e. what each local worker gets (a step
    measured with every core is up to twice as fast as one on a worker's share of them).
    """
    import statistics

    from benchmark.config import apply_profile_overrides, get_profile, split_overrides
    from benchmark.registry import get_method

    records, _ = ResultsStore(results_dir).list_runs()
    out: dict[str, Estimate] = {}
    evaluation: dict[str, float] = {}  # the evaluation part of each training job's estimate
    measured: dict[str, tuple[float, float]] = {}
    owners = _training_owners(jobs)
    for job in jobs:
        if job.run_id in owners:
            continue
        space = get_method(job.method).cls.hparam_space()
        over = split_overrides(job.sets, get_profile(job.profile), [h.name for h in space])
        profile = apply_profile_overrides(get_profile(job.profile), over.profile)
        past = [r for r in records if r.info.get("method") == job.method
                and r.info.get("profile_settings") == json.loads(json.dumps(profile.to_dict()))
                and r.info.get("timings", {}).get("train_seconds") is not None]
        if past:
            train_s = statistics.median(r.info["timings"]["train_seconds"] for r in past)
            evals = [t.get("seconds", 0.0) for r in past
                     for t in r.status.get("targets", {}).values() if t.get("state") == "done"]
            evaluation[job.run_id] = (statistics.median(evals) if evals else 0.0) \
                * len(job.target_keys)
            out[job.run_id] = Estimate(train_s + evaluation[job.run_id],
                                       f"median of {len(past)} finished run(s)")
            continue
        key = json.dumps([job.method, job.hparams, profile.to_dict()], sort_keys=True,
                         default=str)
        if key not in measured:
            if log:
                log(f"measuring the step time of {job.method} ({profile.name} profile)")
            measured[key] = _measure_step(job, profile, threads=threads)
        step_s, image_s = measured[key]
        sizes = _split_sizes(job, profile)
        evaluation[job.run_id] = len(job.target_keys) * sizes["test"] * image_s
        steps = profile.steps_per_epoch or max(1, sizes["train"] // profile.batch_size)
        seconds = profile.epochs * (steps * step_s + sizes["val"] * image_s) \
            + evaluation[job.run_id]
        out[job.run_id] = Estimate(seconds, f"{profile.epochs}x{steps} steps x "
                                            f"{step_s * 1000:.0f} ms measured")
    for variant, owner in owners.items():
        out[variant] = Estimate(evaluation[owner], f"evaluation only (trained by {owner})")
    return out


def _training_owners(jobs: list[Job]) -> dict[str, str]:
    """Variant job -> run id of the job in `jobs` whose training it reuses."""
    from benchmark.runner import RunRequest, plan_run, shared_training_request

    ids = {j.run_id for j in jobs}
    out: dict[str, str] = {}
    for job in jobs:
        req = shared_training_request(RunRequest(
            method=job.method, source=job.source, targets=job.targets, profile=job.profile,
            seed=job.seed, sets=job.sets, trial=job.trial))
        if req is not None:
            owner = plan_run(req, NullReporter()).run_id
            if owner in ids:
                out[job.run_id] = owner
    return out


def makespan(jobs: list[Job], costs: dict[str, Estimate], workers: int) -> float:
    """Wall seconds of `jobs` run in order on `workers` workers, each job taken by the first
    free worker (the local launcher's pool): the longest worker's total, not the mean."""
    free = [0.0] * max(1, workers)
    for job in jobs:
        est = costs.get(job.run_id)
        i = free.index(min(free))
        free[i] += est.seconds if est else 0.0
    return max(free)


def format_seconds(seconds: float) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7300 -> '2h01m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def read_log_tail(results_dir: Path, sweep_id: str, run_id: str, n: int = 5) -> list[str]:
    """The last `n` lines of a job's log (for status of a running job)."""
    path = sweep_dir(results_dir, sweep_id) / "logs" / f"{run_id}.log"
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        return fh.read().decode(errors="replace").splitlines()[-n:]
