"""Leaderboard statistics: aggregation units, seeds, patient bootstrap CIs, paired tests, ranks.

Choices (the paper reports only mean ± std over images, so everything here is ours):

* Aggregation unit (`image` default, as the paper; `patient`; `pooled`). `patient` first
  averages a patient's images (CC/MLO and slices of one breast are not independent, Metrics
  Reloaded pitfalls Fig. 6b). `pooled` sums the confusion counts of all images before forming
  TPR / Pr / DSC (Metrics Reloaded's dataset-level number; docs/guide/metrics.md); distances have no
  pooled form, so HD / ASD fall back to the per-image mean under `pooled`.
* Seeds: a cell's runs differ only by seed. An image's value is first averaged over the seeds
  that evaluated it, so the bootstrap and the paired test see each image once; the cell mean is
  the mean of the per-seed means and its spread is the std over seeds when >= 2 seeds exist
  (otherwise the std over units, the paper's convention).
* 95% CI: percentile bootstrap resampling *patients* with replacement (images of a resampled
  patient come along), vectorised as a multinomial weight matrix; seeded, `n_boot` replicates.
* Paired test vs a baseline: Wilcoxon signed-rank (scipy) on the units both methods evaluated
  (images, or patients under `patient`/`pooled`), Holm-corrected across the methods of one
  column; hand-written Holm because scipy has only Benjamini-Hochberg and the formula is 6 lines.
* Ranks (`significance_ranks`, what the leaderboards show): per column (pairing x metric) a
  method's rank is 1 + the number of methods significantly better than it, as significance
  ranking in medical-imaging challenges does: every pair of methods is compared with the
  paired Wilcoxon signed-rank test on the units both evaluated (seed-averaged images, or
  patients under `patient` / `pooled`), Holm-corrected across all pairs of the column,
  alpha = 0.05; differences that are not significant are ties. The average rank is over the
  columns a method has. `average_ranks` (plain ranks of the shown means) is kept for callers
  that want the ordering without tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.aggregate import MAY_BE_UNDEFINED, PERCENT, REPORTED
from benchmark.errors import UserError

AGGREGATIONS = ("image", "patient", "pooled")
POOLED = {"TPR": ("TP", "TP", "FN"), "Pr": ("TP", "TP", "FP"), "DSC": ("TP", "FP", "FN")}
HIGHER_IS_BETTER = {"TPR": True, "Pr": True, "DSC": True, "HD": False, "ASD": False}


def check_aggregation(how: str) -> str:
    """Return `how` or raise a one-line UserError naming the allowed values."""
    if how not in AGGREGATIONS:
        raise UserError(f"--aggregate '{how}': expected one of {', '.join(AGGREGATIONS)}")
    return how


def _scale(label: str) -> float:
    return 100.0 if label in PERCENT else 1.0


def per_image(cases: pd.DataFrame, label: str) -> pd.DataFrame:
    """One row per image: `patient_id`, the metric `value` (scaled, seed-averaged, NaN when
    undefined) and, for pooled overlap metrics, the confusion counts `TP FP FN`."""
    column = REPORTED[label]
    values = cases[column].to_numpy(float)
    if np.isnan(values).any() and column not in MAY_BE_UNDEFINED:
        raise ValueError(f"NaN values in {column}: the metric policy forbids it")
    frame = pd.DataFrame({"image_id": cases["image_id"].to_numpy(),
                          "patient_id": _patients(cases), "value": values * _scale(label)})
    counts = [n for n in ("TP", "FP", "FN") if n in cases]
    for name in counts:
        frame[name] = cases[name].to_numpy(float)
    if frame["image_id"].is_unique:  # one seed: nothing to average (the common, fast case)
        return frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    grouped = frame.groupby("image_id", sort=True)
    out = grouped[["value", *counts]].mean()
    out.insert(0, "patient_id", grouped["patient_id"].first())
    return out.reset_index()


def _patients(cases: pd.DataFrame) -> np.ndarray:
    """Patient ids, or each image its own patient when the rows carry none."""
    if "patient_id" in cases:
        return cases["patient_id"].astype(str).to_numpy()
    return cases["image_id"].astype(str).to_numpy()


def _pooled_ok(label: str, images: pd.DataFrame) -> bool:
    return label in POOLED and all(n in images for n in ("TP", "FP", "FN"))


def point_estimate(images: pd.DataFrame, label: str, how: str) -> tuple[float, float, int]:
    """(mean, std over units, number of units) of one seed-averaged metric under `how`."""
    if how == "pooled" and _pooled_ok(label, images):
        a, b, c = POOLED[label]
        num = (2.0 if label == "DSC" else 1.0) * images[a].sum()
        den = num + images[b].sum() + images[c].sum() if label == "DSC" else \
            images[b].sum() + images[c].sum()
        return (float(num / den * 100.0) if den else math.nan), math.nan, len(images)
    units = images.dropna(subset=["value"])
    if how == "patient":
        units = units.groupby("patient_id")["value"].mean().to_frame()
    vals = units["value"].to_numpy(float)
    if not len(vals):
        return math.nan, 0.0, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def bootstrap_ci(images: pd.DataFrame, label: str, how: str, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the `how` statistic, resampling patients with replacement.

    Vectorised: a (n_boot x patients) multinomial weight matrix times per-patient sums.
    """
    patients, inverse = np.unique(images["patient_id"].to_numpy(str), return_inverse=True)
    n_pat = len(patients)
    if n_pat == 0 or n_boot < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=n_boot).astype(float)

    def sums(col: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=col, minlength=n_pat)

    with np.errstate(invalid="ignore", divide="ignore"):
        if how == "pooled" and _pooled_ok(label, images):
            a, b, c = (sums(images[k].to_numpy(float)) for k in POOLED[label])
            if label == "DSC":
                stat = 2 * (weights @ a) / (weights @ (2 * a + b + c)) * 100.0
            else:
                stat = (weights @ a) / (weights @ (b + c)) * 100.0
        else:
            vals = images["value"].to_numpy(float)
            defined = ~np.isnan(vals)
            s = sums(np.where(defined, vals, 0.0))
            k = sums(defined.astype(float))
            if how == "patient":
                means = np.divide(s, k, out=np.full(n_pat, np.nan), where=k > 0)
                has = ~np.isnan(means)
                stat = (weights[:, has] @ means[has]) / weights[:, has].sum(1)
            else:
                stat = (weights @ s) / (weights @ k)
    stat = stat[np.isfinite(stat)]
    if not len(stat):
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(stat, [tail, 100.0 - tail])
    return float(lo), float(hi)


def cell_statistics(cases: pd.DataFrame, how: str = "image", n_boot: int = 1000,
                    seed: int = 0) -> dict[str, float | int]:
    """Everything a leaderboard cell shows, for every reported metric.

    Keys: `n` (images), `n_seeds`, `<M>_mean`, `<M>_std` (over seeds if >= 2, else over
    units), `<M>_std_units`, `<M>_std_seeds`, `<M>_ci_lo`, `<M>_ci_hi`, `<M>_undefined`
    (images where the metric is undefined, counted per seed-averaged image).
    """
    check_aggregation(how)
    seeds = sorted(cases["seed"].unique()) if "seed" in cases else [0]
    out: dict[str, float | int] = {"n": int(cases["image_id"].nunique()),
                                   "n_seeds": len(seeds)}
    for label in REPORTED:
        images = per_image(cases, label)
        mean, std_units, _ = point_estimate(images, label, how)
        seed_means = [point_estimate(per_image(cases[cases["seed"] == s], label), label, how)[0]
                      for s in seeds] if len(seeds) > 1 else [mean]
        seed_means = [m for m in seed_means if not math.isnan(m)]
        std_seeds = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else math.nan
        if len(seed_means) > 1:
            mean = float(np.mean(seed_means))
        lo, hi = bootstrap_ci(images, label, how, n_boot, seed)
        out[f"{label}_mean"] = mean
        out[f"{label}_std_units"] = std_units
        out[f"{label}_std_seeds"] = std_seeds
        out[f"{label}_std"] = std_seeds if len(seed_means) > 1 else std_units
        out[f"{label}_ci_lo"], out[f"{label}_ci_hi"] = lo, hi
        out[f"{label}_undefined"] = int(images["value"].isna().sum())
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), input order.

    NaN p-values (no test possible) stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass
class Comparison:
    """A method vs the baseline on one column: units compared, mean difference, p-values."""

    n: int
    mean_diff: float
    p: float
    p_holm: float = math.nan

    def marker(self, label: str, alpha: float = 0.05) -> str:
        """'↑' significantly better than the baseline, '↓' worse, '' otherwise."""
        if math.isnan(self.p_holm) or self.p_holm >= alpha or self.mean_diff == 0:
            return ""
        better = (self.mean_diff > 0) == HIGHER_IS_BETTER[label]
        return "↑" if better else "↓"


def paired_images(a: pd.DataFrame, b: pd.DataFrame, how: str) -> Comparison:
    """Wilcoxon signed-rank of two `per_image` frames on identical images (patients under
    `patient`/`pooled`, where the per-patient means are paired); `a` minus `b`."""
    if how != "image":
        a = a.groupby("patient_id")["value"].mean().reset_index()
        b = b.groupby("patient_id")["value"].mean().reset_index()
        key = "patient_id"
    else:
        key = "image_id"
    joined = a[[key, "value"]].merge(b[[key, "value"]], on=key, suffixes=("_m", "_b")).dropna()
    diff = (joined["value_m"] - joined["value_b"]).to_numpy(float)
    if not len(diff):
        return Comparison(0, math.nan, math.nan)
    if not np.any(diff != 0):
        return Comparison(len(diff), 0.0, 1.0)
    p = float(sps.wilcoxon(joined["value_m"], joined["value_b"]).pvalue)
    return Comparison(len(diff), float(diff.mean()), p)


def paired_test(cases: pd.DataFrame, base: pd.DataFrame, label: str, how: str) -> Comparison:
    """`paired_images` of the per-case rows of a method and of the baseline."""
    return paired_images(per_image(cases, label), per_image(base, label), how)


def compare_to_baseline(cells: dict[str, pd.DataFrame], baseline: str, label: str,
                        how: str) -> dict[str, Comparison]:
    """Paired tests of every method in `cells` (display -> rows of one pairing) against
    `baseline`, Holm-corrected across those methods."""
    if baseline not in cells:
        return {}
    out = {m: paired_test(rows, cells[baseline], label, how)
           for m, rows in cells.items() if m != baseline}
    names = list(out)
    for name, adj in zip(names, holm([out[n].p for n in names]), strict=True):
        out[name].p_holm = adj
    return out


def average_ranks(means: pd.DataFrame) -> pd.Series:
    """Average rank per method (rows) over the columns (pairing x metric) it has.

    `means` holds one column per (pairing, metric) with the metric label as its last level or
    suffix after a space; better values rank 1; ties (equal shown value) share the average rank.
    """
    ranks = pd.DataFrame(index=means.index, dtype=float)
    for col in means.columns:
        label = col[-1] if isinstance(col, tuple) else str(col).split()[-1]
        vals = means[col].astype(float).round(2)
        have = vals.notna()
        if have.sum() < 2:
            continue
        signed = -vals[have] if HIGHER_IS_BETTER[label] else vals[have]
        ranks.loc[have[have].index, col] = sps.rankdata(signed.to_numpy(), method="average")
    return ranks.mean(axis=1, skipna=True)


def significance_ranks(images: dict[str, pd.DataFrame], label: str, how: str,
                       alpha: float = 0.05) -> dict[str, int]:
    """Per method (keys of `images`, each a `per_image` frame of one column): 1 + the number
    of methods significantly better on the paired units (`paired_images`, Holm across all
    pairs of the column). With one method it ranks 1."""
    names = list(images)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    tests = [paired_images(images[a], images[b], how) for a, b in pairs]
    better_than = {n: 0 for n in names}
    for (a, b), test, adjusted in zip(pairs, tests, holm([t.p for t in tests]), strict=True):
        test.p_holm = adjusted
        mark = test.marker(label, alpha)  # '↑': a is significantly better than b
        if mark:
            better_than[b if mark == "↑" else a] += 1
    return {n: 1 + k for n, k in better_than.items()}
