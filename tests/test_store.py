"""Run folders: atomic files, per-target case replacement, corrupt and partial folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.store import ResultsStore


def _store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results")
    store.ensure_writable()
    store.write_info("r1", {"method": "unet", "source": "ffdm", "profile": "smoke", "seed": 0})
    store.update_status("r1", state="trained")
    return store


def test_status_merges_targets(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.update_status("r1", targets={"dbt@a": {"state": "done"}})
    store.update_status("r1", targets={"ffdm@b": {"state": "failed"}})
    status = store.read("r1").status
    assert status["state"] == "trained"
    assert set(status["targets"]) == {"dbt@a", "ffdm@b"}


def test_add_cases_replaces_only_that_target(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_cases("r1", "dbt@a", pd.DataFrame({"image_id": ["x", "y"], "DSC": [0.1, 0.2]}))
    store.add_cases("r1", "ffdm@b", pd.DataFrame({"image_id": ["z"], "DSC": [0.3]}))
    store.add_cases("r1", "dbt@a", pd.DataFrame({"image_id": ["x"], "DSC": [0.9]}))
    cases = store.cases("r1")
    assert sorted(cases["image_id"]) == ["x", "z"]
    assert float(cases.loc[cases.image_id == "x", "DSC"].iloc[0]) == 0.9
    leftovers = [p for p in store.run_dir("r1").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_corrupt_and_partial_run_folders(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.run_dir("r1") / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        store.read("r1")
    store.run_dir("r2").mkdir()
    with pytest.raises(UserError, match=r"run\.json is missing"):
        store.read("r2")
    runs, problems = store.list_runs()
    assert runs == [] and len(problems) == 2
    with pytest.raises(UserError, match="no run 'nope'"):
        store.read("nope")


def test_corrupt_parquet_is_reported(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.run_dir("r1") / "per_case.parquet").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        store.cases("r1")


def test_unwritable_results_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(UserError, match="not writable"):
        ResultsStore(blocker / "results").ensure_writable()


def _probe_repeatedly(runs: str, rounds: int) -> str:
    """Worker of the test below: ensure_writable over and over; the first error, or ''."""
    store = ResultsStore(Path(runs))
    try:
        for _ in range(rounds):
            store.ensure_writable()
    except UserError as exc:
        return str(exc)
    return ""


def test_ensure_writable_in_concurrent_processes(tmp_path: Path) -> None:
    """Runs and sweep workers started together into one new results folder all start: each
    write probe is their own, so one process never deletes another's probe under it."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        errors = pool.starmap(_probe_repeatedly, [(str(tmp_path / "results"), 400)] * 4)
    assert errors == ["", "", "", ""]
    assert list((tmp_path / "results" / "runs").iterdir()) == []  # no probe left behind
