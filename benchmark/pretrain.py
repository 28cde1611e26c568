"""`bench pretrain`: train a method's plain network on the formula pretext (no data, no GPU).

The network (`Method.formula_network`) learns to segment the shapes of benchmark/formula.py;
the result is the `pretrained=formula` start of that method (and of every method with the same
network layout). Recipe (the same for every network, recorded in the manifest): AdamW, lr 1e-3
with a linear warm-up over the first 5 % of the steps (at most 500) and a cosine decay to 0,
weight decay 0.05, batch 8, 0.4 BCE + 0.6 soft Dice (Swin-Unet's loss; a method-independent
pretext loss, since one weights file serves several methods). The encoder-only `fractals`
pretext (benchmark/fractals.py) uses the same optimiser with cross-entropy over its categories,
on the encoder and a linear head (benchmark/pretext_encoder.py); it is validated by top-1
accuracy instead of DSC.

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

from benchmark import formula, fractals, numerics
from benchmark.config import Profile, seed_hash
from benchmark.errors import UserError
from benchmark.io import atomic_write, atomic_write_text
from benchmark.pretext_encoder import EncoderClassifier, finished_state
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

#: Seconds of steps timed to plan a --minutes run (after two warm-up steps).
SPEED_SAMPLE_S = 3.0
#: Total steps when neither --steps nor --minutes is given (smoke: seconds; quick: ~70 min on
#: one CPU thread; paper: a GPU budget).
DEFAULT_STEPS = {"smoke": 300, "quick": 9_000, "paper": 40_000}
VAL_IMAGES = {"smoke": 8, "quick": 64, "paper": 64}
#: The encoder-only classification pretext (FractalDB-style) and its category counts per
#: profile: FractalDB's 1,000 at paper; at quick 16, since at 64 neither the quick Swin-Unet
#: (1,000 steps) nor the quick U-Net encoder (400 steps) left chance level at batch 8, while
#: the U-Net reached 39 % top-1 on 8 categories in 400 steps (docs/guide/pretraining.md).
FRACTALS = "fractals"
PRETEXTS = (*formula.PRETEXTS, FRACTALS)
CLASSES = {"smoke": 8, "quick": 16, "paper": 1000}
VAL_FRACTALS = {"smoke": 16, "quick": 256, "paper": 1000}


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
    classes: int | None = None  # fractals: the category count (default: CLASSES[profile])
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


def score_of(point: dict[str, Any]) -> float:
    """A curve point's held-out score: pretext DSC, or top-1 accuracy for `fractals`."""
    return float(point["val_dsc"] if "val_dsc" in point else point["val_acc"])


def pretext_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the encoder classifier on held-out fractal images."""
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(images), 32):
            hits += int((model(images[start:start + 32]).argmax(1)
                         == labels[start:start + 32]).sum())
    model.train()
    return hits / max(len(images), 1)


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
          total: int, size: int, pretext: str, classes: int) -> float:
    """One optimisation step on the formula batch of `step`; returns the loss."""
    for group in opt.param_groups:
        group["lr"] = recipe.lr_at(step, total)
    opt.zero_grad(set_to_none=True)
    if pretext == FRACTALS:
        images, labels = fractals.batch(seed, step * recipe.batch_size, recipe.batch_size,
                                        size, classes)
        loss = nn.functional.cross_entropy(net(torch.from_numpy(images)),
                                           torch.from_numpy(labels))
    else:
        images, masks = formula.batch(seed, step * recipe.batch_size, recipe.batch_size, size,
                                      pretext=pretext)
        loss = bce_dice_loss(net(torch.from_numpy(images)), torch.from_numpy(masks),
                             bce_weight=recipe.bce_weight, dice_weight=recipe.dice_weight)["loss"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def _optimizer(net: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _planned_total(req: PretrainRequest, work_root: Path, key: str, net: nn.Module,
                   recipe: Recipe, size: int, classes: int) -> int:
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
    for i in range(2):  # allocations and kernel caches: the first steps run slower
        _step(probe, opt, recipe, req.seed, i, 100, size, req.pretext, classes)
    # Time at least 3 steps and 3 s: a 3-step sample once planned 2.1 steps/s for a run that
    # then went at 3.6.
    start, n = time.perf_counter(), 0
    while n < 3 or (time.perf_counter() - start < SPEED_SAMPLE_S and n < 200):
        _step(probe, opt, recipe, req.seed, n, 100, size, req.pretext, classes)
        n += 1
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
    if req.pretext not in PRETEXTS:
        raise UserError(f"bench pretrain: --pretext must be one of {', '.join(PRETEXTS)}, "
                        f"not '{req.pretext}'")
    torch.manual_seed(seed_hash(req.seed, "formula-init"))
    info, profile, hparams, net = pretext_network(req.method, req.profile, req.sets)
    size = profile.image_size
    key = arch_key(net, size)
    encoder_only = req.pretext == FRACTALS
    if req.classes is not None and (req.classes < 2 or not encoder_only):
        raise UserError("bench pretrain: --classes takes a count of at least 2, with "
                        "--pretext fractals only")
    classes = req.classes or CLASSES.get(profile.name, CLASSES["quick"])
    model = EncoderClassifier(net, classes, info.name) if encoder_only else net
    recipe = Recipe()
    root = cache_weights_dir(req.cache_dir)
    work_root = root / "work"
    total = _planned_total(req, work_root, key, model, recipe, size, classes)
    tag = _tag(req.pretext) + (f"{classes}" if encoder_only else "")
    work = work_root / f"{key}{tag}-s{req.seed}-n{total}"
    state_path = work / "state.pt"
    opt = _optimizer(model, recipe)
    every = req.checkpoint_every or max(1, min(200, total // 20 or 1))
    val_every = max(1, total // 20)
    step, curve, seconds, loss_sum, loss_n = 0, [], 0.0, 0.0, 0
    if state_path.is_file():
        state = load_checkpoint(state_path)
        model.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        step, curve, seconds = int(state["step"]), list(state["curve"]), float(state["seconds"])
        loss_sum, loss_n = float(state["loss_sum"]), int(state["loss_n"])
        reporter.log(f"resuming the formula pretraining of {info.name} at step {step} of "
                     f"{total} ({work})")
    if encoder_only:
        vi, vm = fractals.batch(req.seed, 0, VAL_FRACTALS.get(profile.name, 256), size, classes,
                                stream=formula.VAL_STREAM)
    else:
        vi, vm = formula.batch(req.seed, 0, VAL_IMAGES.get(profile.name, 64), size,
                               stream=formula.VAL_STREAM, pretext=req.pretext)
    val_images, val_targets = torch.from_numpy(vi), torch.from_numpy(vm)
    score = pretext_accuracy if encoder_only else pretext_dsc
    metric = "val_acc" if encoder_only else "val_dsc"
    deadline = None if req.minutes is None or req.steps is None else (
        time.monotonic() + req.minutes * 60)
    model.train()
    last_dsc = score_of(curve[-1]) if curve else None
    with reporter.task(f"formula pretraining {info.name} ({profile.name})", total=total,
                       completed=step) as task:
        tick = started = time.perf_counter()
        done_here = 0
        while step < total:
            loss_sum += _step(model, opt, recipe, req.seed, step, total, size, req.pretext,
                              classes)
            loss_n += 1
            step += 1
            if step % val_every == 0 or step == total:
                last_dsc = score(model, val_images, val_targets)
                curve.append({"step": step, "loss": round(loss_sum / max(loss_n, 1), 5),
                              metric: round(last_dsc, 5),
                              "seconds": round(seconds + time.perf_counter() - tick, 1)})
                loss_sum, loss_n = 0.0, 0
            done_here += 1
            rate = done_here * recipe.batch_size / max(time.perf_counter() - started, 1e-9)
            task.advance(1, img_s=round(rate, 1), loss=round(loss_sum / max(loss_n, 1), 3)
                         if loss_n else None, **{"pretext_acc" if encoder_only
                                                 else "pretext_dsc": last_dsc})
            if step % every == 0 or step == total:
                seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                save_checkpoint(state_path, {
                    "step": step, "total": total, "net": model.state_dict(),
                    "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "curve": curve, "seconds": seconds, "loss_sum": loss_sum,
                    "loss_n": loss_n})
                if deadline is not None and time.monotonic() >= deadline and step < total:
                    reporter.log(f"stopped by --minutes at step {step} of {total}; run the same "
                                 "command again to continue")
                    return PretrainOutcome(None, step, total, last_dsc, work)
    out_dir = req.out_dir or root
    state = finished_state(net) if encoder_only else net.state_dict()
    weights = _write_weights(out_dir, key, net, state, req, info, profile, hparams, recipe,
                             total, curve, seconds, classes if encoder_only else None)
    return PretrainOutcome(weights, step, total, last_dsc, work)


def _write_weights(out_dir: Path, key: str, net: nn.Module, net_state: dict[str, torch.Tensor],
                   req: PretrainRequest, info: Any, profile: Profile, hparams: dict[str, Any],
                   recipe: Recipe, total: int, curve: list[dict[str, Any]], seconds: float,
                   classes: int | None) -> Path:
    """`<out>/<key>.pt` (the weights) and `<out>/<key>.json` (the manifest), atomically;
    `classes` is the category count of an encoder-only pretraining (None: the whole network)."""
    dtype = torch.float16 if req.half else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).clone()
             for k, v in net_state.items()}
    payload = {"format": FILE_FORMAT, "arch_key": key, "steps": total, "seed": req.seed,
               "generator_version": formula.GENERATOR_VERSION, "pretext": req.pretext,
               "state_dict": state}
    path = out_dir / f"{key}.pt"
    atomic_write(path, lambda fh: torch.save(payload, fh))
    args = [f"--pretext {req.pretext}", *(f"--set {shlex.quote(s)}"
                                           for s in _without_init(req.sets))]
    if classes is not None:  # spelled out, so a later change of the default cannot move it
        args.append(f"--classes {classes}")
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
        "trained": "whole network" if classes is None else (
            f"encoder only ({classes}-way classification; decoder at its random init"
            + (", Swin blocks mirrored from the encoder" if "layers_up.1.blocks.0.norm1.weight"
               in net_state else "") + ")"),
        **({} if classes is None else {"classes": classes}),
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
                     "dsc": f"{score_of(curve[-1]):.3f}" if curve else "-",
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
            ax.plot([p["step"] for p in row["curve"]], [score_of(p) for p in row["curve"]],
                    marker="o", markersize=3,
                    label=f"{row['method']} {row['profile']}, {row['pretext']} ({row['where']})")
    ax.set_xlabel("pretraining step (batch 8)")
    ax.set_ylabel("held-out pretext DSC (fractals: top-1 accuracy)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return out
