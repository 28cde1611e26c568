"""Leaderboards from stored runs: layout, bold best, paper rows, missing-cell reasons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.leaderboard import build_tables, render_csv, render_latex, render_markdown
from benchmark.store import ResultsStore


def _run(store: ResultsStore, run_id: str, display: str, group: str, source: str,
         targets: dict[str, list[float]], kind: str = "synthetic", profile: str = "quick",
         state: str = "trained") -> None:
    store.write_info(run_id, {"method": display.lower(), "method_display": display,
                              "group": group, "source": source, "profile": profile, "seed": 0,
                              "data_kind": kind, "created": "2026-01-01T00:00:00"})
    store.update_status(run_id, state=state)
    for target, dscs in targets.items():
        rows = pd.DataFrame({
            "image_id": [f"{target}{i}" for i in range(len(dscs))], "DSC": dscs,
            "TPR": dscs, "Pr": dscs, "HD": [10.0 * (1 - d) for d in dscs],
            "ASSD": [1.0] * len(dscs), "method_display": display, "group": group,
            "source": source, "target": target, "target_kind": kind, "profile": profile,
            "seed": 0})
        store.add_cases(run_id, f"{target}@x", rows)


def _store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results")
    _run(store, "a", "Unet", "P1", "ffdm", {"ffdm": [0.9], "dbt": [0.4, 0.6]})
    _run(store, "b", "MLN-net", "ours", "ffdm", {"dbt": [0.7, 0.9]})
    _run(store, "c", "Swin-Unet", "P1", "ffdm", {}, state="failed")
    _run(store, "d", "Unet", "P1", "ffdm", {"dbt": [0.1]}, kind="real")
    return store


def test_tables_are_split_by_kind_and_exclude_in_domain(tmp_path: Path) -> None:
    tables = build_tables(_store(tmp_path))
    assert [(t.kind, t.profile) for t in tables] == [("real", "quick"), ("synthetic", "quick")]
    synthetic = tables[1]
    assert synthetic.pairings == [("ffdm", "dbt")]
    cell = synthetic.cells[("Unet", "ffdm", "dbt")]
    assert cell.summary is not None and cell.summary["DSC_mean"] == 50.0
    assert synthetic.cells[("Swin-Unet", "ffdm", "dbt")].reason == "failed"
    assert "**" not in render_markdown(tables[0])  # a lone method is not "best"


def test_rows_follow_paper_order_and_best_is_bold(tmp_path: Path) -> None:
    table = build_tables(_store(tmp_path), {"Resnet": ("P1", "resnet")})[1]
    assert [d for _, d in table.rows] == ["Unet", "Resnet", "Swin-Unet", "MLN-net"]
    md = render_markdown(table)
    assert "**80.00 ± 14.14**" in md  # MLN-net DSC is the best
    assert "| P1 | Resnet | not run |" in md


def test_paper_numbers_are_separate_rows(tmp_path: Path) -> None:
    table = build_tables(_store(tmp_path), with_paper=True)[1]
    assert ("dbt", "ffdm") in table.pairings
    md = render_markdown(table)
    assert "*MLN-net (paper)*" in md and "*78.91*" in md
    unet_row = next(line for line in md.splitlines() if line.startswith("| P1 | Unet |"))
    assert "37.32" not in unet_row  # the paper's value never enters our cell
    csv = render_csv(table)
    assert "paper (real data)" in csv and "published" in csv
    tex = render_latex(table)
    assert r"\textbf{" in tex and r"\textit{MLN-net (paper)}" in tex


def test_latest_run_wins(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _run(store, "a2", "Unet", "P1", "ffdm", {"dbt": [0.2]})
    info = store.read("a2").info
    info["created"] = "2027-01-01T00:00:00"
    store.write_info("a2", info)
    table = build_tables(store)[1]
    assert table.cells[("Unet", "ffdm", "dbt")].summary["DSC_mean"] == 20.0


def test_patient_and_pooled_aggregation_change_the_unit(tmp_path: Path) -> None:
    store = _store(tmp_path)
    image = build_tables(store, n_boot=20)[1]
    pooled = build_tables(store, aggregate="pooled", n_boot=20)[1]
    assert image.slug == "table1-synthetic-quick"
    assert pooled.slug == "table1-synthetic-quick-pooled"
    # no TP/FP/FN columns in these rows: pooled DSC falls back to the per-image mean
    assert pooled.cells[("Unet", "ffdm", "dbt")].summary["DSC_mean"] == 50.0
    assert "pooled over the summed confusion counts" in render_markdown(pooled)


def test_bad_layout_metric_and_selection_are_user_errors(tmp_path: Path) -> None:
    import pytest

    from benchmark.errors import UserError

    store = _store(tmp_path)
    for kwargs, text in (({"layout": "4"}, "--table '4'"), ({"metric": "IoU"}, "--metric"),
                         ({"selection": "best"}, "--select 'best'")):
        with pytest.raises(UserError, match=text):
            build_tables(store, **kwargs)


def test_avg_rank_column_and_ci_in_csv(tmp_path: Path) -> None:
    import pytest

    table = build_tables(_store(tmp_path), n_boot=50)[1]
    # MLN-net's means are higher, but two paired images can never be significant: a tie
    assert table.ranks == {"MLN-net": pytest.approx(1.0), "Unet": pytest.approx(1.0)}
    csv = render_csv(table)
    header = csv.splitlines()[0]
    assert "DSC_ci_lo" in header and "avg_rank" in header and "run_ids" in header
