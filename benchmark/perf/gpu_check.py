"""The one-call GPU check behind scripts/gpu-check.sh: throughput, then two short trainings.

1. `bench perf train` at the paper profile for unet, swinunet, mlnnet and sadn.
2. Paper-profile trainings of swinunet and mlnnet on the synthetic ffdm -> dbt, from scratch
   (`pretrained=none`: the GPU machine reaches no registry), each capped in time: the steps per
   epoch come from the throughput measured in step 1, so `epochs` epochs fit the budget.
3. One table: per method, train/eval images/s, peak memory, and each training's validation DSC
   per epoch and its dbt test DSC.

`--dry-run` runs the same code on CPU at the smoke profile with a few steps (what the test
runs). Results and the data cache go to a scratch folder (`--out`), never to results/.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmark.config import get_profile
from benchmark.perf.train_perf import PerfRow, run_train_perf
from benchmark.progress import Reporter
from benchmark.registry import resolve_domain
from benchmark.runner import DataCache, RunRequest, default_cache_dir, resolve_device, run

PERF_METHODS = ("unet", "swinunet", "mlnnet", "sadn")
TRAIN_METHODS = ("swinunet", "mlnnet")


def plan_steps(img_s: float, batch: int, budget_s: float, epochs: int,
               overhead: float = 0.35) -> int:
    """Steps per epoch so that `epochs` epochs of training fit `budget_s`, keeping `overhead`
    of the budget for validation, the target evaluation and start-up (at least 1 step)."""
    if not math.isfinite(img_s) or img_s <= 0:
        return 1
    steps_total = budget_s * (1.0 - overhead) * img_s / batch
    return max(1, int(steps_total // epochs))


def train_capped(method: str, profile: str, device: str, steps: int, epochs: int,
                 out: Path, cache: Path, reporter: Reporter) -> dict[str, Any]:
    """One training from scratch on ffdm (`epochs` x `steps`), evaluated on dbt; its history."""
    sets = [f"epochs={epochs}", f"steps_per_epoch={steps}"]
    if method in TRAIN_METHODS:
        sets.append("pretrained=none")
    req = RunRequest(method=method, source="ffdm", targets=["dbt"], profile=profile,
                     device=device, sets=sets, results_dir=out / "results",
                     cache_dir=cache)
    t0 = time.monotonic()
    outcome = run(req, reporter)
    info = json.loads((outcome.run_dir / "run.json").read_text())
    history = info.get("training", {}).get("history", [])
    dbt = outcome.summary[outcome.summary["target"] == "dbt"]
    return {"method": method, "steps_per_epoch": steps, "epochs": epochs,
            "val_dsc": [h["val_dsc"] for h in history],
            "dbt_dsc": float(dbt["DSC_mean"].iloc[0]) if len(dbt) and "DSC_mean" in dbt
            else float("nan"),
            "seconds": time.monotonic() - t0, "init": info.get("init", "")}


def prepare_data(profile: str, cache: Path, reporter: Reporter) -> None:
    """Generate (or find in the cache) ffdm and dbt at the profile's size, so that neither
    training's time includes it."""
    prof = get_profile(profile)
    data = DataCache(prof, cache, reporter)
    for spec in ("ffdm", "dbt"):
        data.get(spec, resolve_domain(spec))


def print_table(perf: list[PerfRow | str], trained: list[dict[str, Any]], where: str,
                console: Console) -> None:
    """The single result table: one row per method with every measured figure."""
    table = Table(title=f"GPU check on {where}")
    for col in ("method", "params (M)", "train img/s", "eval img/s", "peak MiB",
                "val DSC per epoch", "dbt DSC (%)", "train+eval s"):
        table.add_column(col, justify="left" if col in ("method", "val DSC per epoch")
                         else "right")
    by_method = {r.method: r for r in perf if isinstance(r, PerfRow)}
    runs = {t["method"]: t for t in trained}
    for name in dict.fromkeys([*PERF_METHODS, *TRAIN_METHODS]):
        p, t = by_method.get(name), runs.get(name)
        table.add_row(
            name, f"{p.params_m:.1f}" if p else "-", f"{p.train_img_s:.1f}" if p else "-",
            f"{p.eval_img_s:.1f}" if p else "-", f"{p.peak_mib:.0f}" if p else "-",
            " ".join(f"{v:.3f}" for v in t["val_dsc"]) if t else "-",
            f"{t['dbt_dsc']:.1f}" if t and math.isfinite(t["dbt_dsc"]) else "-",
            f"{t['seconds']:.0f}" if t else "-")
    console.print(table)
    for r in perf:
        if isinstance(r, str):
            console.print(f"[red]perf failed[/red] {r}", highlight=False)
    for t in trained:
        console.print(f"{t['method']}: {t['epochs']} epochs x {t['steps_per_epoch']} steps, "
                      f"init {t['init']}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the three parts, print the table; exit 1 if any part failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, smoke profile, a few steps: checks every step of the script")
    ap.add_argument("--out", type=Path, default=Path("gpu-check-out"),
                    help="scratch folder for the runs and the JSON summary")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="data cache (default: $CALCBENCH_CACHE or ~/.cache/calcbench)")
    ap.add_argument("--train-budget", type=float, default=120.0,
                    help="seconds per training (training + validation + dbt evaluation)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per capped training")
    ap.add_argument("--steps", type=int, default=5, help="timed steps in the perf part")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (perf part)")
    args = ap.parse_args(argv)
    console = Console(width=140)
    reporter = Reporter(console=console, plain=True)
    if args.dry_run:
        device, profile, steps, warmup = torch.device("cpu"), "smoke", 1, 0
        budget, epochs = min(args.train_budget, 20.0), 2
    else:
        device = resolve_device("cuda")
        profile, steps, warmup = "paper", args.steps, 2
        budget, epochs = args.train_budget, args.epochs
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    args.out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]1/2 throughput[/bold] ({profile} profile, {where})")
    perf = run_train_perf(list(PERF_METHODS), device, profile, steps, warmup, args.compile,
                          reporter)
    trained = []
    failed = any(isinstance(r, str) for r in perf)
    cache = args.cache_dir or default_cache_dir()
    console.print(f"[bold]2/2 capped trainings from scratch[/bold] ({budget:.0f} s each; the "
                  "data are generated or read from the cache first)")
    prepare_data(profile, cache, reporter)
    for name in TRAIN_METHODS:
        p = next((r for r in perf if isinstance(r, PerfRow) and r.method == name), None)
        # the dry run checks the path, not the budget: one step per epoch
        steps = 1 if args.dry_run else plan_steps(p.train_img_s if p else 0.0,
                                                   p.batch if p else 1, budget, epochs)
        try:
            trained.append(train_capped(name, profile, device.type, steps, epochs, args.out,
                                        cache, reporter))
        except Exception as exc:  # report and go on: the other training still tells something
            failed = True
            console.print(f"[red]training {name} failed:[/red] {type(exc).__name__}: {exc}",
                          highlight=False)
    print_table(perf, trained, where, console)
    summary = {"device": where, "profile": profile,
               "perf": [r.__dict__ if isinstance(r, PerfRow) else r for r in perf],
               "trainings": trained}
    (args.out / "gpu-check.json").write_text(json.dumps(summary, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
