"""Honest leaderboards: "not learned" cells in every format, CIs with seeds, and ranks that
treat non-significant differences as ties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.html_report import render_table
from benchmark.leaderboard import build_tables, render_csv, render_latex, render_markdown
from benchmark.stats import per_image, significance_ranks
from benchmark.store import ResultsStore


def _write(store: ResultsStore, run_id: str, display: str, level: float, *, seed: int = 0,
           val: float = 0.5, background: float = 0.1, n: int = 30) -> None:
    """A trained run with `n` cross-domain images around DSC `level` (per-seed noise)."""
    store.write_info(run_id, {
        "method": display.lower(), "method_display": display, "group": "P1",
        "source": "ffdm", "profile": "quick", "seed": seed, "data_kind": "synthetic",
        "created": "2026-01-01T00:00:00",
        "training": {"best_val_dsc": val, "all_background_val_dsc": background}})
    store.update_status(run_id, state="trained")
    rng = np.random.default_rng(seed * 100 + len(display))
    dsc = np.clip(level + rng.normal(0, 0.03, n), 0, 1)
    store.add_cases(run_id, "dbt@x", pd.DataFrame({
        "image_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
        "DSC": dsc, "TPR": dsc, "Pr": dsc, "HD": 10 * (1 - dsc), "ASSD": 2 * (1 - dsc),
        "method_display": display, "group": "P1", "source": "ffdm", "target": "dbt",
        "target_kind": "synthetic", "profile": "quick", "seed": seed}))


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results")
    _write(s, "u", "Unet", 0.60)
    _write(s, "r", "Resnet", 0.601)  # indistinguishable from Unet
    _write(s, "m", "M-net", 0.30)  # clearly worse
    _write(s, "w", "Swin-Unet", 0.25, val=0.1, background=0.1)  # never beat all-background
    return s


def test_not_learned_is_marked_in_every_format_and_not_ranked(store: ResultsStore) -> None:
    table = build_tables(store, n_boot=20)[0]
    assert "Swin-Unet" not in table.ranks
    assert table.ranks["M-net"] > table.ranks["Unet"]
    md, tex, csv = render_markdown(table), render_latex(table), render_csv(table)
    swin_md = next(line for line in md.splitlines() if "| Swin-Unet |" in line)
    assert "not learned (25." in swin_md and "**" not in swin_md
    assert "not learned" in next(line for line in tex.splitlines() if "Swin-Unet" in line)
    rows = pd.read_csv(pd.io.common.StringIO(csv))
    assert rows.set_index("method").loc["Swin-Unet", "status"] == "not learned"
    assert "not learned (" in render_table(table)


def test_non_significant_differences_tie(store: ResultsStore) -> None:
    table = build_tables(store, n_boot=20)[0]
    assert table.ranks["Unet"] == table.ranks["Resnet"] == 1.0
    assert table.ranks["M-net"] == 3.0  # both others significantly better on every metric


def test_significance_ranks_directly() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 40)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return per_image(pd.DataFrame({"image_id": [f"i{i}" for i in range(40)],
                                       "DSC": values, "TPR": values, "Pr": values,
                                       "HD": values, "ASSD": values}), "DSC")

    ranks = significance_ranks({"a": frame(base + 0.2), "b": frame(base + 0.001 * rng.normal(
        size=40)), "c": frame(base)}, "DSC", "image")
    assert ranks == {"a": 1, "b": 2, "c": 2}
    hd = significance_ranks({"a": frame(base + 0.2), "c": frame(base)}, "HD", "image")
    assert hd == {"a": 2, "c": 1}  # lower is better for distances


def test_two_seeds_show_the_ci(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    _write(store, "u0", "Unet", 0.6, seed=0)
    _write(store, "u1", "Unet", 0.5, seed=1)
    table = build_tables(store, n_boot=50)[0]
    text = render_markdown(table)
    cell = table.cells[("Unet", "ffdm", "dbt")].summary
    assert f"[{cell['DSC_ci_lo']:.2f}, {cell['DSC_ci_hi']:.2f}] (2 seeds)" in text
    assert "resampling patients" in text


def test_bench_run_table_says_not_learned(tmp_path: Path) -> None:
    """`bench run`'s result table ends with one line pointing to the docs when the run never
    beat the all-background validation score, and says nothing when it did."""
    import json
    from types import SimpleNamespace

    from benchmark import cli
    from benchmark.aggregate import summarize

    rows = pd.DataFrame({"DSC": [0.0, 1.0], "TPR": [0.0, np.nan], "Pr": [np.nan, np.nan],
                         "HD": [5.0, 0.0], "ASSD": [1.0, 0.0]})
    summary = pd.DataFrame([{"target": "dbt", **summarize(rows)}])
    for best, expect in ((0.25, True), (0.40, False)):
        (tmp_path / "run.json").write_text(json.dumps({"training": {
            "best_val_dsc": best, "all_background_val_dsc": 0.25}}))
        with cli.console.capture() as cap:
            cli._print_summary(SimpleNamespace(summary=summary, run_dir=tmp_path), "t")
        text = cap.get()
        assert ("NOT LEARNED" in text and "docs/guide/not-learned.md" in text) == expect
