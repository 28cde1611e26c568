"""`ray` launcher: one Ray task per job with its CPU/GPU request, for clusters without Slurm.

`--address` joins a running cluster (`ray.init(address=...)`); without it a local instance is
started for the sweep and shut down after it. Ray retries a task whose worker died, and the
retried task resumes from the run's checkpoint. Ray is imported only when this launcher runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmark.errors import UserError
from benchmark.launchers.base import Launcher, Outcome


def _call(call: Any) -> Outcome:
    return call()


class RayLauncher(Launcher):
    """Submits every job as a task and reports them as they finish."""

    name = "ray"
    extra_keys = ("max_retries", "num_cpus")

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Start (or join) Ray, submit one task per call, report each as it finishes."""
        try:
            import ray
        except ImportError:
            raise UserError("the ray launcher needs Ray: pip install 'calcbench[ray]'") from None

        from benchmark.sweep import failure_outcome

        opts = self.options
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if opts.address:
                kwargs["address"] = opts.address
            elif "num_cpus" in opts.extra:
                kwargs["num_cpus"] = int(opts.extra["num_cpus"])
            ray.init(**kwargs)
            started = True
        try:
            remote = ray.remote(num_cpus=opts.cpus_per_job, num_gpus=opts.gpus_per_job,
                                max_retries=int(opts.extra.get("max_retries", 3)))(_call)
            refs = {remote.remote(call): call for call in calls}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    call = refs.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # task error after its retries
                        outcome = failure_outcome(call, exc)
                    on_result(outcome)
        finally:
            if started:
                ray.shutdown()
