"""A finished run, loaded for inference: find it (by id or the way `bench run` names it),
rebuild its method from run.json, load the selected checkpoint, predict batches of tiles.

Shared by `bench eval`, `bench predict` and `bench show cases`, so every command that
regenerates predictions uses the leaderboard's model selection (best.pt: the epoch with the
best source-validation DSC) and the run's own profile (image size, threshold, batch size).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import Profile
from benchmark.errors import UserError, closest
from benchmark.store import ResultsStore, RunRecord
from datasets.domain import DomainData


@dataclass
class Trained:
    """A run's record, its rebuilt method holding best.pt, its profile and device."""

    record: RunRecord
    method: Any  # methods.base.Method
    profile: Profile
    device: torch.device

    @property
    def threshold(self) -> float:
        """The probability threshold the run's evaluation used."""
        return float(self.profile.threshold)


def run_profile(info: dict[str, Any]) -> Profile:
    """The Profile a run was trained with, from run.json's `profile_settings`."""
    settings = dict(info["profile_settings"])
    settings["split_fractions"] = tuple(settings["split_fractions"])
    return Profile(**settings)


def unknown_run(store: ResultsStore, run_id: str) -> UserError:
    """The one-line error for a run id with no folder, with the closest known id."""
    known = [p.name for p in store.runs_dir.glob("*") if p.is_dir()] \
        if store.runs_dir.is_dir() else []
    hint = closest(run_id, known)
    if not hint and known:
        hint = f"; known runs: {', '.join(sorted(known)[:5])}" + (" ..." if len(known) > 5
                                                                 else "")
    elif not known:
        hint = f"; '{store.runs_dir}' holds no runs (train one with `bench run`)"
    return UserError(f"no run '{run_id}' under '{store.runs_dir}'{hint}")


def resolve_run_id(store: ResultsStore, run: str | None, method: str | None,
                   source: str | None, seed: int, profile: str, sets: list[str],
                   cache_dir: Path) -> str:
    """RUN itself, or the id `bench run --method M --source S --seed N --profile P` gives
    (the same hash, so the same folder); a UserError when neither names a stored run."""
    if run:
        if method or source:
            raise UserError("give a run id or --method/--source, not both")
        if not store.run_dir(run).is_dir():
            raise unknown_run(store, run)
        return run
    if not method or not source:
        raise UserError("name the run: a run id, or --method M --source S [--seed N] "
                        "[--profile P]")
    from benchmark.progress import NullReporter
    from benchmark.runner import RunRequest, plan_run

    req = RunRequest(method=method, source=source, profile=profile, seed=seed,
                     sets=list(sets), cache_dir=cache_dir)
    run_id = plan_run(req, NullReporter()).run_id
    if not store.run_dir(run_id).is_dir():
        same = [p.name for p in sorted(store.runs_dir.glob(f"{method}-{source}-*"))
                if p.is_dir()] if store.runs_dir.is_dir() else []
        have = f"; runs of {method} on {source} here: {', '.join(same[:5])}" if same else ""
        raise UserError(f"no run of {method} on '{source}' ({profile}, seed {seed}) under "
                        f"'{store.runs_dir}' (expected '{run_id}'; train it with `bench run "
                        f"--method {method} --source {source} --seed {seed} --profile "
                        f"{profile}`){have}")
    return run_id


def load_trained(store: ResultsStore, run_id: str, device_spec: str = "auto") -> Trained:
    """Rebuild run `run_id`'s method and load its best.pt (one-line errors when the run is
    unknown, untrained, incomplete or its checkpoint does not load)."""
    from benchmark.registry import get_method
    from benchmark.runner import resolve_device, weights_from_checkpoint
    from benchmark.trainer import load_checkpoint

    if not store.run_dir(run_id).is_dir():
        raise unknown_run(store, run_id)
    record = store.read(run_id)
    if not record.trained:
        raise UserError(f"run '{run_id}' has no finished training (state: "
                        f"{record.status.get('state')}); rerun `bench run` to finish it")
    ckpt = record.path / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise UserError(f"run folder '{record.path}' is incomplete: {ckpt.name} is missing")
    info = get_method(record.info["method"])
    profile = run_profile(record.info)
    device = resolve_device(device_spec)
    method = info.cls(weights_from_checkpoint(record.info["hparams"]), device,
                      profile.image_size, amp=device.type == "cuda")
    try:
        method.load_state_dict(load_checkpoint(ckpt)["method"])
    except (RuntimeError, KeyError, EOFError) as exc:
        raise UserError(f"checkpoint '{ckpt}' does not load: {exc}") from None
    method.train(False)
    return Trained(record, method, profile, device)


@torch.no_grad()
def predict_rows(trained: Trained, data: DomainData, index: np.ndarray | list[int]
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, probabilities (B, H, W) float32) for the rows `index` of `data`, in the
    run's evaluation batches on its device, with slice context for methods that want it
    (the same stream `bench run` evaluates with)."""
    from benchmark.feed import batch_stream

    index = np.asarray(index, dtype=np.int64)
    size = max(1, int(trained.profile.eval_batch_size))
    chunks = [index[s:s + size] for s in range(0, len(index), size)]
    method = trained.method
    for chunk, batch in zip(chunks, batch_stream(data, chunks, trained.device,
                                                 method.context_slices), strict=True):
        probs = method.predict_batch(batch).float().cpu().numpy()[:, 0]
        yield chunk, probs.astype(np.float32, copy=False)
