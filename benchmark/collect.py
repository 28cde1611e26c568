"""Collect stored runs for the reports: per-case rows, FROC candidates, run provenance, and
model selection (which checkpoint's rows stand for a run) applied at collect time.

Selection strategies: `source-val` (default: best.pt, chosen on the source validation split,
what the runner evaluates first), `last` (last.pt), and `oracle` (per run and target, the
checkpoint with the higher target-test DSC: an upper bound that peeks at the test set, only
ever shown in a separately labelled table). Rows stored before the `checkpoint` column existed
count as `best`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from benchmark.errors import UserError
from benchmark.store import ResultsStore

SELECTIONS = ("source-val", "last", "oracle")
SELECTION_LABEL = {"source-val": "source-validation model selection (best.pt)",
                   "last": "last-epoch checkpoint (last.pt)",
                   "oracle": "ORACLE selection on the target test set (not a valid protocol; "
                             "an upper bound only)"}
PROVENANCE_KEYS = ("run_id", "method", "source", "seed", "profile", "code_version",
                   "git_commit", "created")


@dataclass
class Collected:
    """Everything the reports read from the store, after model selection."""

    cases: pd.DataFrame
    candidates: pd.DataFrame
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> run.json
    failed: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    run_methods: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def check_selection(selection: str) -> str:
    """Return `selection` or raise a one-line UserError naming the allowed values."""
    if selection not in SELECTIONS:
        raise UserError(f"--select '{selection}': expected one of {', '.join(SELECTIONS)}")
    return selection


def collect(store: ResultsStore, selection: str = "source-val") -> Collected:
    """Read every run; keep one checkpoint's rows per (run, target) under `selection`."""
    check_selection(selection)
    records, problems = store.list_runs()
    out = Collected(pd.DataFrame(), pd.DataFrame(), problems=list(problems))
    frames, cand_frames = [], []
    for rec in records:
        info = rec.info
        kind, profile = info.get("data_kind", "?"), info["profile"]
        display = info.get("method_display", info["method"])
        out.runs[rec.run_id] = info
        out.run_methods.setdefault((kind, profile), {})[display] = info.get("group", "plugin")
        if rec.status.get("state") == "failed":
            out.failed[(kind, profile, display, info["source"])] = "failed"
        for key, t in rec.status.get("targets", {}).items():
            if t.get("state") == "failed":
                out.failed[(kind, profile, display,
                            info["source"] + "->" + key.split("@")[0])] = "failed (evaluation)"
        cases = store.cases(rec.run_id)
        if len(cases):
            frames.append(cases.assign(created=info.get("created", ""), data_kind=kind,
                                       run_id=rec.run_id))
        cands = store.candidates(rec.run_id)
        if len(cands):
            cand_frames.append(cands.assign(run_id=rec.run_id))
    cases = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cands = pd.concat(cand_frames, ignore_index=True) if cand_frames else pd.DataFrame()
    if len(cases):
        if "checkpoint" not in cases:
            cases["checkpoint"] = "best"
        cases["checkpoint"] = cases["checkpoint"].fillna("best")
        cases = _select(cases, selection)
        cases = _latest_per_seed(cases)
    if len(cands) and len(cases):
        if "checkpoint" not in cands:
            cands["checkpoint"] = "best"
        kept = cases[["run_id", "target", "checkpoint"]].drop_duplicates()
        cands = cands.merge(kept, on=["run_id", "target", "checkpoint"])
    out.cases, out.candidates = cases, cands
    return out


def _select(cases: pd.DataFrame, selection: str) -> pd.DataFrame:
    if selection == "source-val":
        return cases[cases["checkpoint"] == "best"]
    if selection == "last":
        return cases[cases["checkpoint"] == "last"]
    dsc = cases.groupby(["run_id", "target", "checkpoint"])["DSC"].mean().reset_index()
    dsc = dsc.sort_values(["run_id", "target", "DSC", "checkpoint"],
                          ascending=[True, True, False, True])
    chosen = dsc.drop_duplicates(["run_id", "target"])[["run_id", "target", "checkpoint"]]
    return cases.merge(chosen, on=["run_id", "target", "checkpoint"])


def _latest_per_seed(cases: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (data kind, method, source, target, profile, seed), the newest run's rows."""
    keys = ["data_kind", "method_display", "source", "target", "profile", "seed"]
    newest = cases.groupby(keys)["created"].transform("max")
    return cases[cases["created"] == newest].reset_index(drop=True)


def provenance(runs: dict[str, dict[str, Any]], run_ids: list[str]) -> list[dict[str, Any]]:
    """One record per run id: what produced it (code version, commit, data fingerprints)."""
    out = []
    for rid in run_ids:
        info = runs.get(rid, {})
        rec = {k: info.get(k, "") for k in PROVENANCE_KEYS}
        rec["run_id"] = rid
        rec["data_fingerprints"] = ", ".join(f"{k}={v}" for k, v in sorted(
            (info.get("data_fingerprints") or {}).items()))
        out.append(rec)
    return out
