"""MLN-net's costs: batched K-branch evaluation vs K forwards, and its training step vs Swin-Unet.

Run as `bench perf mlnnet`. (a) times evaluating all K branches as ONE forward of K*B images
(per-sample branch ids) against K separate forwards, and checks the outputs agree to 1e-5;
(b) times one training step of `mlnnet` (a batch per branch) against `swinunet` at the same
batch size. Both sides are measured in the same process, so the ratios hold on any machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmark.config import resolve_hparams
from benchmark.registry import get_method
from methods.networks.multinorm import branch

TOLERANCE = 1e-5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of `fn` over `repeats` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _build(name: str, profile: str, image_size: int, device: torch.device) -> Any:
    cls = get_method(name).cls
    torch.manual_seed(0)
    return cls(resolve_hparams(cls.hparam_space(), profile), device, image_size)


def run_mlnnet_perf(profile: str = "quick", image_size: int = 128, batch: int = 8,
                    repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Measure (a) batched vs per-branch evaluation and (b) mlnnet vs swinunet step time."""
    dev = torch.device(device)
    mln = _build("mlnnet", profile, image_size, dev)
    net, k = mln.network.eval(), mln.num_branches
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, image_size, image_size, generator=gen).to(dev)
    ids = torch.arange(k, device=dev).repeat_interleave(batch)
    stacked = images.repeat(k, 1, 1, 1)

    @torch.no_grad()
    def batched() -> torch.Tensor:
        with branch(ids):
            return net(stacked)

    @torch.no_grad()
    def separate() -> torch.Tensor:
        outs = []
        for j in range(k):
            with branch(j):
                outs.append(net(images))
        return torch.cat(outs)

    diff = float((batched() - separate()).abs().max())
    t_batched = _median_time(batched, repeats, dev)
    t_separate = _median_time(separate, repeats, dev)

    swin = _build("swinunet", profile, image_size, dev)
    masks = (torch.rand(batch, 1, image_size, image_size, generator=gen) > 0.97).float().to(dev)
    source = {"image": images, "mask": masks}
    views = {g: mln.make_view(g, source, torch.Generator().manual_seed(1))
             for g in mln.training_groups()}
    t_mln = _median_time(lambda: mln.update(views), repeats, dev)
    t_swin = _median_time(lambda: swin.update({"source": source}), repeats, dev)
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "profile": profile, "image_size": image_size, "batch": batch, "branches": k,
        "batched_s": t_batched, "separate_s": t_separate, "eval_ratio": t_separate / t_batched,
        "max_abs_diff": diff, "agree": diff <= TOLERANCE,
        "mlnnet_step_s": t_mln, "swinunet_step_s": t_swin, "step_ratio": t_mln / t_swin,
    }


def print_mlnnet_perf(r: dict[str, Any], console: Console) -> None:
    """Render the two comparisons as rich tables."""
    head = (f"{r['device']}, profile {r['profile']}, {r['image_size']} px, batch {r['batch']}, "
            f"K = {r['branches']} branches")
    a = Table(title=f"(a) evaluating all branches: one batched forward vs K forwards ({head})")
    for col in ("batched K*B forward", "K separate forwards", "speed-up", "max |diff|", "≤ 1e-5"):
        a.add_column(col)
    a.add_row(f"{r['batched_s'] * 1e3:.1f} ms", f"{r['separate_s'] * 1e3:.1f} ms",
              f"{r['eval_ratio']:.2f}×", f"{r['max_abs_diff']:.1e}", "yes" if r["agree"] else "NO")
    b = Table(title="(b) one training step at the same batch: mlnnet (a batch per branch) vs "
                    "swinunet")
    for col in ("mlnnet", "swinunet", "ratio"):
        b.add_column(col)
    b.add_row(f"{r['mlnnet_step_s'] * 1e3:.0f} ms", f"{r['swinunet_step_s'] * 1e3:.0f} ms",
              f"{r['step_ratio']:.2f}×")
    console.print(a)
    console.print(b)
