"""What Slurm still holds of a sweep: the job name of its arrays and one `squeue` call.

Kept apart from the launcher so that `benchmark.sweep` (which the launcher imports) can ask
the queue without importing the launcher back.
"""

from __future__ import annotations

import shutil
import subprocess


def job_name(sweep_id: str) -> str:
    """The Slurm job name of a sweep's arrays (how `slurm_queue` finds them)."""
    return f"calcbench-{sweep_id}"


def slurm_queue(sweep_id: str) -> dict[str, str]:
    """Array task id ('123_4') -> squeue state of the sweep's jobs Slurm still holds
    ({} where squeue is missing or fails: then nothing is known to be queued)."""
    if not shutil.which("squeue"):
        return {}
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--name", job_name(sweep_id),
                              "--format", "%i %T"], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode:
        return {}
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line.strip())
