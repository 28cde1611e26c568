"""Does every training seed see the synthetic domain shift, and are the test splits big enough?

`bench perf shift` trains one method (default the U-Net) on a source stand-in at each seed,
evaluates it on the source's own test split and on the targets, and prints per seed the
in-domain DSC, each cross-domain DSC and the drop, then the targets the issue tracker set
(in-domain >= 50 %, drop >= 10 points at every seed, mean drop >= 15). With `--in-domain`,
it also trains on each named stand-in at the first seed, so every stand-in's test split gets
the 95 % bootstrap CI half-width (patients resampled) of a model trained on that stand-in.
A second table shows how each seed errs on each domain: mean TPR, mean precision, the
predicted foreground area over the true one (pooled over images) and the share of the test
images without a cluster on which the model marks anything, because a cross-domain score
that moves with the seed usually moves with the model's operating point, not with its skill.
Runs go to an ordinary results folder, so a rerun reuses every finished run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.collect import newest_evaluations
from benchmark.progress import NullReporter, Reporter
from benchmark.runner import RunRequest, plan_run, run
from benchmark.stats import bootstrap_ci, per_image, point_estimate
from benchmark.store import ResultsStore

IN_DOMAIN_MIN, DROP_MIN, MEAN_DROP_MIN, CI_MAX = 50.0, 10.0, 15.0, 4.0


@dataclass
class ShiftResult:
    """Per-seed DSC per evaluated domain, and the CI half-widths per stand-in."""

    method: str
    source: str
    targets: list[str]
    profile: str
    dsc: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> domain -> DSC %
    ci_half: dict[str, tuple[float, int, int, str]] = field(default_factory=dict)
    # domain -> (largest half-width, images, patients, which run it came from)
    errs: dict[int, dict[str, tuple[float, float, float, float]]] = field(default_factory=dict)
    # seed -> domain -> (mean TPR %, mean precision %, predicted / true foreground area,
    # % of the images without a cluster that the model marks anything on)


def _dsc_and_ci(cases: pd.DataFrame) -> tuple[float, float, int, int]:
    """Mean per-image DSC (%), its 95 % patient-bootstrap CI half-width, images, patients."""
    images = per_image(cases, "DSC")
    mean, _, n = point_estimate(images, "DSC", "image")
    lo, hi = bootstrap_ci(images, "DSC", "image", n_boot=2000, seed=0)
    return mean, (hi - lo) / 2.0, n, int(images["patient_id"].nunique())


def _errs(cases: pd.DataFrame) -> tuple[float, float, float, float]:
    """Mean per-image TPR and precision (%), predicted over true foreground pixels, and the
    % of images with an empty reference that get a non-empty prediction (nan: none empty)."""
    tpr = point_estimate(per_image(cases, "TPR"), "TPR", "image")[0]
    pr = point_estimate(per_image(cases, "Pr"), "Pr", "image")[0]
    truth = float((cases["TP"] + cases["FN"]).sum())
    area = float((cases["TP"] + cases["FP"]).sum()) / truth if truth else math.nan
    empty = cases[cases["TP"] + cases["FN"] == 0]
    fired = 100.0 * float((empty["FP"] > 0).mean()) if len(empty) else math.nan
    return tpr, pr, area, fired


def _test_rows(store: ResultsStore, run_id: str) -> dict[str, pd.DataFrame]:
    """Best-checkpoint test rows of a run, per evaluated domain name, of the test-set version
    it was evaluated on last (a stand-in that changed leaves the older version's rows)."""
    cases = store.cases(run_id)
    cases = cases[(cases["checkpoint"] == "best") & (cases["split"] == "test")]
    name = "target_name" if "target_name" in cases else "target"
    cases = newest_evaluations(cases, store.read(run_id).status, name)
    return {str(dom): sub for dom, sub in cases.groupby(name)}


def _evaluate(store: ResultsStore, run_id: str) -> dict[str, tuple[float, float, int, int]]:
    """Mean DSC, CI half-width, images and patients of a run, per evaluated domain name."""
    return {dom: _dsc_and_ci(sub) for dom, sub in _test_rows(store, run_id).items()}


def run_shift_check(method: str, source: str, targets: list[str], seeds: list[int],
                    profile: str, results_dir: Path, cache_dir: Path, in_domain: list[str],
                    reporter: Reporter, sets: list[str] | None = None) -> ShiftResult:
    """Train/evaluate every seed (reusing finished runs) and collect the numbers."""
    out = ShiftResult(method, source, targets, profile)
    store = ResultsStore(results_dir)

    def note_ci(domain: str, found: tuple[float, float, int, int], label: str) -> None:
        """Keep the largest CI half-width seen for `domain`."""
        _, half, n, patients = found
        if domain not in out.ci_half or half > out.ci_half[domain][0]:
            out.ci_half[domain] = (half, n, patients, label)

    # Check every method, domain and --set up front: a typo in --in-domain must not surface
    # only after ten seeds have trained.
    for dom in in_domain:
        plan_run(RunRequest(method=method, source=dom, targets=[], profile=profile,
                            seed=seeds[0], sets=list(sets or [])), NullReporter())
    for seed in seeds:
        outcome = run(RunRequest(method=method, source=source, targets=list(targets),
                                 profile=profile, seed=seed, sets=list(sets or []),
                                 results_dir=results_dir, cache_dir=cache_dir), reporter)
        rows = _test_rows(store, outcome.run_id)
        found = {dom: _dsc_and_ci(sub) for dom, sub in rows.items()}
        out.dsc[seed] = {dom: v[0] for dom, v in found.items()}
        out.errs[seed] = {dom: _errs(sub) for dom, sub in rows.items()}
        for dom, v in found.items():
            note_ci(dom, v, f"{source} -> {dom}, seed {seed}")
    for dom in in_domain:
        outcome = run(RunRequest(method=method, source=dom, targets=[], profile=profile,
                                 seed=seeds[0], sets=list(sets or []),
                                 results_dir=results_dir, cache_dir=cache_dir), reporter)
        for name, v in _evaluate(store, outcome.run_id).items():
            note_ci(name, v, f"{dom} -> {name}, seed {seeds[0]}")
    return out


def shift_rows(result: ShiftResult) -> list[dict[str, Any]]:
    """One row per seed: in-domain DSC, each target's DSC and drop."""
    rows = []
    names = {spec: _name(spec) for spec in [result.source, *result.targets]}  # resolve once
    for seed, by_domain in sorted(result.dsc.items()):
        src = by_domain.get(names[result.source], math.nan)
        row: dict[str, Any] = {"seed": seed, "in-domain": src}
        for tgt in result.targets:
            row[tgt] = by_domain.get(names[tgt], math.nan)
            row[f"drop {tgt}"] = src - row[tgt]
        rows.append(row)
    return rows


def error_rows(result: ShiftResult) -> list[dict[str, Any]]:
    """One row per seed: TPR, precision, predicted / true area and the % of empty images
    fired on, for the source and each target."""
    rows = []
    names = {spec: _name(spec) for spec in [result.source, *result.targets]}
    for seed, by_domain in sorted(result.errs.items()):
        row: dict[str, Any] = {"seed": seed}
        for name in names.values():  # columns by domain name, not by path
            tpr, pr, area, fired = by_domain.get(name, (math.nan,) * 4)
            row.update({f"{name} TPR": tpr, f"{name} Pr": pr, f"{name} area": area,
                        f"{name} empty fired": fired})
        rows.append(row)
    return rows


def _name(spec: str) -> str:
    """A domain's name from a spec (a binding, a registered name or a TOML path)."""
    from benchmark.registry import resolve_domain

    return str(resolve_domain(spec).name)


def shift_targets(result: ShiftResult) -> list[str]:
    """PASS/MISS lines for the targets, first target only for the drop targets."""
    rows = shift_rows(result)
    lines = []
    if not rows:
        return lines
    ind = [r["in-domain"] for r in rows]
    lines.append(f"{'PASS' if min(ind) >= IN_DOMAIN_MIN else 'MISS'}: in-domain DSC >= "
                 f"{IN_DOMAIN_MIN:g} % at every seed (lowest {min(ind):.1f})")
    if result.targets:
        drops = [r[f"drop {result.targets[0]}"] for r in rows]
        mean = sum(drops) / len(drops)
        lines.append(f"{'PASS' if min(drops) >= DROP_MIN else 'MISS'}: drop to "
                     f"{result.targets[0]} >= {DROP_MIN:g} points at every seed "
                     f"(smallest {min(drops):.1f})")
        lines.append(f"{'PASS' if mean >= MEAN_DROP_MIN else 'MISS'}: mean drop >= "
                     f"{MEAN_DROP_MIN:g} points ({mean:.1f} over {len(drops)} seeds)")
    for dom, (half, n, patients, _) in sorted(result.ci_half.items()):
        lines.append(f"{'PASS' if half <= CI_MAX else 'MISS'}: 95 % CI half-width on {dom} "
                     f"<= {CI_MAX:g} DSC points ({half:.1f}; {n} images, {patients} patients)")
    return lines


def print_shift_check(result: ShiftResult, console: Any) -> None:
    """The per-seed table, the CI table and the target lines."""
    from rich.table import Table

    rows = shift_rows(result)
    table = Table(title=f"{result.method}: {result.source} -> {', '.join(result.targets)} "
                        f"({result.profile}), DSC % on the test splits, best checkpoint")
    for col in rows[0] if rows else ["seed"]:
        table.add_column(str(col), justify="right")
    for row in rows:
        table.add_row(*(str(v) if k == "seed" else f"{v:.1f}" for k, v in row.items()))
    if len(rows) > 1:
        keys = [k for k in rows[0] if k != "seed"]
        table.add_row("mean", *(f"{sum(r[k] for r in rows) / len(rows):.1f}" for k in keys))
    console.print(table)
    errs = error_rows(result)
    if errs:
        how = Table(title="How each seed errs: mean TPR %, mean precision %, predicted / true "
                          "foreground area, % of the images without a cluster marked")
        for col in errs[0]:
            how.add_column(str(col), justify="right")
        for row in errs:
            how.add_row(*(str(v) if k == "seed" else "—" if math.isnan(v) else
                          f"{v:.2f}" if k.endswith("area") else f"{v:.1f}"
                          for k, v in row.items()))
        console.print(how)
    ci = Table(title="95 % bootstrap CI half-width of the mean DSC (patients resampled)")
    for col in ("test split", "half-width", "images", "patients", "largest in run"):
        ci.add_column(col)
    for dom, (half, n, patients, label) in sorted(result.ci_half.items()):
        ci.add_row(dom, f"{half:.1f}", str(n), str(patients), label)
    console.print(ci)
    for line in shift_targets(result):
        console.print(line)
