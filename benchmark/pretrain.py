"""`bench pretrain`: train a method's plain network on the formula pretext (no data, no GPU).

The network (`Method.formula_network`) learns to segment the shapes of benchmark/formula.py;
the result is the `pretrained=formula` start of that method (and of every method with the same
network layout). Recipe (the same for every network, recorded in the manifest): AdamW, lr 1e-3
with a linear warm-up over the first 5 % of the steps (at most 500) and a cosine decay to 0,
weight decay 0.05, batch 8, 0.4 BCE + 0.6 soft Dice (Swin-Unet's loss; a method-independent
pretext loss, since one weights file serves several methods).

Step s trains on formula images s*B .. s*B+B-1 of the training stream, so the batches depend
only on (seed, step). The work folder keeps a checkpoint (network, optimizer, torch RNG, curve)
every `checkpoint_every` steps, written atomically: a run killed at any point and started again
with the same command continues from its last checkpoint and ends with the weights an
uninterrupted run gives (same thread count and kernels, see docs/guide/cli.md#reproducibility).
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark import formula, numerics
from benchmark.config import Profile, seed_hash
from benchmark.errors import UserError
from benchmark.io import atomic_write, atomic_write_text
from benchmark.progress import Reporter
from benchmark.registry import METHODS, get_method
from benchmark.runner import code_version, git_commit, versions
from benchmark.store import now_iso
from benchmark.trainer import load_checkpoint, save_checkpoint
from benchmark.validate import resolve_config
from methods.base import Method
from methods.losses import bce_dice_loss
from methods.networks.formula_weights import (
    FILE_FORMAT,
    arch_key,
    cache_weights_dir,
    sha256_file,
)

#: Total steps when neither --steps nor --minutes is given (smoke: seconds; quick: ~70 min on
#: one CPU thread; paper: a GPU budget).
DEFAULT_STEPS = {"smoke": 300, "quick": 9_000, "paper": 40_000}
VAL_IMAGES = {"smoke": 8, "quick": 64, "paper": 64}


@dataclass(frozen=True)
class Recipe:
    """The pretext optimisation, identical for every network (recorded in the manifest)."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 8
    warmup_fraction: float = 0.05
    max_warmup: int = 500
    bce_weight: float = 0.4
    dice_weight: float = 0.6

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up, then a cosine decay to 0 at `total`."""
        warm = max(1, min(self.max_warmup, int(total * self.warmup_fraction)))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class PretrainRequest:
    """What `bench pretrain` was asked for."""

    method: str
    profile: str = "quick"
    sets: list[str] = field(default_factory=list)
    steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    cache_dir: Path | None = None
    out_dir: Path | None = None  # default: <cache>/pretrained
    half: bool = False  # store float16 tensors (the shipped files)
    pretext: str = "regions"  # benchmark.formula.PRETEXTS; regions fine-tuned best (docs)
    checkpoint_every: int | None = None


@dataclass
class PretrainOutcome:
    """Where the weights are and how far the pretraining got."""

    weights: Path | None  # None: stopped by --minutes before the last step
    step: int
    total: int
    val_dsc: float | None
    work_dir: Path


def pretext_network(method: str, profile_name: str, sets: list[str]
                    ) -> tuple[Any, Profile, dict[str, Any], nn.Module]:
    """(method info, profile, hparams, the method's plain network at random init)."""
    info = get_method(method)
    sets = _without_init(sets)
    if "pretrained" in {h.name for h in info.cls.hparam_space()}:
        sets.append("pretrained=none")  # the pretext network starts at random
    profile, hparams = resolve_config(info.cls, profile_name, sets, 0)
    net = info.cls.formula_network(hparams, profile.image_size)
    if net is None:
        able = [m.name for m in METHODS.all().values()  # those that override the hook
                if m.cls.formula_network.__func__ is not Method.formula_network.__func__]
        raise UserError(f"bench pretrain: method '{info.name}' has no network that takes formula "
                        f"weights; methods that do: {', '.join(sorted(able))}")
    return info, profile, hparams, net


def _without_init(sets: list[str]) -> list[str]:
    """--set pairs minus `pretrained=...`: the pretext network always starts at random."""
    return [s for s in sets if s.split("=", 1)[0].strip() != "pretrained"]


def pretext_dsc(net: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean per-image DSC at threshold 0.5 on held-out formula images (both empty: 1)."""
    net.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            pred = (torch.sigmoid(net(images[start:start + 16])) >= 0.5).float()
            ref = masks[start:start + 16]
            inter = (pred * ref).flatten(1).sum(1)
            total = pred.flatten(1).sum(1) + ref.flatten(1).sum(1)
            dsc = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
            scores.extend(dsc.tolist())
    net.train()
    return float(np.mean(scores))


def _step(net: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, seed: int, step: int,
          total: int, size: int, pretext: str) -> float:
    """One optimisation step on the formula batch of `step`; returns the loss."""
    images, masks = formula.batch(seed, step * recipe.batch_size, recipe.batch_size, size,
                                  pretext=pretext)
    for group in opt.param_groups:
        group["lr"] = recipe.lr_at(step, total)
    opt.zero_grad(set_to_none=True)
    logits = net(torch.from_numpy(images))
    loss = bce_dice_loss(logits, torch.from_numpy(masks), bce_weight=recipe.bce_weight,
                         dice_weight=recipe.dice_weight)["loss"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def _optimizer(net: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _planned_total(req: PretrainRequest, work_root: Path, key: str, net: nn.Module,
                   recipe: Recipe, size: int) -> int:
    """Total steps: --steps, else what --minutes affords at the measured speed (measured once
    and kept, so the same command resumes the same plan), else the profile's default."""
    if req.steps is not None:
        return req.steps
    if req.minutes is None:
        return DEFAULT_STEPS.get(req.profile, DEFAULT_STEPS["quick"])
    plan = work_root / f"{key}{_tag(req.pretext)}-s{req.seed}-m{req.minutes:g}.json"
    if plan.is_file():
        return int(json.loads(plan.read_text())["steps"])
    import copy

    probe = copy.deepcopy(net)
    opt = _optimizer(probe, recipe)
    rng = torch.get_rng_state()
    _step(probe, opt, recipe, req.seed, 0, 100, size, req.pretext)  # warm-up: allocations
    start, n = time.perf_counter(), 3
    for i in range(n):
        _step(probe, opt, recipe, req.seed, i, 100, size, req.pretext)
    rate = n / (time.perf_counter() - start)
    torch.set_rng_state(rng)  # the probe's drop-path draws leave no trace in the real run
    steps = max(1, int(req.minutes * 60 * rate))
    atomic_write_text(plan, json.dumps({"minutes": req.minutes, "steps": steps,
                                        "measured_steps_per_s": round(rate, 3)}) + "\n")
    return steps


def pretrain(req: PretrainRequest, reporter: Reporter) -> PretrainOutcome:
    """Train (or resume) the pretext; write the weights and manifest when the last step is done."""
    if req.steps is not None and req.steps < 1:
        raise UserError("bench pretrain: --steps must be at least 1")
    if req.minutes is not None and req.minutes <= 0:
        raise UserError("bench pretrain: --minutes must be positive")
    if req.pretext not in formula.PRETEXTS:
        raise UserError(f"bench pretrain: --pretext must be one of {', '.join(formula.PRETEXTS)}, "
                        f"not '{req.pretext}'")
    torch.manual_seed(seed_hash(req.seed, "formula-init"))
    info, profile, hparams, net = pretext_network(req.method, req.profile, req.sets)
    size = profile.image_size
    key = arch_key(net, size)
    recipe = Recipe()
    root = cache_weights_dir(req.cache_dir)
    work_root = root / "work"
    total = _planned_total(req, work_root, key, net, recipe, size)
    work = work_root / f"{key}{_tag(req.pretext)}-s{req.seed}-n{total}"
    state_path = work / "state.pt"
    opt = _optimizer(net, recipe)
    every = req.checkpoint_every or max(1, min(200, total // 20 or 1))
    val_every = max(1, total // 20)
    step, curve, seconds, loss_sum, loss_n = 0, [], 0.0, 0.0, 0
    if state_path.is_file():
        state = load_checkpoint(state_path)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        step, curve, seconds = int(state["step"]), list(state["curve"]), float(state["seconds"])
        loss_sum, loss_n = float(state["loss_sum"]), int(state["loss_n"])
        reporter.log(f"resuming the formula pretraining of {info.name} at step {step} of "
                     f"{total} ({work})")
    n_val = VAL_IMAGES.get(profile.name, 64)
    vi, vm = formula.batch(req.seed, 0, n_val, size, stream=formula.VAL_STREAM,
                           pretext=req.pretext)
    val_images, val_masks = torch.from_numpy(vi), torch.from_numpy(vm)
    deadline = None if req.minutes is None or req.steps is None else (
        time.monotonic() + req.minutes * 60)
    net.train()
    last_dsc = curve[-1]["val_dsc"] if curve else None
    with reporter.task(f"formula pretraining {info.name} ({profile.name})", total=total,
                       completed=step) as task:
        tick = started = time.perf_counter()
        done_here = 0
        while step < total:
            loss_sum += _step(net, opt, recipe, req.seed, step, total, size, req.pretext)
            loss_n += 1
            step += 1
            if step % val_every == 0 or step == total:
                last_dsc = pretext_dsc(net, val_images, val_masks)
                curve.append({"step": step, "loss": round(loss_sum / max(loss_n, 1), 5),
                              "val_dsc": round(last_dsc, 5),
                              "seconds": round(seconds + time.perf_counter() - tick, 1)})
                loss_sum, loss_n = 0.0, 0
            done_here += 1
            rate = done_here * recipe.batch_size / max(time.perf_counter() - started, 1e-9)
            task.advance(1, img_s=round(rate, 1), loss=round(loss_sum / max(loss_n, 1), 3)
                         if loss_n else None, pretext_dsc=last_dsc)
            if step % every == 0 or step == total:
                seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                save_checkpoint(state_path, {
                    "step": step, "total": total, "net": net.state_dict(),
                    "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "curve": curve, "seconds": seconds, "loss_sum": loss_sum,
                    "loss_n": loss_n})
                if deadline is not None and time.monotonic() >= deadline and step < total:
                    reporter.log(f"stopped by --minutes at step {step} of {total}; run the same "
                                 "command again to continue")
                    return PretrainOutcome(None, step, total, last_dsc, work)
    out_dir = req.out_dir or root
    weights = _write_weights(out_dir, key, net, req, info, profile, hparams, recipe, total,
                             curve, seconds)
    return PretrainOutcome(weights, step, total, last_dsc, work)


def _write_weights(out_dir: Path, key: str, net: nn.Module, req: PretrainRequest, info: Any,
                   profile: Profile, hparams: dict[str, Any], recipe: Recipe, total: int,
                   curve: list[dict[str, Any]], seconds: float) -> Path:
    """`<out>/<key>.pt` (the weights) and `<out>/<key>.json` (the manifest), atomically."""
    dtype = torch.float16 if req.half else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).clone()
             for k, v in net.state_dict().items()}
    payload = {"format": FILE_FORMAT, "arch_key": key, "steps": total, "seed": req.seed,
               "generator_version": formula.GENERATOR_VERSION, "pretext": req.pretext,
               "state_dict": state}
    path = out_dir / f"{key}.pt"
    atomic_write(path, lambda fh: torch.save(payload, fh))
    args = [f"--pretext {req.pretext}", *(f"--set {shlex.quote(s)}"
                                           for s in _without_init(req.sets))]
    if req.half:
        args.append("--half")
    if req.out_dir is not None:
        args.append(f"--out-dir {shlex.quote(_shown_path(req.out_dir))}")
    rebuild = " ".join([f"CALCBENCH_PORTABLE=1 bench pretrain --method {info.name} --profile "
                        f"{profile.name} --steps {total} --seed {req.seed} --threads "
                        f"{torch.get_num_threads()}", *args])
    manifest = {
        "format": FILE_FORMAT, "arch_key": key, "file": path.name, "sha256": sha256_file(path),
        "dtype": str(dtype).removeprefix("torch."),
        "method": info.name, "network": f"{type(net).__module__}.{type(net).__qualname__}",
        "profile": profile.name, "image_size": profile.image_size,
        "hparams": {k: v for k, v in hparams.items() if k != "pretrained"},
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "generator_version": formula.GENERATOR_VERSION, "pretext": req.pretext,
        "steps": total, "seed": req.seed,
        "recipe": recipe.__dict__, "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(), "numerics": numerics.describe(),
        "code_version": code_version(info), "git_commit": git_commit(), "versions": versions(),
        "created": now_iso(), "rebuild": rebuild, "curve": curve,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(manifest, indent=1) + "\n")
    return path


def _shown_path(path: Path) -> str:
    """`path` relative to the working folder when inside it (no local paths in manifests)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _tag(pretext: str) -> str:
    """The work-folder tag of a pretext (none for `shapes`, whose folders predate the others)."""
    return "" if pretext == "shapes" else f"-{pretext}"


def known_weights(cache_dir: Path | None, extra: list[Path]) -> list[dict[str, Any]]:
    """One row per formula weights manifest: the cache's, the shipped ones, then `extra`."""
    from methods.networks.formula_weights import SHIPPED_DIR

    found: list[tuple[str, Path]] = []
    for where, folder in (("cache", cache_weights_dir(cache_dir)), ("shipped", SHIPPED_DIR)):
        found += [(where, p) for p in sorted(folder.glob("*.json"))]
    for path in extra:
        manifest = path if path.suffix == ".json" else path.with_suffix(".json")
        if not manifest.is_file():
            raise UserError(f"'{path}': no formula weights manifest ({manifest.name}) there")
        found.append(("given", manifest))
    rows = []
    for where, path in found:
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"formula weights manifest '{path}' is unreadable "
                            f"({type(err).__name__})") from None
        if m.get("format") != FILE_FORMAT:
            continue
        curve = m.get("curve") or []
        rows.append({"arch_key": m.get("arch_key", "?"), "where": where, "path": str(path),
                     "method": m.get("method", "?"), "profile": m.get("profile", "?"),
                     "pretext": m.get("pretext", "shapes"), "steps": m.get("steps", "?"),
                     "dsc": f"{curve[-1]['val_dsc']:.3f}" if curve else "-",
                     "dtype": m.get("dtype", "?"), "sha256": m.get("sha256", ""),
                     "curve": curve})
    return rows


def plot_curves(rows: list[dict[str, Any]], out: Path) -> Path:
    """Held-out pretext DSC against the step, one line per weights file (PNG at `out`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for row in rows:
        if row["curve"]:
            ax.plot([p["step"] for p in row["curve"]], [p["val_dsc"] for p in row["curve"]],
                    marker="o", markersize=3,
                    label=f"{row['method']} {row['profile']}, {row['pretext']} ({row['where']})")
    ax.set_xlabel("pretraining step (batch 8)")
    ax.set_ylabel("held-out pretext DSC")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return out
