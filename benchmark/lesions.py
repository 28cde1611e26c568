"""Lesion (cluster) level detection: component matching, per-case counts, FROC.

Matching rule (chosen here; the paper reports pixel metrics only). Reference lesions are the
8-connected components of the reference mask (in our data a cluster-region outline); predicted
lesions are the 8-connected components of the thresholded prediction. A predicted component
and a reference lesion *match* when they share at least one pixel **or** their centroids are
at most `radius_mm` apart (default 5 mm: a microcalcification cluster is >= 3 specks within
1 cm^2, so half a centimetre is "the same cluster"; the centroid rule credits predictions that
outline the specks next to, not on, a drawn cluster region). Then

* a reference lesion is detected (lesion TP) when any predicted component matches it; the
  others are lesion FN;
* a predicted component is a false positive when it matches no reference lesion;
* sensitivity = TP / n_ref (undefined without reference lesions), precision = (n_pred - FP) /
  n_pred (undefined without predictions), F1 = their harmonic mean (undefined when both are
  undefined, 0 when exactly one side is empty), mirroring the pixel-level empty policy.

FROC: candidates are the connected components of `prob >= floor` (default 0.1, below the
operating threshold so the curve extends past the operating point), scored by their maximum
probability, at most `max_candidates` per image (highest scores kept, so a noisy map cannot
explode the file). One row per (candidate, matched reference lesion), or one row with
`lesion = -1` for a candidate that matches nothing. Sensitivity at score threshold t = distinct
(image, lesion) hit by a candidate scoring >= t over all reference lesions; false positives
per image = unmatched candidates scoring >= t over the number of images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

RADIUS_MM = 5.0
FROC_FLOOR = 0.1
MAX_CANDIDATES = 100
EIGHT = np.ones((3, 3), bool)
LESION_COLUMNS = ("lesion_n_ref", "lesion_n_pred", "lesion_tp", "lesion_fp", "lesion_fn",
                  "lesion_sensitivity", "lesion_precision", "lesion_f1")


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (0 = background) and the number of components."""
    labels, n = ndimage.label(np.asarray(mask, bool), structure=EIGHT)
    return labels, int(n)


def _centroids_mm(labels: np.ndarray, n: int, spacing: tuple[float, float]) -> np.ndarray:
    """Component centroids in mm, (n, 2); bincount sums are O(pixels) for any n, unlike
    ndimage.center_of_mass, which slows down with thousands of components."""
    if n == 0:
        return np.zeros((0, 2))
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    rows, cols = np.divmod(fg, labels.shape[1])
    count = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    cy = np.bincount(lab, weights=rows, minlength=n + 1)[1:] / count
    cx = np.bincount(lab, weights=cols, minlength=n + 1)[1:] / count
    return np.stack([cy * spacing[0], cx * spacing[1]], axis=1)


def match_matrix(pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int,
                 spacing: tuple[float, float], radius_mm: float = RADIUS_MM) -> np.ndarray:
    """Bool (n_pred x n_ref): overlap, or centroid distance <= radius_mm."""
    if n_pred == 0 or n_ref == 0:
        return np.zeros((n_pred, n_ref), bool)
    both = (pred_labels > 0) & (ref_labels > 0)
    pairs = (pred_labels[both] - 1) * n_ref + (ref_labels[both] - 1)
    overlap = np.bincount(pairs, minlength=n_pred * n_ref).reshape(n_pred, n_ref) > 0
    cp = _centroids_mm(pred_labels, n_pred, spacing)
    cr = _centroids_mm(ref_labels, n_ref, spacing)
    dist = np.linalg.norm(cp[:, None, :] - cr[None, :, :], axis=-1)
    return overlap | (dist <= radius_mm)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float],
                   radius_mm: float = RADIUS_MM) -> dict[str, float | int]:
    """Per-case lesion counts and rates (keys: LESION_COLUMNS) under the matching rule."""
    pl, n_pred = components(pred)
    rl, n_ref = components(ref)
    m = match_matrix(pl, n_pred, rl, n_ref, spacing, radius_mm)
    tp = int(m.any(axis=0).sum())
    fp = int((~m.any(axis=1)).sum()) if n_pred else 0
    sens = _ratio(tp, n_ref)
    prec = _ratio(n_pred - fp, n_pred)
    if math.isnan(sens) and math.isnan(prec):
        f1 = math.nan
    elif math.isnan(sens) or math.isnan(prec):
        f1 = 0.0
    else:
        f1 = 2 * sens * prec / (sens + prec) if sens + prec else 0.0
    return {"lesion_n_ref": n_ref, "lesion_n_pred": n_pred, "lesion_tp": tp, "lesion_fp": fp,
            "lesion_fn": n_ref - tp, "lesion_sensitivity": sens, "lesion_precision": prec,
            "lesion_f1": f1}


def empty_candidates() -> pd.DataFrame:
    """A candidate frame with no rows and the stored dtypes."""
    return pd.DataFrame({"image_id": pd.Series([], dtype=object),
                         "candidate": pd.Series([], dtype="int32"),
                         "score": pd.Series([], dtype="float32"),
                         "lesion": pd.Series([], dtype="int32"),
                         "hit": pd.Series([], dtype=bool)})


def froc_candidates(prob: np.ndarray, ref: np.ndarray, spacing: tuple[float, float],
                    image_id: str, floor: float = FROC_FLOOR, radius_mm: float = RADIUS_MM,
                    max_candidates: int = MAX_CANDIDATES) -> pd.DataFrame:
    """Candidate rows of one image: image_id, candidate, score, lesion (-1 = FP), hit."""
    cl, n = components(prob >= floor)
    cols = {"image_id": [], "candidate": [], "score": [], "lesion": [], "hit": []}
    if n:
        scores = np.asarray(ndimage.maximum(prob, cl, np.arange(1, n + 1)), float).reshape(n)
        keep = np.argsort(-scores, kind="stable")[:max_candidates]
        rl, n_ref = components(ref)
        m = match_matrix(cl, n, rl, n_ref, spacing, radius_mm)
        for c in keep:
            hits = np.flatnonzero(m[c]) if n_ref else np.zeros(0, int)
            for lesion in hits if len(hits) else [-1]:
                cols["image_id"].append(image_id)
                cols["candidate"].append(int(c))
                cols["score"].append(float(scores[c]))
                cols["lesion"].append(int(lesion))
                cols["hit"].append(bool(lesion >= 0))
    return pd.DataFrame(cols).astype({"candidate": "int32", "score": "float32",
                                      "lesion": "int32", "hit": bool})


def froc_curve(candidates: pd.DataFrame, n_lesions: int, n_images: int) -> pd.DataFrame:
    """Sensitivity and mean FPs per image at every distinct candidate score (descending).

    Returns columns threshold, sensitivity, fp_per_image; both curves are non-increasing in
    the threshold by construction (a lower threshold keeps a superset of candidates).
    """
    if n_images <= 0:
        return pd.DataFrame(columns=["threshold", "sensitivity", "fp_per_image"])
    keys = ["run_id", "target", "image_id"]
    keys = [k for k in keys if k in candidates]
    hits = candidates[candidates["hit"]]
    best = hits.groupby([*keys, "lesion"])["score"].max().to_numpy(float)  # a lesion's score
    fps = candidates.loc[~candidates["hit"], "score"].to_numpy(float)
    thresholds = np.unique(candidates["score"].to_numpy(float))[::-1]
    sens = (best[None, :] >= thresholds[:, None]).sum(1) / n_lesions if n_lesions else \
        np.full(len(thresholds), np.nan)
    fp = (fps[None, :] >= thresholds[:, None]).sum(1) / n_images
    return pd.DataFrame({"threshold": thresholds, "sensitivity": sens, "fp_per_image": fp})


def sensitivity_at(curve: pd.DataFrame, fp_rates: tuple[float, ...] = (0.25, 0.5, 1, 2, 4)
                   ) -> dict[float, float]:
    """Highest sensitivity reached at <= each FP/image rate (0 when none is that low); the
    mean over the rates is the usual competition FROC score (e.g. LUNA16's CPM)."""
    out = {}
    for rate in fp_rates:
        ok = curve[curve["fp_per_image"] <= rate]
        out[rate] = float(ok["sensitivity"].max()) if len(ok) else 0.0
    return out
