"""`local` launcher: a process pool on this machine; with several GPUs, one job per GPU.

Workers are spawned (not forked: torch and its thread pools do not survive a fork) and reused
across jobs; each pins one GPU through CUDA_VISIBLE_DEVICES before torch touches CUDA, and on
CPU splits the cores between workers so they do not oversubscribe them. On Linux a worker dies
with the sweep that spawned it (kill, kill -9, OOM): an orphan would keep its job's lock and
its cores while the resumed sweep waits for them; the killed job resumes from its last epoch.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from benchmark.errors import UserError
from benchmark.launchers.base import Launcher, Outcome


def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []


def cpu_threads_per_worker(workers: int) -> int:
    """The torch CPU threads each of `workers` local workers gets: the cores this process may
    use (its CPU affinity, as taskset or a Slurm allocation sets it) split evenly."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, workers))


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when its parent dies (PR_SET_PDEATHSIG);
    exit at once if the parent is already gone. Elsewhere: nothing (no such call)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(gpu_ids: Any, threads: int, parent: int) -> None:
    """Die with the sweep; pin this worker to one GPU (from the shared queue) or to `threads`
    CPU threads."""
    _die_with_parent(parent)
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())
    import torch

    torch.set_num_threads(threads)


def _call(call: Any) -> Outcome:
    return call()


class LocalLauncher(Launcher):
    """Runs jobs in `--workers` spawned processes (default: one per GPU, else 1)."""

    name = "local"

    def launch(self, calls: list[Any], on_result: Callable[[Outcome], None]) -> None:
        """Run `calls` in the pool (or here with --workers 0), reporting each as it ends."""
        from benchmark.sweep import failure_outcome

        gpus = visible_gpus()
        workers = self.options.workers
        if workers is None:
            workers = max(1, len(gpus))
        if workers < 0:
            raise UserError(f"--workers {workers}: expected >= 0")
        if workers == 0:  # in this process: for debuggers and profilers
            for call in calls:
                on_result(call())
            return
        workers = min(workers, len(calls))
        ctx = mp.get_context("spawn")
        queue = None
        if len(gpus) > 1:
            if workers > len(gpus):
                raise UserError(f"--workers {workers}: only {len(gpus)} GPUs are visible; "
                                "the local launcher runs one job per GPU")
            queue = ctx.Queue()
            for g in gpus[:workers]:
                queue.put(g)
        threads = cpu_threads_per_worker(workers)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(queue, threads, os.getpid())) as pool:
            futures: dict[Future[Outcome], Any] = {pool.submit(_call, c): c for c in calls}
            try:
                while futures:
                    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                    for fut in done:
                        call = futures.pop(fut)
                        try:
                            outcome = fut.result()
                        except Exception as exc:  # the worker process died (OOM, segfault)
                            outcome = failure_outcome(call, exc)
                        on_result(outcome)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
