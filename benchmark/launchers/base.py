"""The launcher contract: run picklable job calls somewhere and report each outcome."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from benchmark.errors import UserError

Outcome = dict[str, Any]


@dataclass(frozen=True)
class LaunchOptions:
    """Launcher settings from the CLI; `extra` holds `--opt key=value` for plugin launchers."""

    workers: int | None = None  # local: parallel worker processes (0 = in this process)
    cpus_per_job: int = 1
    gpus_per_job: float = 0.0
    time_min: int = 240  # slurm: time limit of each array task, minutes
    partition: str | None = None
    mem_gb: float | None = None
    array_parallelism: int = 64  # slurm: at most this many array tasks at once
    address: str | None = None  # ray: cluster address (None: start a local instance)
    wait: bool = True  # slurm: wait for the array (False: submit and return)
    extra: dict[str, str] = field(default_factory=dict)


def pin_job_resources(threads: int | None, gpus: float | None) -> None:
    """Keep a cluster job within what it was granted: `threads` torch CPU threads (torch
    otherwise starts one per core of the node, oversubscribing the CPUs Slurm or Ray gave the
    job), and with `gpus` 0 no GPU at all. A job granted GPUs sees the ones its scheduler
    assigned: Ray and Slurm set CUDA_VISIBLE_DEVICES, or Slurm lists them in SLURM_STEP_GPUS /
    SLURM_JOB_GPUS, which we copy when CUDA_VISIBLE_DEVICES is unset. Call before CUDA starts."""
    if gpus is not None:
        if gpus <= 0:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        elif "CUDA_VISIBLE_DEVICES" not in os.environ:
            granted = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS")
            if granted:
                os.environ["CUDA_VISIBLE_DEVICES"] = granted
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
        os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


class Launcher(abc.ABC):
    """Base class of launchers; subclasses are registered under `calcbench.launchers`."""

    name: ClassVar[str] = ""
    #: keys of `LaunchOptions.extra` this launcher understands
    extra_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: LaunchOptions) -> None:
        unknown = sorted(set(options.extra) - set(self.extra_keys))
        if unknown:
            known = ", ".join(self.extra_keys) or "none"
            raise UserError(f"--opt {unknown[0]}: not an option of the '{self.name}' launcher "
                            f"(known: {known})")
        self.options = options

    def preflight(self) -> None:
        """Checks that can fail before anything is written or started (UserError); the CLI
        calls it before a sweep (not before a dry run), and `launch` may call it again.
        The base class has nothing to check."""
        return None

    @abc.abstractmethod
    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Run every call (a `benchmark.sweep.JobCall`) and pass each outcome to `on_result`,
        in completion order; return when all are settled (or submitted, if not waiting)."""
