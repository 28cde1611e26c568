"""`slurm` launcher through submitit: one job array, time limit, requeue with resume.

Each array task runs one job. The callable follows submitit's checkpointing protocol: when
Slurm preempts a task or its time limit nears, submitit calls `checkpoint()`, which resubmits
the same job; the new task takes the job lock and the runner resumes from `last.pt` (saved
every epoch, or every `--checkpoint-every` steps). `--opt cluster=local` runs the array with
submitit's local executor (tests, machines without Slurm); without it, Slurm's client tools
must be on PATH (submitit would otherwise fall back to its local executor without a word).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.launchers.base import Launcher, Outcome
from benchmark.launchers.slurm_queue import job_name

# Slurm end states after which the job can resume from its checkpoint: it was stopped from
# outside, its own code did not fail.
INTERRUPTED_STATES = ("CANCELLED", "PREEMPTED", "NODE_FAIL", "TIMEOUT", "DEADLINE",
                      "BOOT_FAIL", "REQUEUED")
# submitit's own chatter in a task's stderr, which hides the real cause of its end
_NOISE = ("Bypassing signal", "Job not requeued", "Exiting after successful completion")


class _Requeueable:
    """A job call that submitit requeues (same arguments) on preemption or timeout."""

    def __call__(self, call: Any) -> Outcome:
        """Run the job in this array task."""
        return call()

    def checkpoint(self, call: Any) -> Any:
        """submitit's hook before preemption/timeout: requeue the same job (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(_Requeueable(), call)


def submission_error(text: str) -> str:
    """The line of sbatch's complaint that names the problem (its last 'error:' line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["no message"]
    return errors[-1].replace("sbatch: error: ", "")


def lost_task_outcome(job: Any, call: Any, exc: BaseException) -> Outcome:
    """The outcome of an array task that ended without a result: 'interrupted' (resumable)
    when Slurm stopped it (scancel, preemption, node failure), else 'failed'; its error lines
    are the task's stderr without submitit's signal chatter, then the Slurm state as the cause.
    """
    from benchmark.sweep import ERROR_TAIL_LINES, call_outcome

    try:
        state = str(job.state)
        node = str(job.get_info(mode="cache").get("NodeList") or "") or None
    except Exception:  # sacct unreachable: say so rather than guess
        state, node = "UNKNOWN", None
    try:
        stderr = job.stderr() or ""
    except OSError:
        stderr = ""
    tail = [ln for ln in stderr.splitlines() if ln.strip() and not any(n in ln for n in _NOISE)]
    cause = f"Slurm job {job.job_id} {state}" + (f" on {node}" if node else "")
    kind = "interrupted" if state.split(" ")[0] in INTERRUPTED_STATES else "failed"
    if kind == "failed" and not tail:
        tail = [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    return call_outcome(call, kind, error=[*tail[-(ERROR_TAIL_LINES - 1):], cause],
                        message=cause, host=node, pid=None)


class SlurmLauncher(Launcher):
    """Submits one Slurm job array per sweep round; waits and reports unless --no-wait."""

    name = "slurm"
    extra_keys = ("cluster", "account", "qos", "constraint", "max_num_timeout", "folder")

    def preflight(self) -> None:
        """A known cluster kind, Slurm's tools on PATH (submitit would silently run the jobs
        on this machine without them) and whole GPUs."""
        opts, extra = self.options, self.options.extra
        cluster = extra.get("cluster") or "slurm"
        if cluster not in ("slurm", "local", "debug"):
            raise UserError(f"--opt cluster={cluster}: expected slurm, local or debug")
        if cluster == "slurm":
            missing = [tool for tool in ("sbatch", "srun") if not shutil.which(tool)]
            if missing:
                raise UserError(f"--launcher slurm: '{missing[0]}' is not on PATH (not a Slurm "
                                "login node?); use --opt cluster=local to run the array with "
                                "submitit's local executor on this machine")
        if opts.gpus_per_job != int(opts.gpus_per_job):
            raise UserError(f"--gpus-per-job {opts.gpus_per_job}: Slurm grants whole GPUs")

    def _executor(self, folder: Path, job_label: str) -> Any:
        """submitit's executor for Slurm (or its local one with `--opt cluster=local`)."""
        import submitit

        self.preflight()
        opts, extra = self.options, self.options.extra
        cluster = extra.get("cluster") or "slurm"
        # requeues after a timeout (preemptions are requeued without limit by submitit)
        executor = submitit.AutoExecutor(
            folder=folder / "%j", cluster=cluster,
            slurm_max_num_timeout=int(extra.get("max_num_timeout", 3)))
        params: dict[str, Any] = {
            "timeout_min": opts.time_min, "cpus_per_task": opts.cpus_per_job,
            "slurm_array_parallelism": opts.array_parallelism, "name": job_label,
        }
        if opts.gpus_per_job:
            params["gpus_per_node"] = int(opts.gpus_per_job)
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
        if opts.partition:
            params["slurm_partition"] = opts.partition
        additional = {k: extra[k] for k in ("account", "qos", "constraint") if k in extra}
        if additional:
            params["slurm_additional_parameters"] = additional
        executor.update_parameters(**params)
        return executor

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Submit `calls` as one array; wait for and report each task unless --no-wait."""
        import submitit

        from benchmark.sweep import call_outcome, record_submission, sweep_dir

        opts, extra = self.options, self.options.extra
        ctx = calls[0].ctx
        folder = Path(extra.get("folder") or sweep_dir(Path(ctx.results_dir), ctx.sweep_id)
                      / "submitit").absolute()
        executor = self._executor(folder, job_name(ctx.sweep_id))
        # each task uses the CPUs and GPUs Slurm granted it, no more
        calls = [dataclasses.replace(c, threads=opts.cpus_per_job, gpus=opts.gpus_per_job)
                 if dataclasses.is_dataclass(c) else c for c in calls]
        chatter = io.StringIO()  # submitit prints sbatch's stderr before raising
        try:
            with contextlib.redirect_stderr(chatter), executor.batch():
                jobs = [executor.submit(_Requeueable(), call) for call in calls]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
                subprocess.CalledProcessError, OSError, ValueError) as exc:
            raise UserError("--launcher slurm: the job array was refused: "
                            + submission_error(f"{chatter.getvalue()}\n{exc}")) from None
        by_id = {job.job_id: call for job, call in zip(jobs, calls, strict=True)}
        for job, call in zip(jobs, calls, strict=True):
            record_submission(ctx, call.job["run_id"], job.job_id)
        if not opts.wait:
            for job, call in zip(jobs, calls, strict=True):
                on_result(call_outcome(call, "submitted", slurm_job=job.job_id))
            return
        for job in submitit.helpers.as_completed(jobs):
            try:
                outcome = job.result()
            except Exception as exc:  # the task ended without a result (scancel, node lost)
                outcome = lost_task_outcome(job, by_id[job.job_id], exc)
            on_result({**outcome, "slurm_job": job.job_id})
