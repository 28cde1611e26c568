"""Look at a domain: intensity statistics of the breast region and a contact sheet PNG.

The breast region of an image is its pixels above 0 and below 1, as in the paper's Fig. 7
analysis ("we excluded ... the points with pixel values of 0 and 1, which comprise the
background"); every built-in synthetic domain maps the background to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datasets.domain import DomainData

#: Named views of picked images (N,H,W) and masks (N,H,W): [(label, images, masks), ...].
ViewFn = Callable[[np.ndarray, np.ndarray], list[tuple[str, np.ndarray, np.ndarray]]]


CHUNK_ROWS = 64  # rows read at a time: the statistics stream over a cached domain


def _chunks(data: DomainData) -> Any:
    """(first row, images, masks) of consecutive row blocks (never the whole domain)."""
    for r0 in range(0, len(data), CHUNK_ROWS):
        rows = np.arange(r0, min(r0 + CHUNK_ROWS, len(data)))
        yield r0, np.asarray(data.images[rows]), np.asarray(data.masks[rows])


def breast_pixels(data: DomainData, max_pixels: int = 2_000_000) -> np.ndarray:
    """Pixel values strictly between 0 and 1 over all images (every `step`-th pixel of the
    flattened domain, `step` chosen to keep at most `max_pixels`), read chunk by chunk."""
    per_image = int(np.prod(data.images.shape[1:])) if len(data) else 0
    step = max(1, int(np.ceil(len(data) * per_image / max_pixels)))
    parts = []
    for r0, images, _ in _chunks(data):
        first = (-r0 * per_image) % step
        flat = images.reshape(-1)[first::step]
        parts.append(flat[(flat > 0.0) & (flat < 1.0)])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def intensity_stats(data: DomainData) -> dict[str, Any]:
    """Mean, sd and 1/50/99th percentiles of breast pixels, cluster and mask-area fractions."""
    vals = breast_pixels(data).astype(np.float64)
    p1, p50, p99 = np.percentile(vals, [1, 50, 99]) if vals.size else (np.nan,) * 3
    positive = np.zeros(len(data), bool)
    area = np.zeros(len(data), np.float64)
    breast = 0
    for r0, images, masks in _chunks(data):
        flat = masks.reshape(len(masks), -1)
        positive[r0:r0 + len(masks)] = flat.any(axis=1)
        area[r0:r0 + len(masks)] = flat.mean(axis=1)
        breast += int(((images > 0) & (images < 1)).sum())
    return {
        "domain": data.domain,
        "images": len(data),
        "image_size": int(data.images.shape[-1]) if len(data) else 0,
        "spacing_mm": float(data.spacing_mm[0, 0]) if len(data) else float("nan"),
        "breast_fraction": breast / (len(data) * int(np.prod(data.images.shape[1:])))
        if len(data) else float("nan"),
        "mean": float(vals.mean()) if vals.size else float("nan"),
        "std": float(vals.std()) if vals.size else float("nan"),
        "p1": float(p1),
        "p50": float(p50),
        "p99": float(p99),
        "cluster_fraction": float(positive.mean()) if len(data) else float("nan"),
        "mask_area_fraction": float(area.mean()) if len(data) else float("nan"),
        "mask_area_fraction_positive": float(area[positive].mean()) if positive.any()
        else float("nan"),
    }


def _pick(data: DomainData, n: int, rng: np.random.Generator) -> list[int]:
    """Up to n images, those with a cluster first, one per patient where possible."""
    order = rng.permutation(len(data))
    has = [bool(m["has_cluster"]) if "has_cluster" in m else bool(data.masks[i].any())
           for i, m in enumerate(data.meta)]  # meta first: no pixel read per image
    positive = [i for i in order if has[i]]
    negative = [i for i in order if not has[i]]
    chosen: list[int] = []
    seen: set[str] = set()
    for pool in (positive, negative):
        for i in pool:
            if len(chosen) < n and data.patient_ids[i] not in seen:
                chosen.append(i)
                seen.add(data.patient_ids[i])
    for i in positive + negative:  # fill up if there are fewer patients than slots
        if len(chosen) < n and i not in chosen:
            chosen.append(i)
    return chosen


def contact_sheet(datas: list[DomainData], path: str | Path, n_per_domain: int = 6,
                  seed: int = 0, views: ViewFn | None = None) -> Path:
    """PNG with one row per domain: a few images (clusters preferred), masks outlined in red.

    With `views` (e.g. a method's training augmentation), each domain row is followed by one
    row per named view of the same images, so original and augmented samples line up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    picked = [_pick(data, n_per_domain, rng) for data in datas]
    extra = [views(data.images[p], data.masks[p]) if views and p else []
             for data, p in zip(datas, picked, strict=True)]
    rows = max(1, sum(1 + len(e) for e in extra))
    fig, axes = plt.subplots(rows, n_per_domain, figsize=(2.0 * n_per_domain, 2.15 * rows),
                             squeeze=False)
    r = 0
    for data, picks, data_views in zip(datas, picked, extra, strict=True):
        for c in range(n_per_domain):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picks):
                ax.axis("off")
                continue
            i = picks[c]
            ax.imshow(data.images[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if data.masks[i].any():
                ax.contour(data.masks[i], levels=[0.5], colors="red", linewidths=0.7)
            meta = data.meta[i] if data.meta else {}
            label = str(meta.get("view", ""))
            if "slice" in meta:
                label += f" s{meta['slice']}"
            ax.set_title(label, fontsize=7)
            if c == 0:
                sp = data.spacing_mm[i]
                ax.set_ylabel(f"{data.domain}\n{sp[0]:.3g} mm/px", fontsize=8)
        r += 1
        for name, images, masks in data_views:
            for c in range(n_per_domain):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(images):
                    ax.axis("off")
                    continue
                ax.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                if masks[c].any():
                    ax.contour(masks[c], levels=[0.5], colors="red", linewidths=0.7)
                if c == 0:
                    ax.set_ylabel(f"{data.domain}\n{name}", fontsize=8)
            r += 1
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
