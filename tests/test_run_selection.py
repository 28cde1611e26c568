"""Run selection at collect time: the best trial by source validation (DomainBed), one row per
configuration, one code version per cell, and the "not learned" flag."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.collect import collect, provenance
from benchmark.html_report import render_table
from benchmark.leaderboard import build_tables, render_csv, render_markdown
from benchmark.sections import cost_table
from benchmark.store import ResultsStore


def _write(store: ResultsStore, run_id: str, *, seed: int = 0, trial: int = 0,
           val: float = 0.5, created: str = "2026-01-01T00:00:00", dsc: float = 0.5,
           background: float | None = 0.1, method: str = "unet", display: str = "Unet",
           **info: Any) -> None:
    """A trained run folder with one in-domain and one cross-domain image set."""
    training: dict[str, Any] = {"best_epoch": 1, "best_val_dsc": val,
                                "history": [{"epoch": 1, "val_dsc": val}]}
    if background is not None:
        training["all_background_val_dsc"] = background
    store.write_info(run_id, {"method": method, "method_display": display, "group": "P1",
                              "source": "ffdm", "profile": "quick", "seed": seed,
                              "hparam_trial": trial, "data_kind": "synthetic",
                              "code_version": "1+abc", "created": created,
                              "training": training, **info})
    store.update_status(run_id, state="trained")
    for target, values in (("ffdm", [dsc, dsc]), ("dbt", [dsc, dsc / 2])):
        store.add_cases(run_id, f"{target}@x", pd.DataFrame({
            "image_id": [f"{target}{i}" for i in range(2)], "patient_id": ["p0", "p1"],
            "DSC": values, "TPR": values, "Pr": values, "HD": [1.0, 2.0], "ASSD": [1.0, 1.0],
            "TP": [5, 5], "FP": [1, 1], "FN": [1, 1], "method_display": display,
            "group": "P1", "source": "ffdm", "target": target, "target_kind": "synthetic",
            "profile": info.get("profile", "quick"), "seed": seed, "checkpoint": "best"}))


def _sweep(store: ResultsStore) -> None:
    """Three trials of one seed, written in trial order; the last-written is the worst."""
    _write(store, "t0", trial=0, val=0.60, dsc=0.60, created="2026-01-01T00:00:00")
    _write(store, "t1", trial=1, val=0.70, dsc=0.80, created="2026-01-01T01:00:00")
    _write(store, "t2", trial=2, val=0.20, dsc=0.10, created="2026-01-01T02:00:00")


def test_best_validation_trial_stands_for_the_seed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _sweep(store)
    got = collect(store)
    assert set(got.cases["run_id"]) == {"t1"}  # not t2, the last written
    table = build_tables(store)[0]
    assert table.cells[("Unet", "ffdm", "dbt")].summary["DSC_mean"] == 60.0
    assert "hparam_trials" in render_csv(table).splitlines()[0]
    assert table.cells[("Unet", "ffdm", "dbt")].trials == [1]
    recs = {r["run_id"]: r for r in provenance(got.runs, sorted(got.runs), got.choices)}
    assert recs["t1"]["shown"] == "yes" and recs["t1"]["hparam_trial"] == 1
    assert recs["t2"]["shown"].startswith("no: trial 1 ")


def test_oracle_picks_the_trial_by_target_test(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _sweep(store)
    _write(store, "t3", trial=3, val=0.10, dsc=0.90, created="2026-01-01T03:00:00")
    assert set(collect(store, "oracle").cases["run_id"]) == {"t3"}
    assert set(collect(store).cases["run_id"]) == {"t1"}


def test_configurations_get_their_own_rows(tmp_path: Path) -> None:
    """A newer `--set epochs=20` run never replaces the default run of the same seed."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "default", dsc=0.60)
    _write(store, "longer", dsc=0.20, created="2026-02-01T00:00:00",
           overrides=["epochs=20"])
    _write(store, "old", dsc=0.40, created="2026-03-01T00:00:00",  # recorded command only
           command=["bench", "run", "-m", "unet", "--set", "lr=0.01"])
    table = build_tables(store)[0]
    rows = [d for _g, d in table.rows]
    assert rows == ["Unet", "Unet [epochs=20]", "Unet [lr=0.01]"]
    assert table.cells[("Unet", "ffdm", "dbt")].summary["DSC_mean"] == 45.0
    assert table.cells[("Unet [epochs=20]", "ffdm", "dbt")].summary["DSC_mean"] == 15.0
    costs = cost_table(collect(store))
    assert set(costs["method"]) == {"Unet", "Unet [epochs=20]", "Unet [lr=0.01]"}


def test_code_versions_never_mix_in_a_cell(tmp_path: Path) -> None:
    """Seed 0 of an older code version is not averaged with seed 1 of the newer one."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "old-s0", seed=0, dsc=0.2, code_version="1+old")
    _write(store, "new-s1", seed=1, dsc=0.6, created="2026-02-01T00:00:00")
    got = collect(store)
    assert set(got.cases["run_id"]) == {"new-s1"}
    assert got.choices["old-s0"].shown.startswith("no: an older code")
    costs = cost_table(got)  # the cost row counts the shown run only
    assert costs["runs"].tolist() == [1]


def _reevaluate(store: ResultsStore, run_id: str, key: str, dsc: float, finished: str) -> None:
    """The run's dbt rows again, for another version of the dbt test set (same image ids)."""
    rows = store.cases(run_id)
    rows = rows[rows["target"] == "dbt"].drop(columns="target_key").assign(DSC=dsc)
    store.add_cases(run_id, key, rows)
    store.update_status(run_id, targets={key: {"state": "done", "finished": finished}})


def test_a_run_reevaluated_on_a_newer_test_set_counts_once(tmp_path: Path) -> None:
    """Rows of an older version of a test set never blend with the newer one's: the same
    image ids would otherwise be averaged across two different test sets."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "r", dsc=0.2)
    store.update_status("r", targets={"dbt@x": {"state": "done", "finished": "2026-01-01"}})
    _reevaluate(store, "r", "dbt@y", 0.8, "2026-01-02")
    got = collect(store)
    dbt = got.cases[got.cases["target"] == "dbt"]
    assert set(dbt["target_key"]) == {"dbt@y"} and (dbt["DSC"] == 0.8).all()
    table = build_tables(store)[0]
    assert table.cells[("Unet", "ffdm", "dbt")].summary["DSC_mean"] == 80.0


def test_runs_of_one_cell_on_two_test_versions_are_not_mixed(tmp_path: Path) -> None:
    """Seed 0 evaluated before the stand-in changed, seed 1 after: the cell shows seed 1 and
    names seed 0's run with the command that re-evaluates it."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "s0", seed=0, dsc=0.2)
    store.update_status("s0", targets={"dbt@x": {"state": "done", "finished": "2026-01-01"}})
    _write(store, "s1", seed=1, dsc=0.2)
    store.update_status("s1", targets={"dbt@x": {"state": "done", "finished": "2026-01-01"}})
    rows = store.cases("s1")
    store.add_cases("s1", "dbt@y", rows[rows["target"] == "dbt"].drop(
        columns="target_key").assign(DSC=0.6))
    store.update_status("s1", targets={"dbt@y": {"state": "done", "finished": "2026-01-03"}})
    store.add_cases("s1", "dbt@x", rows.iloc[:0].drop(columns="target_key"))  # only y left
    got = collect(store)
    dbt = got.cases[got.cases["target"] == "dbt"]
    assert set(dbt["run_id"]) == {"s1"} and set(dbt["target_key"]) == {"dbt@y"}
    assert set(got.cases.loc[got.cases["target"] == "ffdm", "run_id"]) == {"s0", "s1"}
    assert got.left_out == {("synthetic", "quick", "Unet", "ffdm", "dbt"): [("s0", "dbt")]}
    lines = got.stale_lines("synthetic", "quick")
    assert len(lines) == 1 and lines[0].startswith("s0: ")
    assert "bench eval --run s0 --target dbt" in lines[0]
    assert got.stale_lines("synthetic", "paper") == []
    text = render_markdown(build_tables(store)[0])
    assert "Left out (an older version of the test set):" in text and "- s0: " in text
    csv = pd.read_csv(io.StringIO(render_csv(build_tables(store)[0])))  # and the CSV's cell
    row = csv[(csv["numbers_from"] == "ours") & (csv["target"] == "dbt")].iloc[0]
    assert row["runs_left_out"] == "s0" and row["run_ids"] == "s1"
    page = render_table(build_tables(store)[0])  # the HTML table lists it as well
    assert "Left out (an older version of the test set):" in page and "<li>s0: " in page
    recs = {r["run_id"]: r for r in provenance(got.runs, ["s0", "s1"], got.choices)}
    assert recs["s0"]["shown"] == "yes; not for 'dbt' (an older version of its test set)"
    assert recs["s1"]["shown"] == "yes"
    _write(store, "paper-run", profile="paper")  # another table: the line is not repeated there
    paper = next(t for t in build_tables(store) if t.profile == "paper")
    assert paper.stale == [] and "Left out" not in render_markdown(paper)


def test_not_learned_from_the_recorded_background_score(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _write(store, "flat", val=0.25, background=0.25)  # never beat all-background
    _write(store, "ok", val=0.30, background=0.25, method="resnet", display="Resnet")
    got = collect(store)
    assert got.not_learned("flat") and not got.not_learned("ok")


def test_not_learned_derived_for_old_runs(tmp_path: Path) -> None:
    """Without a recorded background score, the source test split stands in: an in-domain
    DSC equal to the share of empty reference masks is an all-background model."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "old", background=None, dsc=0.0)
    cases = store.cases("old")
    own = cases["target"] == "ffdm"
    cases.loc[own, ["TP", "FN", "DSC"]] = [[0, 0, 1.0], [0, 3, 0.0]]  # 1 of 2 empty: 0.5
    for key, rows in cases.groupby("target_key"):
        store.add_cases("old", str(key), rows.drop(columns="target_key"))
    got = collect(store)
    assert got.choices["old"].all_background == 0.5 and got.not_learned("old")


def test_toml_target_is_labelled_by_its_domain_name(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _write(store, "r")
    cases = store.cases("r")
    cases.loc[cases["target"] == "dbt", "target"] = "/data/domains/vendor-x.toml"
    cases["target_name"] = ["ffdm", "ffdm", "vendor_x", "vendor_x"]
    for key, rows in cases.groupby("target_key"):
        store.add_cases("r", str(key), rows.drop(columns="target_key"))
    got = collect(store)
    assert set(got.cases["target"]) == {"ffdm", "vendor_x"}
    assert "/data/domains/vendor-x.toml" in set(got.cases["target_spec"])


def test_training_records_the_all_background_score(toy_domains: dict[str, object],
                                                   results_dir: Path,
                                                   session_cache: Path) -> None:
    """run.json's training record holds the all-empty prediction's validation DSC, the share
    of validation images without reference pixels, and the options the run was started with."""
    import numpy as np

    from benchmark.progress import NullReporter
    from benchmark.runner import DataCache, RunRequest, plan_run, run

    req = RunRequest(method="unet", source="toy", profile="smoke", results_dir=results_dir,
                     cache_dir=session_cache, sets=["epochs=1"])
    outcome = run(req, NullReporter())
    info = ResultsStore(results_dir).read(outcome.run_id).info
    plan = plan_run(req, NullReporter())
    data, split = DataCache(plan.profile, session_cache, NullReporter()).get(
        "toy", plan.domains["toy"])
    expected = float(np.mean([not data.masks[i].any() for i in split["val"]]))
    assert info["training"]["all_background_val_dsc"] == expected
    assert info["overrides"] == ["epochs=1"] and info["source_name"] == "toy"


def test_unreadable_run_folders_are_listed_in_markdown_and_html(tmp_path: Path) -> None:
    """A broken run.json is skipped, not fatal, and both table formats say which folder."""
    store = ResultsStore(tmp_path / "results")
    _write(store, "ok")
    broken = store.run_dir("broken")
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{not json")
    table = build_tables(store)[0]
    assert any("broken" in p for p in table.problems)
    assert "Unreadable run folders (skipped):" in render_markdown(table)
    page = render_table(table)
    assert "Unreadable run folders (skipped):" in page and "broken" in page
    assert "{not json" not in page
