"""INbreast: semicolon CSV, plist ROIs, name normalisation, point disks, cluster/calc modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.real import RealDomain
from datasets.real.bindings import Binding
from datasets.real.inbreast import draw_mask, normalise_name, parse_file_name, parse_points
from tests.real_cli import bench, config, smoke_run
from tests.real_fixtures import inbreast_tree

__all__ = ["config"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inbreast")
    inbreast_tree(root)
    return root


def test_names_and_files() -> None:
    assert {normalise_name(n) for n in ("Calcification", "Calcifications ", "calcification")} \
        == {"calcification"}
    assert normalise_name("Espiculated Region") == normalise_name("Spiculated region")
    assert normalise_name("Assymetry") == "asymmetry" and normalise_name("Point 3") == "point"
    assert normalise_name("") == "unnamed"
    assert parse_file_name("20586908_6c613a14b80a8591_MG_R_ML_ANON.dcm") == {
        "file_name": "20586908", "patient": "6c613a14b80a8591", "laterality": "R",
        "view": "MLO"}
    assert parse_points(["(12.5, 3.25)"]).tolist() == [[3.25, 12.5]]  # (x, y) -> (row, col)


def test_point_calcification_is_a_disk_of_physical_radius() -> None:
    rois = [("calcification", np.array([[20.0, 20.0]]))]
    m = draw_mask(rois, (40, 40), (0.07, 0.07), "calc", 0.2, 5.0)
    area_mm2 = m.sum() * 0.07 * 0.07
    assert area_mm2 == pytest.approx(np.pi * 0.2**2, rel=0.35)
    coarse = draw_mask(rois, (40, 40), (0.14, 0.14), "calc", 0.2, 5.0)
    assert coarse.sum() < m.sum()  # same physical disk, fewer coarse pixels


def test_cluster_hull_when_no_cluster_roi() -> None:
    calcs = [("calcification", np.array([[r, c]], float)) for r, c in ((10, 10), (10, 20),
                                                                       (20, 15))]
    far = [("calcification", np.array([[80.0, 80.0]]))]
    m = draw_mask(calcs + far, (100, 100), (0.1, 0.1), "cluster", 0.2, 5.0)
    assert m[14, 15] == 1  # inside the hull, between the calcifications
    assert m[80, 80] == 0  # an isolated calcification is not a cluster


def test_modes_end_to_end(tree: Path, tmp_path: Path, config: Path) -> None:
    res = bench("data", "add", "inbreast", "--format", "inbreast", "--root", str(tree),
                "--mask-mode", "calc")
    assert res.exit_code == 0, res.output
    res = bench("data", "verify", "inbreast")
    assert res.exit_code == 1 and "missing from AllDICOMs" in res.output
    assert "MONOCHROME1" in res.output and "window SIGMOID" in res.output
    assert "0.07 x 0.07" in res.output
    res = smoke_run("inbreast", tmp_path / "results", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    cluster = RealDomain(Binding("a", "inbreast", str(tree), {"tiles": 1}))
    calc = RealDomain(Binding("b", "inbreast", str(tree), {"tiles": 1, "mask_mode": "calc"}))
    with pytest.warns(UserWarning):
        dc, dk = cluster.load(64, tmp_path / "c"), calc.load(64, tmp_path / "c")
    assert dc.image_ids == dk.image_ids and len(dc) == 8
    assert np.asarray(dc.masks).sum() > np.asarray(dk.masks).sum() > 0  # outline > specks
    unannotated = dc.image_ids.index("20586907-full")
    assert not dc.masks[unannotated].any() and not dc.meta[unannotated]["annotated"]
    assert dc.meta[0]["birads"] == "2" and dc.meta[1]["density"] == "2"


def test_bad_mask_mode(tree: Path, config: Path) -> None:
    res = bench("data", "add", "x", "--format", "inbreast", "--root", str(tree),
                "--mask-mode", "speck")
    assert res.exit_code == 2 and "mask mode 'speck'" in res.output


def test_csv_file_name_disagreement_is_reported(tmp_path: Path) -> None:
    inbreast_tree(tmp_path)
    csv = tmp_path / "INbreast.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace(";R;CC;", ";L;CC;")  # first image: R CC in its file name
    csv.write_text("\n".join(lines) + "\n")
    cases, problems = RealDomain(Binding("i", "inbreast", str(tmp_path), {})).adapter.scan()
    assert len(cases) == 8
    assert any("INbreast.csv says L CC, the file name R CC" in str(p) for p in problems)
