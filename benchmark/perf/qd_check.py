"""Does recording Q_d in eval mode change MLN-net's branch choices? (`stats_record=eval-pass`)

Run as `python -m benchmark.perf.qd_check [--epochs E] [--steps S]`. Trains MLN-net briefly at
the quick profile on the synthetic ffdm (default Q_d: train mode, averaged over the last epoch),
then, with the same final weights, records Q_d again in eval mode over the branches' views of
the whole training split (what `stats_record=eval-pass` does at every epoch end), and predicts
the ffdm and dbt test splits with each Q_d. Prints, per target, how many images change branch
and the DSC under each. Both Q_d come from one network, so any difference is the recording.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmark.config import apply_profile_overrides, get_profile, resolve_hparams
from benchmark.progress import Reporter
from benchmark.registry import resolve_domain
from benchmark.runner import DataCache, default_cache_dir
from benchmark.trainer import seed_everything, to_batch, train
from methods.mlnnet import MlnNet
from methods.networks.multinorm import multinorms


def _stats(method: MlnNet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A copy of every multi-norm layer's stored (mean, std) per branch."""
    return [(m.stat_mean.clone(), m.stat_std.clone()) for _, m in multinorms(method.network)]


def _set_stats(method: MlnNet, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for (_, layer), (mean, std) in zip(multinorms(method.network), stats, strict=True):
        layer.stat_mean.copy_(mean)
        layer.stat_std.copy_(std)


def _predict(method: MlnNet, data, index: np.ndarray, device: torch.device,
             threshold: float) -> tuple[list[int], list[float]]:
    """Chosen branch and DSC per image of `index` (both-empty counts 1)."""
    branches, dscs = [], []
    for start in range(0, len(index), 16):
        batch = to_batch(data, index[start:start + 16], device)
        pred = (method.predict(batch["image"]) >= threshold).float()
        branches += [int(i["branch"]) for i in method.case_info()]
        inter = (pred * batch["mask"]).flatten(1).sum(1)
        total = pred.flatten(1).sum(1) + batch["mask"].flatten(1).sum(1)
        dscs += torch.where(total > 0, 2 * inter / total.clamp(min=1),
                            torch.ones_like(total)).tolist()
    return branches, dscs


def main(argv: list[str] | None = None) -> None:
    """Train briefly, record Q_d both ways, compare the branch choices; print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="training steps per epoch")
    ap.add_argument("--profile", default="quick", help="profile (smoke: a check of the script)")
    args = ap.parse_args(argv)
    console = Console(width=120)
    reporter = Reporter(console=console, plain=True)
    device = torch.device("cpu")
    profile = apply_profile_overrides(get_profile(args.profile),
                                      {"epochs": args.epochs, "steps_per_epoch": args.steps})
    cache = DataCache(profile, default_cache_dir(), reporter)
    source, split = cache.get("ffdm", resolve_domain("ffdm"))
    target, tsplit = cache.get("dbt", resolve_domain("dbt"))
    seed_everything(0)
    method = MlnNet(resolve_hparams(MlnNet.hparam_space(), profile.name), device,
                    profile.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        train(method, source, split["train"], split["val"], profile, 0, Path(tmp), reporter,
              device)
    train_mode = _stats(method)
    gen = torch.Generator().manual_seed(0)
    method._views = [[] for _ in range(method.num_branches)]
    for start in range(0, len(split["train"]), profile.batch_size):
        batch = to_batch(source, split["train"][start:start + profile.batch_size], device)
        for k, g in enumerate(method.training_groups()):
            method._keep_views(k, method.make_view(g, batch, gen)["image"])
    method.record_eval_stats()
    eval_mode = _stats(method)
    table = Table(title=f"MLN-net Q_d recording, {profile.name} profile, {args.epochs} epochs x "
                        f"{args.steps} steps (same weights)")
    for col in ("test split", "images", "branch changed", "DSC train-mode Q_d (%)",
                "DSC eval-pass Q_d (%)"):
        table.add_column(col)
    for name, data, idx in (("ffdm", source, split["test"]), ("dbt", target, tsplit["test"])):
        _set_stats(method, train_mode)
        b_train, d_train = _predict(method, data, idx, device, profile.threshold)
        _set_stats(method, eval_mode)
        b_eval, d_eval = _predict(method, data, idx, device, profile.threshold)
        changed = sum(a != b for a, b in zip(b_train, b_eval, strict=True))
        table.add_row(name, str(len(idx)), f"{changed} ({100 * changed / len(idx):.0f} %)",
                      f"{100 * np.mean(d_train):.2f}", f"{100 * np.mean(d_eval):.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
