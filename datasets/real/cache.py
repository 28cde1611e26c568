"""The preprocessed cache of a real domain: one compressed npz per (fingerprint, image size).

Reading it needs no DICOM decoding. It is written atomically (benchmark.io), so a killed run
never leaves a half-written file; a corrupt or foreign file is ignored and rebuilt. The header
holds only the fingerprint, counts, settings and the problem list (relative file paths and
reasons): never a DICOM attribute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.io import atomic_write
from datasets.domain import DomainData

CACHE_FORMAT = 1


def cache_path(cache_dir: Path, name: str, fingerprint: str, image_size: int) -> Path:
    """Where the npz of `name` at `image_size` lives."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Path(cache_dir) / "real" / f"{safe}-{fingerprint}-{image_size}.npz"


def write_cache(path: Path, data: DomainData, header: dict[str, Any]) -> None:
    """Write arrays, ids, meta and header as one compressed npz, atomically."""
    head = {**header, "format": CACHE_FORMAT}
    split = np.array([] if data.official_split is None else data.official_split)
    atomic_write(path, lambda fh: np.savez_compressed(
        fh, images=data.images, masks=data.masks, spacing_mm=data.spacing_mm,
        patient_ids=np.array(data.patient_ids), image_ids=np.array(data.image_ids),
        meta=np.array(json.dumps(data.meta)), official_split=split,
        has_split=np.array(data.official_split is not None),
        header=np.array(json.dumps(head))))


def read_cache(path: Path, fingerprint: str, image_size: int) -> tuple[DomainData, dict]:
    """Read and check a cached npz (raises ValueError on any inconsistency)."""
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        if header.get("fingerprint") != fingerprint or header.get("image_size") != image_size \
                or header.get("format") != CACHE_FORMAT:
            raise ValueError("header does not match this domain")
        images, masks = z["images"], z["masks"]
        if images.ndim != 3 or images.shape[1:] != (image_size, image_size) or \
                masks.shape != images.shape or images.dtype != np.float32:
            raise ValueError(f"arrays have shape {images.shape}")
        split = [str(s) for s in z["official_split"]] if bool(z["has_split"]) else None
        data = DomainData(domain=str(header["name"]), images=images, masks=masks,
                          spacing_mm=z["spacing_mm"],
                          patient_ids=[str(s) for s in z["patient_ids"]],
                          image_ids=[str(s) for s in z["image_ids"]],
                          meta=json.loads(str(z["meta"])), official_split=split)
    return data, header
