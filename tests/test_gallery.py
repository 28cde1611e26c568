"""The case gallery (`bench show cases`, `bench leaderboard --format html --cases`): two tiny
smoke-profile runs on the toy domains, the cases chosen from their stored per-case rows, the
figure's layout and PNG, the CLI's one-line errors and the HTML page in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.cli import run_app
from benchmark.errors import UserError
from benchmark.gallery import (
    CaseRule,
    GalleryRequest,
    case_gallery,
    figure_pixels,
    parse_cases,
    select_cases,
)
from benchmark.progress import NullReporter
from benchmark.reports import LeaderboardRequest, make_leaderboards
from benchmark.store import ResultsStore
from tests.test_reports import screenshot
from tests.toy import ToyDomain

TARGET = "toy-gallery"
METHODS = ["unet", "mnet"]


class SparseToy(ToyDomain):
    """The inverted toy domain with more patients, where every third image has no lesion (an
    empty reference), so the empty-reference rule has something to leave out."""

    def fingerprint(self) -> str:
        """Another data version than the plain toy domain's."""
        return super().fingerprint() + "-sparse"

    def load(self, image_size: int, cache_dir: Path, progress: Any = None) -> Any:
        """The toy images, with the masks of images 0, 3, 6, ... emptied."""
        data = super().load(image_size, cache_dir, progress)
        data.masks[::3] = 0
        return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, toy_domains: dict[str, object],
         session_cache: Path) -> dict[str, Any]:
    """unet and mnet trained on 'toy' (smoke profile) and evaluated on TARGET."""
    import torch

    from benchmark.registry import DOMAINS, DomainInfo, Provider
    from benchmark.runner import RunRequest, run

    if TARGET not in DOMAINS.all():
        dom = SparseToy(TARGET, n_patients=20, invert=True, seed=2)
        DOMAINS.add(TARGET, DomainInfo(TARGET, lambda: dom, Provider("tests", "0", "toy")))
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("gallery") / "results"
    ids = {}
    for method in METHODS:
        outcome = run(RunRequest(method=method, source="toy", targets=[TARGET],
                                 profile="smoke", results_dir=results,
                                 cache_dir=session_cache), NullReporter())
        ids[method] = outcome.run_id
    store = ResultsStore(results)
    rows = {m: store.cases(r).query("target == @TARGET").set_index("image_id")
            for m, r in ids.items()}
    return {"results": results, "cache": session_cache, "ids": ids, "rows": rows}


def _request(runs: dict[str, Any], **kw: Any) -> GalleryRequest:
    """A gallery request for the module's two runs."""
    return GalleryRequest(source="toy", target=TARGET, methods=METHODS, profile="smoke",
                          results_dir=runs["results"], cache_dir=runs["cache"],
                          device="cpu", **kw)


def test_layout_labels_ties_and_png(runs: dict[str, Any], tmp_path: Path) -> None:
    rows = runs["rows"]["unet"]
    assert rows["ref_empty"].any() and (~rows["ref_empty"]).sum() >= 3  # the fixture's premise
    out = tmp_path / "g.png"
    layout = case_gallery(_request(runs, cases="worst:1,median:1,best:1", out=out),
                          NullReporter())
    assert layout.columns == ["image", "reference", "Unet", "M-net"]
    assert len(layout.rows) == 3 == len(set(layout.rows))
    assert layout.row_rules == ["worst", "median", "best"]
    assert not rows.loc[layout.rows, "ref_empty"].any()  # empty references are no candidates
    assert set(layout.dsc_labels) == {(i, m) for i in layout.rows for m in METHODS}
    for (image_id, method), value in layout.dsc_labels.items():
        assert value == pytest.approx(100 * runs["rows"][method].at[image_id, "DSC"])
    unet = [layout.dsc_labels[(i, "unet")] for i in layout.rows]
    nonempty = 100 * rows.loc[~rows["ref_empty"], "DSC"]
    assert unet[0] == nonempty.min() and unet[2] == nonempty.max()
    assert not [n for n in layout.notes if "warning" in n]  # regenerated DSC == stored DSC
    assert "worst:1,median:1,best:1 by Unet's per-case DSC; ties by image id" in layout.title
    again = case_gallery(_request(runs, cases="worst:1,median:1,best:1", out=out),
                         NullReporter())
    assert again.rows == layout.rows and again.dsc_labels == layout.dsc_labels
    with Image.open(out) as im:
        assert im.size == figure_pixels(3, 4)
        width, height = im.size
        gray = np.asarray(im.convert("RGB"), float)
    assert 1.1 < width / height < 1.6  # 4 columns over 3 rows, plus the title margin
    assert gray.std() > 10
    magenta = (gray[..., 0] > 200) & (gray[..., 1] < 120) & (gray[..., 2] > 120)
    cyan = (gray[..., 0] < 80) & (gray[..., 1] > 180) & (gray[..., 2] > 220)
    assert cyan.sum() > 20  # the reference contours are drawn
    assert magenta.sum() > 0 or all(runs["rows"][m].loc[layout.rows, "pred_empty"].all()
                                    for m in METHODS)


def test_disagree_takes_what_exists_and_include_empty(runs: dict[str, Any],
                                                      tmp_path: Path) -> None:
    rows = runs["rows"]
    layout = case_gallery(_request(runs, cases="disagree:40", out=tmp_path / "d.png"),
                          NullReporter())
    nonempty = sorted(rows["unet"].index[~rows["unet"]["ref_empty"]])
    spread = {i: abs(rows["unet"].at[i, "DSC"] - rows["mnet"].at[i, "DSC"]) for i in nonempty}
    assert layout.rows == sorted(nonempty, key=lambda i: (-round(100 * spread[i], 9), i))
    assert any(n.startswith("disagree:40: only") for n in layout.notes)
    everything = case_gallery(_request(runs, cases="worst:40", include_empty=True,
                                       out=tmp_path / "e.png"), NullReporter())
    assert sorted(everything.rows) == sorted(rows["unet"].index)
    picked = case_gallery(_request(runs, image_ids=[nonempty[-1], nonempty[0]],
                                   reference="mnet", out=tmp_path / "i.png"), NullReporter())
    assert picked.rows == [nonempty[-1], nonempty[0]] and picked.row_rules == ["given"] * 2


def test_a_changed_dsc_is_shown_as_stored_and_warned_about(runs: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """The cell shows the stored DSC; a regenerated prediction that disagrees with it by more
    than 0.01 points is a warning naming the run."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(runs["results"], results)
    run_id = runs["ids"]["mnet"]
    path = results / "runs" / run_id / "per_case.parquet"
    frame = pd.read_parquet(path)
    image_id = str(runs["rows"]["mnet"].index[~runs["rows"]["mnet"]["ref_empty"]][0])
    hit = (frame["image_id"] == image_id) & (frame["target"] == TARGET)
    frame.loc[hit, "DSC"] += 0.005  # half a percentage point
    frame.to_parquet(path, index=False)
    req = _request(runs, image_ids=[image_id], out=tmp_path / "w.png")
    req.results_dir = results
    layout = case_gallery(req, NullReporter())
    stored = 100 * runs["rows"]["mnet"].at[image_id, "DSC"] + 0.5
    assert layout.dsc_labels[(image_id, "mnet")] == pytest.approx(stored)
    warnings = [n for n in layout.notes if n.startswith("warning")]
    assert len(warnings) == 1 and run_id in warnings[0] and image_id in warnings[0]


def test_selection_breaks_ties_by_image_id() -> None:
    dsc = pd.DataFrame({"a": [50.0, 50.0, 10.0, 90.0, 50.0], "b": [50.0, 0.0, 10.0, 90.0, 100.0]},
                       index=["e", "d", "c", "b", "a"])
    rows, why, notes = select_cases(dsc, [CaseRule("median", 2), CaseRule("worst", 1),
                                          CaseRule("best", 1), CaseRule("disagree", 3)],
                                    "a", set(dsc.index))
    assert rows == ["a", "d", "c", "b", "e"]  # median ties by id; then no image twice
    assert why == ["median", "median", "worst", "best", "disagree"]
    assert notes == ["disagree:3: only 1 of the 5 candidate images left (not chosen yet; a "
                     "non-empty reference unless --include-empty); showing 1"]
    assert select_cases(dsc, [CaseRule("best", 2)], "a", {"a", "c", "e"})[0] == ["a", "e"]


@pytest.mark.parametrize(("spec", "says"), [
    ("worst", "not RULE:K"), ("worts:3", "did you mean 'worst'"), ("worst:0", ">= 1"),
    ("best:x", ">= 1"), ("worst:2,worst:1", "given twice"), ("worst:61", "at most 60"),
    ("", "not RULE:K")])
def test_bad_case_specs(spec: str, says: str) -> None:
    with pytest.raises(UserError, match=re.escape(says)):
        parse_cases(spec)


def test_cli_end_to_end_and_one_line_errors(runs: dict[str, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    common = ["show", "cases", "--source", "toy", "--target", TARGET, "--methods",
              "unet,mnet", "--profile", "smoke", "--results-dir", str(runs["results"]),
              "--cache-dir", str(runs["cache"]), "--device", "cpu", "--threads", "1",
              "--no-progress"]
    assert run_app([*common, "--cases", "best:2"]) == 0
    out = capsys.readouterr().out
    default = runs["results"] / "figures" / f"cases-toy-{TARGET}-s0.png"
    assert default.is_file() and f"wrote {default}" in out.replace("\n", "")
    assert "2 case(s) x 4 columns" in out
    for extra, says in ((["--cases", "worst:3;best:3"], "--cases 'worst:3;best:3'"),
                        (["--image-ids", "P01-v0"], "did you mean"),
                        (["--cases", "best:1", "--image-ids", "x"], "not both"),
                        (["--reference", "unte"], "did you mean 'unet'"),
                        (["--seed", "7"], "no run of unet on 'toy'")):
        assert run_app([*common, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, (extra, err)
    assert run_app([*common[:7], "unet,mnte", *common[8:]]) == 2  # the registry's hint
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'mnet'" in err, err


def test_html_leaderboard_embeds_the_gallery(runs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "html"
    req = LeaderboardRequest(runs["results"], out, fmt="html", n_boot=20, cases=True,
                             cache_dir=runs["cache"], device="cpu")
    _, paths = make_leaderboards(req, {})
    png = out / f"cases-synthetic-smoke-toy-{TARGET}-s0.png"
    assert paths == [out / "index.html", png] and png.is_file()
    page = (out / "index.html").read_text()
    assert "<h2 id='cases'>Case galleries</h2>" in page
    img = re.search(r"<img alt='case gallery toy → toy-gallery, seed 0, profile smoke "
                    r"\(synthetic data\)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
    assert img, page[page.index("Case galleries"):][:500]
    with pytest.raises(UserError, match="--cases embeds"):
        make_leaderboards(LeaderboardRequest(runs["results"], out, fmt="md", cases=True), {})
    # a window tall enough for the gallery
    shot = screenshot(out / "index.html", tmp_path / "shot.png", (1400, 10000))
    with Image.open(shot) as im:
        assert im.size == (1400, 10000)
        rgb = np.asarray(im.convert("RGB"), float)
    gray = rgb.mean(axis=2)
    assert gray.std() > 10 and (gray < 100).mean() > 0.005  # text and figures, not blank
    cyan = (rgb[..., 0] < 80) & (rgb[..., 1] > 180) & (rgb[..., 2] > 220)
    assert cyan.sum() > 100  # the gallery's reference contours were rendered in the page
