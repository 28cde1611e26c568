"""`bench perf shift`: per-seed in-domain / cross-domain DSC, drops and CI half-widths."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.perf.shift_check import ShiftResult, _errs, error_rows, shift_rows, shift_targets
from benchmark.stats import bootstrap_ci, per_image
from benchmark.store import ResultsStore

DATA = Path(__file__).resolve().parent / "data"
BENCH = [sys.executable, "-m", "benchmark.cli"]


def test_rows_and_target_lines() -> None:
    """Drops are in-domain minus cross-domain per seed; every target gets a PASS/MISS line."""
    res = ShiftResult("unet", "ffdm", ["dbt"], "quick",
                      dsc={0: {"ffdm": 62.0, "dbt": 45.0}, 1: {"ffdm": 55.0, "dbt": 47.0}},
                      ci_half={"ffdm": (3.5, 240, 60, "x"), "dbt": (4.6, 288, 48, "y")})
    rows = shift_rows(res)
    assert [r["drop dbt"] for r in rows] == [17.0, 8.0]
    lines = shift_targets(res)
    assert lines[0].startswith("PASS: in-domain") and "lowest 55.0" in lines[0]
    assert lines[1].startswith("MISS: drop to dbt") and "smallest 8.0" in lines[1]
    assert lines[2].startswith("MISS: mean drop") and "12.5 over 2 seeds" in lines[2]
    assert lines[3].startswith("MISS: 95 % CI half-width on dbt") and "4.6" in lines[3]
    assert lines[4].startswith("PASS: 95 % CI half-width on ffdm")


def test_error_rows_say_how_a_seed_errs() -> None:
    """TPR and precision are per-image means (precision undefined on an empty prediction);
    the area is predicted over true foreground pixels, pooled over the images."""
    cases = pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e"], "patient_id": ["p", "p", "q", "q", "r"],
        "TP": [10, 0, 30, 0, 0], "FP": [30, 0, 90, 5, 0], "FN": [10, 20, 0, 0, 0],
        "TPR": [0.5, 0.0, 1.0, float("nan"), float("nan")],
        "Pr": [0.25, float("nan"), 0.25, 0.0, float("nan")]})
    tpr, pr, area, fired = _errs(cases)
    assert np.isclose(tpr, 50.0) and np.isclose(pr, 50.0 / 3)  # d's precision counts 0
    assert np.isclose(area, (40 + 0 + 120 + 5) / (20 + 20 + 30))
    assert np.isclose(fired, 50.0)  # d (marked) and e (not) have no cluster
    assert np.isnan(_errs(cases.iloc[:3])[3])  # no empty image: nothing to say
    res = ShiftResult("unet", "ffdm", ["dbt"], "quick",
                      errs={1: {"ffdm": (60.0, 70.0, 0.9, math.nan),
                                "dbt": (90.0, 10.0, 8.0, 100.0)}})
    rows = error_rows(res)
    assert rows[0]["dbt empty fired"] == 100.0 and math.isnan(rows[0]["ffdm empty fired"])
    assert {k: v for k, v in rows[0].items() if "empty" not in k} == {
        "seed": 1, "ffdm TPR": 60.0, "ffdm Pr": 70.0, "ffdm area": 0.9,
        "dbt TPR": 90.0, "dbt Pr": 10.0, "dbt area": 8.0}


def test_cli_end_to_end_on_the_smoke_profile(tmp_path: Path) -> None:
    """Two seeds on tiny stand-ins: the table's numbers are the stored runs' mean DSC, the CI
    half-width is the stored rows' patient bootstrap, and a rerun reuses every run."""
    res = tmp_path / "res"
    cmd = [*BENCH, "perf", "shift", "--source", str(DATA / "tiny-ffdm.toml"), "--target",
           str(DATA / "tiny-dbt.toml"), "--seeds", "0-1", "--in-domain", "",
           "--profile", "smoke", "--results-dir", str(res), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode in (0, 1), first.stderr[-2000:]
    assert "Traceback" not in first.stderr
    out = first.stdout
    assert "drop" in out and "CI half-width" in out and "in-domain DSC >= 50" in out
    assert "How each seed errs" in out
    store = ResultsStore(res)
    runs = sorted(p for p in store.runs_dir.iterdir() if p.is_dir())
    assert len(runs) == 2
    for folder in runs:
        cases = store.cases(folder.name)
        test = cases[(cases["checkpoint"] == "best") & (cases["split"] == "test")]
        for name, sub in test.groupby("target_name"):
            images = per_image(sub, "DSC")
            mean = float(images["value"].mean())
            lo, hi = bootstrap_ci(images, "DSC", "image", n_boot=2000, seed=0)
            assert np.isfinite(mean) and f"{mean:.1f}" in out
            assert name in out and hi >= lo
            truth = float((sub["TP"] + sub["FN"]).sum())
            if truth:
                assert f"{float((sub['TP'] + sub['FP']).sum()) / truth:.2f}" in out
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == first.returncode
    assert "reusing the finished training" in again.stdout + again.stderr


def test_bad_names_fail_before_any_training(tmp_path: Path) -> None:
    """A typo in --in-domain (trained last) or an empty seed range is one line at once, not an
    error after every seed has trained."""
    res = tmp_path / "res"
    for bad, message in ((["--in-domain", "nope"], "unknown domain 'nope'"),
                         (["--seeds", "3-1"], "range '3-1' is empty")):
        cmd = [*BENCH, "perf", "shift", "--source", str(DATA / "tiny-ffdm.toml"), "--target",
               str(DATA / "tiny-dbt.toml"), "--seeds", "0", "--profile", "smoke",
               "--results-dir", str(res), "--no-progress", *bad]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        assert not (res / "runs").is_dir() or not any((res / "runs").iterdir())
