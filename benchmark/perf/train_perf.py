"""Training and evaluation throughput and peak memory of registered methods (`bench perf train`).

For each method: its profile hparams (with `pretrained=none`: the initialisation does not change
the speed, and nothing is downloaded), the harness's own batch path (`to_batch`, the geometric
augmentation, `make_view` per training group, `update`) on random images with sparse masks, the
CUDA fast path of `benchmark.accel`, and `predict_batch` at the profile's evaluation batch.
Reported: source images per second in training (a step consumes one batch of `batch_size`
source images, whatever number of views the method makes of it), images per second in
evaluation, and peak memory: CUDA max allocated, or on CPU the peak RSS of a forked process that
measures only that method (so one method's peak never shows up in another's row).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmark.accel import accelerate
from benchmark.config import PROFILES, Profile, apply_profile_overrides, resolve_hparams
from benchmark.errors import UserError
from benchmark.progress import Reporter
from benchmark.registry import get_method
from benchmark.trainer import geometric_augment, seed_everything, to_batch
from datasets.domain import DomainData


@dataclass
class PerfRow:
    """One method's measured throughput and memory."""

    method: str
    profile: str
    image_size: int
    batch: int
    eval_batch: int
    steps: int
    params_m: float
    train_img_s: float
    eval_img_s: float
    peak_mib: float
    memory_kind: str  # "cuda max allocated" | "process peak RSS"


def synthetic_data(n: int, size: int, seed: int = 0) -> DomainData:
    """`n` random images in [0, 1] with ~1 % foreground masks (a stand-in for a domain)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size), dtype=np.float32)
    masks = (rng.random((n, size, size)) > 0.99).astype(np.uint8)
    return DomainData("perf", images, masks, np.full((n, 2), 0.1), [f"p{i}" for i in range(n)],
                      [f"i{i}" for i in range(n)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_method(name: str, profile: Profile, device: torch.device, steps: int,
                   warmup: int, compile_model: bool = False,
                   sets: dict[str, Any] | None = None) -> PerfRow:
    """Time `steps` training steps and `steps` evaluation batches of `name` (after `warmup`)."""
    info = get_method(name)
    space = info.cls.hparam_space()
    hparams = resolve_hparams(space, profile.name)
    if "pretrained" in hparams:
        hparams["pretrained"] = "none"
    hparams.update(sets or {})
    seed_everything(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    method = info.cls(hparams, device, profile.image_size, amp=device.type == "cuda")
    accelerate(method, device, compile_model)
    bs, ebs = profile.batch_size, profile.eval_batch_size
    data = synthetic_data(max(bs, ebs) * 2, profile.image_size)
    gen = torch.Generator().manual_seed(0)
    groups = method.training_groups()
    order = np.arange(len(data))

    def train_step(i: int) -> None:
        idx = order[(i * bs) % (len(data) - bs + 1):][:bs]
        batch = to_batch(data, idx, device, method.context_slices)
        if profile.geometric_aug:
            batch = geometric_augment(batch, gen)
        method.train(True)
        method.update({g: method.make_view(g, batch, gen) for g in groups})

    eval_batch = to_batch(data, order[:ebs], device, method.context_slices)

    def eval_step() -> None:
        method.train(False)
        with torch.no_grad():
            method.predict_batch(eval_batch)

    for i in range(warmup):
        train_step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(warmup + i)
    _sync(device)
    train_s = time.perf_counter() - t0
    for _ in range(warmup):
        eval_step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        eval_step()
    _sync(device)
    eval_s = time.perf_counter() - t0
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss / (2**20 if sys.platform == "darwin" else 2**10)
        kind = "process peak RSS"
    return PerfRow(name, profile.name, profile.image_size, bs, ebs, steps,
                   method.num_parameters() / 1e6, steps * bs / train_s, steps * ebs / eval_s,
                   peak, kind)


def _child(conn: Any, args: tuple[Any, ...]) -> None:
    """Forked worker: measure one method and send the row (or the error text) back."""
    try:
        conn.send(("ok", asdict(measure_method(*args))))
    except Exception as exc:  # reported in the parent's table, not as a traceback here
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _measure_isolated(args: tuple[Any, ...]) -> PerfRow:
    """On CPU, measure in a forked process so the peak RSS is this method's alone."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, args))
    proc.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return PerfRow(**payload)


def default_profile(device: torch.device) -> str:
    """The paper profile on CUDA; the quick one on CPU (the paper sizes take minutes a step)."""
    return "paper" if device.type == "cuda" else "quick"


def run_train_perf(methods: list[str], device: torch.device, profile: str | None = None,
                   steps: int = 5, warmup: int = 2, compile_model: bool = False,
                   reporter: Reporter | None = None,
                   overrides: dict[str, Any] | None = None) -> list[PerfRow | str]:
    """Measure each method (a PerfRow, or the error text of a method that failed)."""
    if not methods:
        raise UserError("bench perf train: give at least one --method (or --method all)")
    if steps < 1 or warmup < 0:
        raise UserError("bench perf train: --steps must be >= 1 and --warmup >= 0")
    names = [m for m in methods if m != "all"]
    if "all" in methods:
        from benchmark.registry import METHODS

        names += sorted(n for n in METHODS.all() if n not in names)
    for n in names:
        get_method(n)  # unknown names fail before anything is measured
    base = PROFILES[profile or default_profile(device)]
    prof = apply_profile_overrides(base, overrides or {})
    rows: list[PerfRow | str] = []
    reporter = reporter or Reporter()
    with reporter.task("perf train", total=len(names), every=True) as task:
        for name in names:
            args = (name, prof, device, steps, warmup, compile_model)
            try:
                row: PerfRow | str = (_measure_isolated(args) if device.type == "cpu"
                                      else measure_method(*args))
            except Exception as exc:  # one broken method must not hide the others' rows
                row = f"{name}: {exc}"
            rows.append(row)
            task.advance(1, method=name)
    return rows


def print_train_perf(rows: list[PerfRow | str], device: torch.device, console: Console,
                     compile_model: bool = False) -> None:
    """The table of `run_train_perf`, titled with the device and the profile used."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    ok = [r for r in rows if isinstance(r, PerfRow)]
    prof = f"{ok[0].profile} profile, {ok[0].image_size} px" if ok else ""
    table = Table(title=f"training and evaluation throughput on {where}, {prof}"
                        f"{', torch.compile' if compile_model else ''}")
    for col in ("method", "params (M)", "batch / eval batch", "train img/s", "eval img/s",
                "peak memory (MiB)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in ok:
        table.add_row(r.method, f"{r.params_m:.2f}", f"{r.batch} / {r.eval_batch}",
                      f"{r.train_img_s:.1f}", f"{r.eval_img_s:.1f}", f"{r.peak_mib:.0f}")
    console.print(table)
    if ok:
        console.print(f"peak memory: {ok[0].memory_kind}; {ok[0].steps} timed steps after "
                      "warm-up", highlight=False)
    for r in rows:
        if isinstance(r, str):
            console.print(f"[red]failed[/red] {r}", highlight=False)
