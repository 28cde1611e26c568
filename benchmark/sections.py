"""Report sections beside the leaderboards: cost, lesion-level detection (with FROC), and how
often each branch was chosen (methods that store `info_branch` per image, e.g. MLN-net).

Costs: parameters and training seconds come from run.json (mean over a cell's seeds);
inference time per image is the median of the per-image `infer_seconds` (the median ignores the
first batch's warm-up); peak memory is the largest `peak_mem_mb` with what was measured
(`cuda_max_allocated` during evaluation, or `cpu_peak_rss` of the whole process).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchmark.collect import Collected, target_label
from benchmark.lesions import froc_curve, sensitivity_at

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)


def cost_table(got: Collected) -> pd.DataFrame:
    """One row per (data kind, profile, method, source): params, train s, infer ms, memory.
    Only the runs the tables show count: an older code version's or a losing trial's cost
    would otherwise mix into the row's mean."""
    recs = []
    shown = set(got.cases["run_id"]) if "run_id" in got.cases else set()
    for rid, info in got.runs.items():
        if rid not in shown:  # left out by run selection
            continue
        choice = got.choices.get(rid)  # its row label: display name [+ configuration]
        recs.append({"run_id": rid, "data_kind": info.get("data_kind", "?"),
                     "profile": info["profile"], "method": choice.label if choice else
                     info.get("method_display", info["method"]),
                     "source": target_label(info["source"], info.get("source_name")),
                     "params": info.get("num_parameters"),
                     "train_seconds": (info.get("timings") or {}).get("train_seconds"),
                     "trained_by": info.get("trained_by_method") or ""})
    runs = pd.DataFrame(recs)
    if not len(runs):
        return pd.DataFrame()
    keys = ["data_kind", "profile", "method", "source"]
    out = runs.groupby(keys, dropna=False).agg(
        runs=("run_id", "nunique"), params=("params", "mean"),
        train_seconds=("train_seconds", "mean"),
        trained_by=("trained_by", lambda s: ", ".join(sorted(set(s) - {""})))).reset_index()
    cases = got.cases
    if len(cases) and "infer_seconds" in cases:
        per = cases.drop(columns=["method"], errors="ignore").rename(
            columns={"method_display": "method"}).groupby(keys).agg(
            infer_ms=("infer_seconds", lambda s: float(np.nanmedian(s)) * 1000.0),
            peak_mem_mb=("peak_mem_mb", "max"),
            peak_mem_kind=("peak_mem_kind", lambda s: ", ".join(sorted(set(s.dropna()))))
        ).reset_index()
        out = out.merge(per, on=keys, how="left")
    return out


def render_cost_markdown(costs: pd.DataFrame) -> str:
    """Markdown of `cost_table`, one block per data kind and profile."""
    if not len(costs):
        return ""
    lines = ["### Cost", "", "Parameters and training time from run.json (mean over seeds); "
             "inference: median ms per image; peak memory: CUDA max allocated during "
             "evaluation, or the CPU process's peak RSS (includes training when it ran in the "
             "same process). A method evaluated on another's weights (Table 3's test-time "
             "variants) shows that method's training time, marked with its name.", "",
             "| Data | Profile | Method | Source | Runs | Params (M) | Train (s) | "
             "Infer (ms/img) | Peak mem (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in costs.to_dict("records"):
        lines.append(
            f"| {r['data_kind']} | {r['profile']} | {r['method']} | {r['source']} | "
            f"{r['runs']} | {_num(r.get('params'), 1e-6, 3)} | "
            f"{_num(r.get('train_seconds'), 1, 1)}{_shared(r.get('trained_by'))} | "
            f"{_num(r.get('infer_ms'), 1, 1)} | "
            f"{_num(r.get('peak_mem_mb'), 1, 0)} {_kind(r.get('peak_mem_kind'))} |")
    return "\n".join(lines) + "\n"


def _num(v: Any, scale: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{float(v) * scale:.{digits}f}"


def _shared(v: Any) -> str:
    return f" ({v}'s)" if isinstance(v, str) and v else ""


def _kind(v: Any) -> str:
    return f"({v})" if isinstance(v, str) and v else ""


def lesion_table(got: Collected) -> pd.DataFrame:
    """Per (kind, profile, method, source, target): lesion sensitivity / precision / F1 (mean
    over images, undefined excluded), pooled over all lesions, and the FROC score (mean
    sensitivity at 0.25-4 false positives per image)."""
    cases = got.cases
    if not len(cases) or "lesion_n_ref" not in cases:
        return pd.DataFrame()
    cases = cases.dropna(subset=["lesion_n_ref"])
    keys = ["data_kind", "profile", "method_display", "source", "target"]
    recs = []
    for key, sub in cases.groupby(keys):
        rec = dict(zip(keys, key, strict=True))
        rec["images"] = len(sub)
        for m in ("sensitivity", "precision", "f1"):
            rec[f"lesion_{m}"] = float(sub[f"lesion_{m}"].mean() * 100)
        n_ref, n_pred = sub["lesion_n_ref"].sum(), sub["lesion_n_pred"].sum()
        rec["lesions"] = int(n_ref)
        rec["pooled_sensitivity"] = float(sub["lesion_tp"].sum() / n_ref * 100) if n_ref \
            else math.nan
        rec["pooled_precision"] = float((n_pred - sub["lesion_fp"].sum()) / n_pred * 100) \
            if n_pred else math.nan
        curve = froc_for(got, sub)
        rec["froc_score"] = float(np.mean(list(sensitivity_at(curve, FROC_RATES).values()))
                                  * 100) if len(curve) else math.nan
        recs.append(rec)
    return pd.DataFrame(recs)


def froc_for(got: Collected, cases: pd.DataFrame) -> pd.DataFrame:
    """The FROC curve of the runs/target in `cases` from the stored candidates."""
    cands = got.candidates
    if not len(cands) or not len(cases):
        return pd.DataFrame(columns=["threshold", "sensitivity", "fp_per_image"])
    pairs = cases[["run_id", "target"]].drop_duplicates()
    sub = cands.merge(pairs, on=["run_id", "target"])
    return froc_curve(sub, int(cases["lesion_n_ref"].sum()), len(cases))


def render_lesion_markdown(lesions: pd.DataFrame) -> str:
    """Markdown of `lesion_table` (cross-domain pairings only)."""
    if not len(lesions):
        return ""
    lines = ["### Lesion (cluster) level detection", "",
             "A predicted component matches a reference cluster when they overlap or their "
             "centroids are ≤ 5 mm apart (benchmark/lesions.py). Sens./Prec./F1: mean over "
             "images (%, undefined excluded); pooled: over all lesions; FROC: mean sensitivity "
             "at 0.25, 0.5, 1, 2, 4 false positives per image (%).", "",
             "| Data | Profile | Method | Pairing | Images | Lesions | Sens. | Prec. | F1 | "
             "Pooled sens. | Pooled prec. | FROC |", "|---|---|---|---|---|---|---|---|---|---|"
             "---|---|"]
    for r in lesions.to_dict("records"):
        if r["source"] == r["target"]:
            continue
        vals = [_num(r[k], 1, 2) for k in ("lesion_sensitivity", "lesion_precision",
                                           "lesion_f1", "pooled_sensitivity",
                                           "pooled_precision", "froc_score")]
        lines.append(f"| {r['data_kind']} | {r['profile']} | {r['method_display']} | "
                     f"{r['source']}→{r['target']} | {r['images']} | {r['lesions']} | "
                     + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def branch_table(got: Collected) -> pd.DataFrame:
    """Share of images per chosen branch, per (kind, profile, method, source, target)."""
    cases = got.cases
    if not len(cases) or "info_branch" not in cases:
        return pd.DataFrame()
    # runs without branches leave NaN in the concatenated column, which makes it float
    cases = cases.dropna(subset=["info_branch"])
    if pd.api.types.is_float_dtype(cases["info_branch"]):
        cases = cases.astype({"info_branch": int})
    branch_cols = ["info_branch"]
    if "info_branch_name" in cases:
        cases = cases.assign(info_branch_name=cases["info_branch_name"].fillna(""))
        branch_cols.append("info_branch_name")
    keys = ["data_kind", "profile", "method_display", "source", "target"]
    counts = cases.groupby([*keys, *branch_cols]).size().rename("images").reset_index()
    counts["share"] = counts["images"] / counts.groupby(keys)["images"].transform("sum") * 100
    return counts


def render_branch_markdown(branches: pd.DataFrame) -> str:
    """Markdown of `branch_table`."""
    if not len(branches):
        return ""
    lines = ["### Branch choice", "", "How often each branch was chosen per image (methods "
             "that report `branch` through Method.case_info).", "",
             "| Data | Profile | Method | Pairing | Branch | Images | Share (%) |",
             "|---|---|---|---|---|---|---|"]
    for r in branches.to_dict("records"):
        lines.append(f"| {r['data_kind']} | {r['profile']} | {r['method_display']} | "
                     f"{r['source']}→{r['target']} | {_branch_label(r)} | {r['images']} | "
                     f"{r['share']:.1f} |")
    return "\n".join(lines) + "\n"


def _branch_label(row: dict) -> str:
    """'1 (dissimilar)': the branch id, with its pseudo-domain name when the method gave one."""
    name = row.get("info_branch_name") or ""
    return f"{row['info_branch']} ({name})" if name else str(row["info_branch"])
