"""`slurm` launcher through submitit: one job array, time limit, requeue with resume.

Each array task runs one job. The callable follows submitit's checkpointing protocol: when
Slurm preempts a task or its time limit nears, submitit calls `checkpoint()`, which resubmits
the same job; the new task takes the job lock and the runner resumes from `last.pt` (saved
every epoch, or every `--checkpoint-every` steps). `--opt cluster=local` runs the array with
submitit's local executor (tests, machines without Slurm).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.launchers.base import Launcher, Outcome


class _Requeueable:
    """A job call that submitit requeues (same arguments) on preemption or timeout."""

    def __call__(self, call: Any) -> Outcome:
        """Run the job in this array task."""
        return call()

    def checkpoint(self, call: Any) -> Any:
        """submitit's hook before preemption/timeout: requeue the same job (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(_Requeueable(), call)


class SlurmLauncher(Launcher):
    """Submits one Slurm job array per sweep round; waits and reports unless --no-wait."""

    name = "slurm"
    extra_keys = ("cluster", "account", "qos", "constraint", "max_num_timeout", "folder")

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Submit `calls` as one array; wait for and report each task unless --no-wait."""
        import submitit

        from benchmark.sweep import call_outcome, failure_outcome, sweep_dir

        opts, extra = self.options, self.options.extra
        ctx = calls[0].ctx
        folder = Path(extra.get("folder") or sweep_dir(Path(ctx.results_dir), ctx.sweep_id)
                      / "submitit")
        cluster = extra.get("cluster")
        if cluster not in (None, "slurm", "local", "debug"):
            raise UserError(f"--opt cluster={cluster}: expected slurm, local or debug")
        # requeues after a timeout (preemptions are requeued without limit by submitit)
        executor = submitit.AutoExecutor(
            folder=folder / "%j", cluster=cluster,
            slurm_max_num_timeout=int(extra.get("max_num_timeout", 3)))
        params: dict[str, Any] = {
            "timeout_min": opts.time_min, "cpus_per_task": opts.cpus_per_job,
            "slurm_array_parallelism": opts.array_parallelism,
            "name": f"calcbench-{ctx.sweep_id}",
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
        with executor.batch():
            jobs = [executor.submit(_Requeueable(), call) for call in calls]
        by_id = {job.job_id: call for job, call in zip(jobs, calls, strict=True)}
        if not opts.wait:
            for job, call in zip(jobs, calls, strict=True):
                on_result(call_outcome(call, "submitted", slurm_job=job.job_id))
            return
        for job in submitit.helpers.as_completed(jobs):
            try:
                outcome = job.result()
            except Exception as exc:  # the task itself failed (node lost, out of memory)
                outcome = failure_outcome(by_id[job.job_id], exc)
            on_result({**outcome, "slurm_job": job.job_id})
