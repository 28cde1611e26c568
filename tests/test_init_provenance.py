"""Initialisation in the leaderboards: a cell never mixes runs from different `init`s, and the
provenance records show each run's init."""

from __future__ import annotations

from pathlib import Path

from benchmark.collect import collect, provenance
from benchmark.leaderboard import build_tables
from benchmark.store import ResultsStore
from tests.test_run_selection import _write


def test_a_cell_never_mixes_initialisations(tmp_path: Path) -> None:
    """Seed 0 from scratch is not averaged with seed 1 from ImageNet weights (same code)."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "scratch-s0", seed=0, dsc=0.2, init="scratch")
    _write(store, "imagenet-s1", seed=1, dsc=0.6, created="2026-02-01T00:00:00",
           init="imagenet (timm swin_small_patch4_window7_224.ms_in1k)")
    got = collect(store)
    assert set(got.cases["run_id"]) == {"imagenet-s1"}
    assert "initialisation" in got.choices["scratch-s0"].shown
    cell = build_tables(store)[0].cells[("Unet", "ffdm", "dbt")]
    assert cell.summary is not None and cell.summary["n_seeds"] == 1
    recs = {r["run_id"]: r for r in provenance(got.runs, sorted(got.runs), got.choices)}
    assert recs["imagenet-s1"]["init"].startswith("imagenet (timm swin_small")
    assert recs["scratch-s0"]["init"] == "scratch"


def test_runs_before_init_was_recorded_count_as_scratch(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _write(store, "old-s0", seed=0, dsc=0.2)  # no `init` key
    _write(store, "new-s1", seed=1, dsc=0.6, created="2026-02-01T00:00:00", init="scratch")
    assert set(collect(store).cases["run_id"]) == {"old-s0", "new-s1"}
