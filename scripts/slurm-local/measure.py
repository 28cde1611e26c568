#!/usr/bin/env python3
"""Train time of the same sweep through real Slurm (1 CPU per task) and the local launcher.

    python scripts/slurm-local/measure.py [--seeds 0,1] [--steps 200]

Runs a smoke sweep of U-Net jobs (one per seed, on the test suite's tiny synthetic domains)
twice, each in a fresh results folder: with `--launcher local --workers N` (N = number of
jobs, so each worker gets its share of the cores) and with `--launcher slurm --cpus-per-job 1`
on the cluster named by SLURM_CONF, or on a throw-away one that `cluster.py` starts and stops.
Prints each launcher's summed `train_seconds` (from run.json) and wall time, and the ratio
slurm/local. Run it alone on the machine (`flock /tmp/calcbench-cpu.lock ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = ROOT / "tests" / "data"


def sweep(launcher: list[str], seeds: str, steps: int, cwd: Path,
          env: dict[str, str]) -> tuple[float, float]:
    """Run the sweep with `launcher` options in `cwd`; (summed train seconds, wall seconds)."""
    bench = Path(sys.executable).parent / "bench"
    cmd = [str(bench), "sweep", "--profile", "smoke", "--methods", "unet", "--sources",
           str(DATA / "tiny-ffdm.toml"), "--seeds", seeds, "--set",
           f"steps_per_epoch={steps}", "--no-progress", *launcher]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if done.returncode:
        sys.exit(f"error: {' '.join(launcher)} sweep failed:\n{done.stdout}{done.stderr}")
    infos = [json.loads(p.read_text()) for p in (cwd / "results").glob("runs/*/run.json")]
    return sum(i["timings"]["train_seconds"] for i in infos), wall


def main() -> int:
    """Measure both launchers and print the figures and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1", help="one job per seed (default: 0,1)")
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch (2 epochs)")
    args = parser.parse_args()
    jobs = len(args.seeds.split(","))
    work = Path(tempfile.mkdtemp(prefix="calcbench-measure-"))
    work.chmod(0o711)  # munged runs as 'munge' and must reach its key folder inside
    env = {k: v for k, v in os.environ.items() if k != "CALCBENCH_RESULTS"}
    env.setdefault("CALCBENCH_CACHE", str(work / "cache"))
    sys.path.insert(0, str(HERE))
    import cluster  # scripts/slurm-local/cluster.py

    owned = None
    if not env.get("SLURM_CONF"):
        owned = work / "slurm"
        env.update(cluster.start(owned))
    try:
        (work / "local").mkdir()
        (work / "slurm-run").mkdir()
        local = sweep(["--launcher", "local", "--workers", str(jobs)], args.seeds, args.steps,
                      work / "local", env)
        slurm = sweep(["--launcher", "slurm", "--cpus-per-job", "1"], args.seeds, args.steps,
                      work / "slurm-run", env)
    finally:
        if owned is not None:
            cluster.stop(owned)
    print(f"{jobs} U-Net smoke jobs x 2 epochs x {args.steps} steps, "
          f"{os.cpu_count()} CPU cores")
    print(f"local --workers {jobs}:       train {local[0]:7.1f} s (sum over jobs), "
          f"wall {local[1]:6.1f} s")
    print(f"slurm --cpus-per-job 1:  train {slurm[0]:7.1f} s (sum over jobs), "
          f"wall {slurm[1]:6.1f} s")
    print(f"ratio slurm/local: train {slurm[0] / local[0]:.2f}x, wall {slurm[1] / local[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
