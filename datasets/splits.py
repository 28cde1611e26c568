"""Patient-level train/val/test splits: seeded, persisted as JSON with a content hash.

A patient's images never span two splits. Splits depend on the domain fingerprint, the split
fractions and the split seed only, so every method and training seed shares one test set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from benchmark.io import atomic_write_text
from datasets.domain import DomainData

SPLITS = ("train", "val", "test")


def assign_patients(patients: list[str], fractions: tuple[float, float, float], seed: int
                    ) -> dict[str, str]:
    """Map each unique patient to a split, shuffling with `seed` (rounding favours test)."""
    unique = sorted(set(patients))
    rng = np.random.RandomState(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    n = len(order)
    n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
    n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else 0
    out = {}
    for i, pid in enumerate(order):
        out[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def make_split(data: DomainData, fingerprint: str, fractions: tuple[float, float, float],
               seed: int, cache_dir: Path) -> dict[str, np.ndarray]:
    """Indices per split; honours an official train/test split (val carved from train)."""
    path = cache_dir / "splits" / f"{data.domain}-{fingerprint}-{seed}-" \
        f"{'-'.join(f'{f:g}' for f in fractions)}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored["n_images"] == len(data):
                return {k: np.asarray(v, dtype=np.int64) for k, v in stored["index"].items()}
        except (json.JSONDecodeError, KeyError):
            pass  # corrupt: recompute and overwrite
    if data.official_split is not None:
        train_patients = [p for p, s in zip(data.patient_ids, data.official_split, strict=True)
                          if s == "train"]
        within = assign_patients(train_patients, (1 - fractions[1], fractions[1], 0.0), seed)
        per_image = ["test" if s == "test" else within[p]
                     for p, s in zip(data.patient_ids, data.official_split, strict=True)]
    else:
        by_patient = assign_patients(data.patient_ids, fractions, seed)
        per_image = [by_patient[p] for p in data.patient_ids]
    index = {s: np.flatnonzero(np.asarray(per_image) == s) for s in SPLITS}
    payload = {
        "domain": data.domain, "fingerprint": fingerprint, "seed": seed,
        "fractions": list(fractions), "n_images": len(data),
        "index": {k: v.tolist() for k, v in index.items()},
    }
    payload["hash"] = split_hash(index)
    atomic_write_text(path, json.dumps(payload))
    return index


def split_hash(index: dict[str, np.ndarray]) -> str:
    """Short hash of the split assignment (recorded in run.json)."""
    blob = json.dumps({k: np.asarray(v).tolist() for k, v in sorted(index.items())})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
