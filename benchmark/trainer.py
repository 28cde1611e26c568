"""The training loop owned by the harness: epochs, batches per group, validation, checkpoints.

Data order and augmentation are drawn from generators seeded by (seed, epoch), so a run resumed
from `last.pt` continues exactly as an uninterrupted one would, and the same seed gives the
same numbers on CPU. The checkpoint with the best source-validation DSC is kept beside the last.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.accel import set_fused_adam
from benchmark.config import Profile, seed_hash
from benchmark.errors import UserError
from benchmark.feed import batch_stream, host_batch, to_device
from benchmark.io import atomic_write
from benchmark.lr_schedule import apply_lr, lr_factor
from benchmark.progress import Reporter
from datasets.domain import DomainData
from methods.base import Batch, Method


@dataclass
class TrainResult:
    """What training produced: the best epoch and its validation DSC, and timings."""

    best_epoch: int
    best_val_dsc: float
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed torch and numpy's global generators (methods may use either)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def to_batch(data: DomainData, index: np.ndarray, device: torch.device,
             context_slices: int = 0) -> Batch:
    """Stack images/masks `index` into (B,1,H,W) float tensors on `device`.

    With `context_slices` D > 0 the batch also holds "slices" (B,D,H,W), the D slices centred
    on each image (see `DomainData.neighbour_index`), and "slices_real" (B,) bool. Only these
    rows are read from the cache (benchmark.feed).
    """
    return to_device(host_batch(data, index, context_slices), device)


def geometric_augment(batch: Batch, gen: torch.Generator) -> Batch:
    """Random horizontal/vertical flips and 90-degree rotations, applied alike to every
    spatial tensor of the batch (image, mask and, if present, the slice context)."""
    spatial = [k for k, v in batch.items() if v.dim() == 4]
    out = {k: (v.clone() if k in spatial else v) for k, v in batch.items()}
    n = batch["image"].shape[0]
    draws = torch.randint(0, 8, (n,), generator=gen)
    for i in range(n):
        k, flip = int(draws[i]) % 4, int(draws[i]) >= 4
        for key in spatial:
            t = out[key][i]
            if flip:
                t = t.flip(-1)
            out[key][i] = torch.rot90(t, k, (-2, -1))
    return out


@torch.no_grad()
def validation_dsc(method: Method, data: DomainData, index: np.ndarray, profile: Profile,
                   device: torch.device) -> float:
    """Mean per-image DSC on `index` at the profile threshold (both-empty counts as 1)."""
    if len(index) == 0:
        return float("nan")
    method.train(False)
    scores = []
    chunks = [index[s:s + profile.eval_batch_size]
              for s in range(0, len(index), profile.eval_batch_size)]
    for batch in batch_stream(data, chunks, device, method.context_slices):
        pred = (method.predict_batch(batch) >= profile.threshold).float()
        ref = batch["mask"]
        inter = (pred * ref).flatten(1).sum(1)
        total = pred.flatten(1).sum(1) + ref.flatten(1).sum(1)
        dsc = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        scores.extend(dsc.cpu().tolist())
    return float(np.mean(scores))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to `path` atomically."""
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True (no arbitrary code from checkpoint files); a damaged
    or half-written file (e.g. copied while a run wrote it) is a one-line UserError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint '{path}' is missing") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"checkpoint '{path}' is damaged or half-written ({reason}); delete "
                        "it and rerun the same command to train again") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint '{path}' is not a calcbench checkpoint")
    return state


def _rng_states(gen: torch.Generator) -> dict[str, Any]:
    """Every generator a step may draw from: the (seed, epoch) data generator and the globals."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "data": gen.get_state(), "torch": torch.get_rng_state(),
        # plain values and a tensor, so that torch.load(weights_only=True) accepts them
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(gen: torch.Generator, states: dict[str, Any]) -> None:
    """Undo `_rng_states`: the next draws repeat those of the uninterrupted run."""
    gen.set_state(states["data"])
    torch.set_rng_state(states["torch"])
    npst = states["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def train(method: Method, data: DomainData, train_idx: np.ndarray, val_idx: np.ndarray,
          profile: Profile, seed: int, ckpt_dir: Path, reporter: Reporter,
          device: torch.device, checkpoint_every: int | None = None) -> TrainResult:
    """Train `method` for `profile.epochs`, resuming from `ckpt_dir/last.pt` if present.

    `last.pt` is written at the end of every epoch and, with `checkpoint_every` N, also after
    every N-th step inside an epoch (with the step, the losses so far and every RNG state), so
    a run killed mid-epoch resumes at that step and ends with the uninterrupted run's weights.
    """
    if len(train_idx) < 2:
        raise ValueError(f"the training split of '{data.domain}' has {len(train_idx)} images; "
                         "need at least 2")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 step, got {checkpoint_every}")
    start_epoch, best_epoch, best_dsc, history = 0, -1, -math.inf, []
    mid_epoch: dict[str, Any] | None = None  # a checkpoint taken inside an epoch
    last = ckpt_dir / "last.pt"
    earlier_seconds = 0.0  # training time of earlier attempts, up to their last checkpoint
    if last.is_file():
        state = load_checkpoint(last)
        earlier_seconds = float(state.get("seconds", 0.0))
        method.load_state_dict(state["method"])
        for optimizer in method.optimizers().values():  # the checkpoint's device, not ours
            set_fused_adam(optimizer, device)
        start_epoch = int(state["epoch"]) + 1
        best_epoch, best_dsc = int(state["best_epoch"]), float(state["best_val_dsc"])
        history = list(state["history"])
        if state.get("step") is not None:
            mid_epoch, start_epoch = state, int(state["epoch"])
        at = f" step {int(state['step']) + 1}" if mid_epoch else ""
        reporter.log(f"resuming from {last} at epoch {start_epoch + 1}/{profile.epochs}{at}")
    bs = profile.batch_size
    n_steps = profile.steps_per_epoch or max(1, len(train_idx) // bs)
    groups = method.training_groups()
    t0 = time.monotonic()
    with reporter.task("epochs", total=profile.epochs, every=True,
                       completed=start_epoch) as epochs_task:
        for epoch in range(start_epoch, profile.epochs):
            seed_everything(seed_hash(seed, epoch, "global"))
            gen = torch.Generator().manual_seed(seed_hash(seed, epoch, "data"))
            order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
            while len(order) < n_steps * bs:  # small splits: repeat the permutation
                extra = torch.randperm(len(train_idx), generator=gen).numpy()
                order = np.concatenate([order, train_idx[extra]])
            logs: list[dict[str, float]] = []
            first_step = 0
            if mid_epoch is not None and int(mid_epoch["epoch"]) == epoch:
                first_step, logs = int(mid_epoch["step"]), list(mid_epoch["logs"])
                _restore_rng_states(gen, mid_epoch["rng"])
                mid_epoch = None
            method.train(True)
            with reporter.task(f"epoch {epoch + 1} steps", total=n_steps,
                               quiet_ends=True, completed=first_step) as steps_task:
                feed = batch_stream(data, [order[s * bs:(s + 1) * bs]
                                           for s in range(first_step, n_steps)],
                                    device, method.context_slices)
                for step, batch in zip(range(first_step, n_steps), feed, strict=True):
                    if profile.geometric_aug:
                        batch = geometric_augment(batch, gen)
                    if not method.own_lr_schedule:
                        apply_lr(method.optimizers().values(),
                                 lr_factor(profile.lr_schedule, epoch * n_steps + step,
                                           profile.epochs * n_steps))
                    views = {g: method.make_view(g, batch, gen) for g in groups}
                    out = method.update(views)
                    bad = [k for k, v in out.items() if not math.isfinite(v)]
                    if bad:
                        raise FloatingPointError(f"non-finite loss {bad} at epoch {epoch + 1} "
                                                 f"step {step + 1}")
                    logs.append(out)
                    if checkpoint_every and (step + 1) % checkpoint_every == 0 \
                            and step + 1 < n_steps:
                        save_checkpoint(last, {
                            "method": method.state_dict(), "epoch": epoch, "step": step + 1,
                            "logs": logs, "rng": _rng_states(gen), "best_epoch": best_epoch,
                            "best_val_dsc": best_dsc, "history": history,
                            "seconds": earlier_seconds + time.monotonic() - t0})
                    steps_task.advance(1, **{k: v for k, v in out.items() if k.endswith("loss")})
            method.end_epoch(epoch)
            val = validation_dsc(method, data, val_idx, profile, device)
            mean_logs = {k: float(np.mean([d[k] for d in logs])) for k in logs[0]}
            history.append({"epoch": epoch + 1, "val_dsc": val, **mean_logs})
            improved = val > best_dsc or best_epoch < 0
            if improved:
                best_epoch, best_dsc = epoch, val
            payload = {"method": method.state_dict(), "epoch": epoch, "best_epoch": best_epoch,
                       "best_val_dsc": best_dsc, "history": history,
                       "seconds": earlier_seconds + time.monotonic() - t0}
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", payload)
            save_checkpoint(last, payload)
            epochs_task.advance(1, val_dsc=round(val, 4), best=round(best_dsc, 4))
    # every attempt's training time counts (a requeued run is not cheaper than it was)
    return TrainResult(best_epoch + 1, best_dsc, profile.epochs, history,
                       earlier_seconds + time.monotonic() - t0)
