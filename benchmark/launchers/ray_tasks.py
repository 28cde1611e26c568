"""`ray` launcher: one Ray task per job with its CPU/GPU request, for clusters without Slurm.

`--address` joins a running cluster (`ray.init(address=...)`); without it Ray joins the
cluster named by RAY_ADDRESS or a cluster already running on this machine, and otherwise
starts a local instance for the sweep and shuts it down after it. Ray retries a task whose
worker died, and the retried task resumes from the run's checkpoint. Ray is imported only
when this launcher runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from benchmark.errors import UserError
from benchmark.launchers.base import Launcher, Outcome
from benchmark.numerics import PORTABLE_ENV


def _call(call: Any) -> Outcome:
    return call()


def check_fits(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> None:
    """UserError unless some live node of the cluster (`ray.nodes()`) can hold one job:
    otherwise Ray would keep the tasks pending forever without a word."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        return
    most_cpu = max((r.get("CPU", 0) for r in alive), default=0)
    most_gpu = max((r.get("GPU", 0) for r in alive), default=0)
    raise UserError(f"--cpus-per-job {cpus:g} --gpus-per-job {gpus:g}: no node of the Ray "
                    f"cluster has that much (the largest has {most_cpu:g} CPUs and "
                    f"{most_gpu:g} GPUs), so the jobs would wait forever")


def _init_error(exc: BaseException) -> UserError:
    """One line for ray.init's refusal (bad address, options that a running cluster ignores)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "num_cpus" in first or "num_gpus" in first:
        return UserError("--opt num_cpus: only for a Ray instance the sweep starts itself; this "
                         "sweep joins a running cluster, which keeps its own CPU count")
    hint = ""
    if "connect" in first.lower() and not os.environ.get("RAY_AUTH_MODE"):
        hint = ("; if the cluster uses token authentication (recent `ray start` turns it on), "
                "set RAY_AUTH_MODE=token here too")
    return UserError(f"--launcher ray: could not start or join Ray: {first}{hint}")


class RayLauncher(Launcher):
    """Submits every job as a task and reports them as they finish."""

    name = "ray"
    extra_keys = ("max_retries", "num_cpus")

    def _init(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started it (so it shuts it down)."""
        opts = self.options
        if ray.is_initialized():
            return False
        joining = opts.address or os.environ.get("RAY_ADDRESS")
        if "num_cpus" in opts.extra and joining:
            raise _init_error(ValueError("num_cpus"))
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING,  # no "Connecting to ..."
                                  # the driver's calcbench settings follow its jobs
                                  "runtime_env": {"env_vars": {
                                      k: v for k, v in os.environ.items()
                                      if k.startswith("CALCBENCH_") or k in PORTABLE_ENV}}}
        if opts.address:
            kwargs["address"] = opts.address
        if "num_cpus" in opts.extra:
            kwargs["num_cpus"] = int(opts.extra["num_cpus"])
        try:
            ray.init(**kwargs)
        except (ValueError, ConnectionError, RuntimeError, TimeoutError) as exc:
            raise _init_error(exc) from None
        return True

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Start (or join) Ray, submit one task per call, report each as it finishes."""
        try:
            import ray
        except ImportError:
            raise UserError("the ray launcher needs Ray: pip install 'calcbench[ray]'") from None

        from benchmark.sweep import failure_outcome

        opts = self.options
        started = self._init(ray)
        try:
            check_fits(ray.nodes(), opts.cpus_per_job, opts.gpus_per_job)
            remote = ray.remote(num_cpus=opts.cpus_per_job, num_gpus=opts.gpus_per_job,
                                max_retries=int(opts.extra.get("max_retries", 3)))(_call)
            # each task uses the CPUs and GPUs Ray granted it, no more
            calls = [dataclasses.replace(c, threads=opts.cpus_per_job, gpus=opts.gpus_per_job)
                     if dataclasses.is_dataclass(c) else c for c in calls]
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
