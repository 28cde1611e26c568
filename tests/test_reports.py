"""Reports from small fake stores: layouts, selection, markers, sections, plots, the HTML page
(escaping, provenance) and a headless-Chromium screenshot of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.collect import collect
from benchmark.errors import UserError
from benchmark.html_report import build_html
from benchmark.leaderboard import build_tables, render_latex, render_markdown
from benchmark.lesions import froc_candidates
from benchmark.plots import all_plots
from benchmark.reports import LeaderboardRequest, make_leaderboards
from benchmark.sections import branch_table, cost_table, lesion_table, render_branch_markdown
from benchmark.store import ResultsStore

EVIL = "<script>alert('x')</script>"


def _rows(dsc: np.ndarray, target: str, checkpoint: str = "best") -> pd.DataFrame:
    n = len(dsc)
    tp = np.round(dsc * 50)
    return pd.DataFrame({
        "image_id": [f"{target}-{i}" for i in range(n)],
        "patient_id": [f"{target}-p{i // 2}" for i in range(n)],
        "DSC": dsc, "TPR": dsc, "Pr": dsc, "HD": 10 * (1 - dsc), "ASSD": 2 * (1 - dsc),
        "TP": tp, "FP": 50 - tp, "FN": 50 - tp,
        "lesion_n_ref": 1, "lesion_n_pred": 1, "lesion_tp": (dsc > 0.5).astype(int),
        "lesion_fp": (dsc <= 0.5).astype(int), "lesion_fn": (dsc <= 0.5).astype(int),
        "lesion_sensitivity": (dsc > 0.5).astype(float),
        "lesion_precision": (dsc > 0.5).astype(float), "lesion_f1": (dsc > 0.5).astype(float),
        "infer_seconds": 0.01, "peak_mem_mb": 100.0, "peak_mem_kind": "cpu_peak_rss",
        "target_fingerprint": f"fp-{target}", "checkpoint": checkpoint,
        "info_branch": np.where(dsc > 0.5, "b1", "b2")})


def _run(store: ResultsStore, run_id: str, display: str, group: str, source: str,
         targets: dict[str, float], seed: int = 0, last_shift: float | None = None,
         n: int = 12) -> None:
    store.write_info(run_id, {
        "method": display.lower(), "method_display": display, "group": group,
        "source": source, "profile": "quick", "seed": seed, "data_kind": "synthetic",
        "created": "2026-01-01T00:00:00", "num_parameters": 1_000_000 + len(display),
        "timings": {"train_seconds": 12.5}, "code_version": "0.1.0+abc",
        "git_commit": "deadbeef", "data_fingerprints": {source: f"fp-{source}"}})
    store.update_status(run_id, state="trained")
    rng = np.random.default_rng(abs(hash((run_id, seed))) % 2**32)
    for target, level in targets.items():
        dsc = np.clip(level + rng.normal(0, 0.05, n), 0, 1)
        for ckpt, shift in (("best", 0.0), ("last", last_shift)):
            if shift is None:
                continue
            rows = _rows(np.clip(dsc + shift, 0, 1), target, ckpt).assign(
                method=display.lower(), method_display=display, group=group, source=source,
                target=target, target_kind="synthetic", profile="quick", seed=seed)
            key = f"{target}@x" + ("" if ckpt == "best" else "#last")
            store.add_cases(run_id, key, rows)
            prob = np.zeros((20, 20))
            prob[2:5, 2:5] = 0.9
            ref = np.zeros((20, 20), bool)
            ref[2:6, 2:6] = True
            cands = pd.concat([froc_candidates(prob, ref, (0.5, 0.5), i)
                               for i in rows["image_id"]], ignore_index=True)
            store.add_candidates(run_id, key, cands.assign(run_id=run_id, target=target,
                                                           checkpoint=ckpt))


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results")
    _run(s, "u0", "Unet", "P1", "ffdm", {"ffdm": 0.8, "dbt": 0.4, "cbis-ddsm": 0.3},
         last_shift=0.2)
    _run(s, "u1", "Unet", "P1", "ffdm", {"ffdm": 0.8, "dbt": 0.45}, seed=1)
    _run(s, "m0", "MLN-net", "ours", "ffdm", {"dbt": 0.8, "cbis-ddsm": 0.5})
    _run(s, "c0", "Unet", "P1", "cbis-ddsm", {"ffdm": 0.3, "dbt": 0.5})
    _run(s, "a0", "Unet-E", "ablation", "dbt", {"ffdm": 0.6})
    _run(s, "e0", EVIL, "plugin", "ffdm", {"dbt": 0.1, EVIL: 0.2})
    return s


def test_seeds_baseline_markers_and_ranks(store: ResultsStore) -> None:
    table = build_tables(store, baseline="unet", n_boot=200)[0]
    unet = table.cells[("Unet", "ffdm", "dbt")].summary
    assert unet["n_seeds"] == 2 and unet["DSC_ci_lo"] < unet["DSC_mean"] < unet["DSC_ci_hi"]
    assert table.markers[("MLN-net", "ffdm", "dbt", "DSC")].marker("DSC") == "↑"
    assert table.markers[(EVIL, "ffdm", "dbt", "DSC")].marker("DSC") == "↓"
    md = render_markdown(table)
    assert "(2 seeds)" in md and "↑" in md and "Holm" in md
    assert table.ranks["MLN-net"] < table.ranks["Unet"] < table.ranks[EVIL]
    assert r"$\uparrow$" in render_latex(table)
    with pytest.raises(UserError, match="--baseline 'nope'"):
        build_tables(store, baseline="nope", n_boot=10)


def test_selection_last_and_oracle(store: ResultsStore) -> None:
    best = build_tables(store, n_boot=10)[0].cells[("Unet", "ffdm", "cbis-ddsm")].summary
    last = build_tables(store, selection="last", n_boot=10)[0]
    lsum = last.cells[("Unet", "ffdm", "cbis-ddsm")].summary
    assert lsum["DSC_mean"] == pytest.approx(best["DSC_mean"] + 20, abs=1.0)
    assert last.cells[("MLN-net", "ffdm", "dbt")].summary is None  # no last.pt rows
    oracle = build_tables(store, selection="oracle", n_boot=10)[0]
    assert oracle.slug.endswith("-oracle") and "ORACLE" in render_markdown(oracle)
    assert oracle.cells[("Unet", "ffdm", "cbis-ddsm")].summary["DSC_mean"] == lsum["DSC_mean"]


def test_table2_pools_ffdm_dbt_and_maps_paper(store: ResultsStore) -> None:
    table = build_tables(store, layout="2", with_paper=True, n_boot=10)[0]
    assert table.pairings == [("cbis-ddsm", "ffdm+dbt"), ("ffdm", "cbis-ddsm"),
                              ("dbt", "cbis-ddsm")]
    pooled = table.cells[("Unet", "cbis-ddsm", "ffdm+dbt")].summary
    assert pooled["n"] == 24  # 12 ffdm + 12 dbt test images of the CBIS-DDSM run
    assert table.paper[("Unet", "cbis-ddsm", "ffdm+dbt")]["DSC"] == 26.97
    assert table.paper[("Unet", "dbt", "cbis-ddsm")]["DSC"] == 19.92


def test_ablation_and_matrix_layouts(store: ResultsStore) -> None:
    abl = build_tables(store, layout="ablation", with_paper=True, n_boot=10)[0]
    names = [d for _, d in abl.rows]
    assert names[:7] == ["Basenet", "Basenet-S", "MLN-net-R", "Unet-R", "MLN-net-E",
                         "Unet-E", "MLN-net"] and names[-1] == "MLN-net+"
    assert abl.metrics == ("DSC", "HD")
    assert abl.cells[("Unet-E", "dbt", "ffdm")].summary is not None
    assert abl.cells[("Basenet", "ffdm", "dbt")].reason == "not run"
    assert "Unet-E (paper)" in render_markdown(abl) and "Unet" not in [d for _, d in abl.rows]
    mat = build_tables(store, layout="matrix", metric="HD", n_boot=10)[0]
    assert ("ffdm", "ffdm") in mat.pairings  # the in-domain diagonal
    assert "Unet-E" in [d for _, d in mat.rows] and "Basenet" not in [d for _, d in mat.rows]
    assert "| ffdm |" in render_markdown(mat) and "HD: source x target" in render_markdown(mat)


def test_sections_costs_lesions_branches(store: ResultsStore) -> None:
    got = collect(store)
    costs = cost_table(got)
    row = costs[(costs["method"] == "Unet") & (costs["source"] == "ffdm")].iloc[0]
    assert row["runs"] == 2 and row["infer_ms"] == pytest.approx(10.0)
    assert row["params"] == 1_000_004 and row["peak_mem_kind"] == "cpu_peak_rss"
    les = lesion_table(got)
    m = les[(les["method_display"] == "MLN-net") & (les["target"] == "dbt")].iloc[0]
    assert m["froc_score"] == pytest.approx(100.0)  # every image's candidate hits
    assert m["lesions"] == 12
    br = branch_table(got)
    assert br.groupby(["method_display", "source", "target"])["share"].sum().round(6).eq(
        100).all()
    # numeric branch ids beside runs without branches (NaN) print as integers, with names
    got.cases = got.cases.assign(
        info_branch=np.where(got.cases["method_display"] == "MLN-net",
                             (got.cases["DSC"] > 0.5).astype(float), np.nan),
        info_branch_name=np.where(got.cases["method_display"] == "MLN-net",
                                  np.where(got.cases["DSC"] > 0.5, "dissimilar", "similar"),
                                  None))
    md = render_branch_markdown(branch_table(got))
    assert "| 1 (dissimilar) |" in md and "| 0 (similar) |" in md
    assert "| 1.0 (" not in md and "| 0.0 (" not in md


def test_plots_are_written(store: ResultsStore, tmp_path: Path) -> None:
    made = all_plots(collect(store), tmp_path / "figs", "synthetic", "quick")
    assert set(made) == {"heatmap", "distributions", "gap", "froc"}
    for path in made.values():
        with Image.open(path) as im:
            assert im.size[0] > 200 and np.asarray(im.convert("L")).std() > 5


def test_make_leaderboards_writes_md_with_sections(store: ResultsStore, tmp_path: Path) -> None:
    req = LeaderboardRequest(store.root, tmp_path / "out", layout="1", costs=True,
                             lesions=True, branches=True, n_boot=20, ci=True)
    shown, paths = make_leaderboards(req, {})
    text = paths[0].read_text()
    assert "95% percentile-bootstrap CI" in text
    mln = next(line for line in text.splitlines() if line.startswith("| ours | MLN-net |"))
    assert mln.count("[") == 10  # every metric of both pairings carries its CI
    assert "### Cost" in text and "### Lesion" in text and "### Branch choice" in text
    assert shown.startswith("### Table 1 layout")
    with pytest.raises(UserError, match="--aggregate"):
        make_leaderboards(LeaderboardRequest(store.root, tmp_path, aggregate="x"), {})


def screenshot(page: Path, shot: Path, size: tuple[int, int]) -> Path:
    """Headless Chromium's screenshot of `page` in a `size` window, with a throw-away profile
    and no network use (what a reader's browser shows, offline)."""
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
             f"--window-size={size[0]},{size[1]}", page.as_uri()],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile})
    assert shot.is_file(), res.stderr[-2000:]
    return shot


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: `make test` installs it (apt-get install chromium)"
    return exe


def test_html_escapes_and_has_provenance_and_renders(store: ResultsStore,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "html"
    page = build_html(store, out, baseline="unet", n_boot=50).read_text()
    assert EVIL not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only our own sort script
    assert "id='run-u0'" in page and "href='#run-u0'" in page  # cell -> provenance row
    assert "deadbeef" in page and "fp-dbt" in page and "0.1.0+abc" in page
    # no outside resource: a link would load one (base64 image data may spell "http" by chance)
    body = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.split("<body>")[1])
    assert "data:image/png;base64," in page and "http" not in body
    assert "Unet (paper)" in page and "ORACLE" in page.upper()
    shot = screenshot(out / "index.html", tmp_path / "shot.png", (1400, 1000))
    with Image.open(shot) as im:
        assert im.size == (1400, 1000)
        gray = np.asarray(im.convert("L"), float)
    assert gray.std() > 10 and (gray < 100).mean() > 0.005  # text and tables, not blank


def test_empty_store_and_bad_format_are_user_errors(tmp_path: Path) -> None:
    for fmt, text in (("html", "no runs under"), ("md", "no finished cross-domain"),
                      ("xls", "--format 'xls'")):
        with pytest.raises(UserError, match=text):
            make_leaderboards(LeaderboardRequest(tmp_path / "none", tmp_path, fmt=fmt), {})
    with pytest.raises(UserError, match="--n-boot 0"):
        make_leaderboards(LeaderboardRequest(tmp_path, tmp_path, n_boot=0), {})
