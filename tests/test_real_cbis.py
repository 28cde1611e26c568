"""CBIS-DDSM (TCIA DICOM, both folder layouts) and its JPEG re-packaging, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets.real import RealDomain
from datasets.real.bindings import Binding
from datasets.real.cbis_ddsm import read_case_csv
from datasets.splits import make_split
from tests.real_cli import bench, config, smoke_run
from tests.real_fixtures import cbis_ddsm_jpeg_tree, cbis_ddsm_tree

__all__ = ["config"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One TCIA-layout CBIS-DDSM tree shared by this module."""
    root = tmp_path_factory.mktemp("cbis")
    return root, cbis_ddsm_tree(root)


def _load(root: Path, tmp: Path, **options: object) -> tuple[RealDomain, object]:
    dom = RealDomain(Binding("cbis", "cbis-ddsm", str(root), dict(options, tiles=1)))
    with pytest.warns(UserWarning):
        return dom, dom.load(32, tmp)


def test_csv_pitfalls(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    calc = read_case_csv(root / "calc_case_description_train_set.csv")
    mass = read_case_csv(root / "mass_case_description_train_set.csv")
    assert "breast density" in calc.columns and "breast density" in mass.columns
    assert not calc["ROI mask file path"].str.endswith("\n").any()
    assert not mass["cropped image file path"].str.endswith("\n").any()


def test_layouts_merge_and_mismatch(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = tree
    dom, data = _load(root, tmp_path)
    ids = set(data.image_ids)
    # classic (P_00003) and descriptive (P_00001) layouts both found
    assert "Calc-Training_P_00003_LEFT_MLO-full" in ids
    merged = data.image_ids.index(f"{expected['merged']}-full")
    assert data.meta[merged]["n_abnormalities"] == 2
    # both abnormalities (rows 10-17 and 35-42 of 64) are in the one mask
    top, bottom = data.masks[merged][:16].any(), data.masks[merged][16:].any()
    assert top and bottom
    assert f"{expected['size_mismatch']}-full" not in ids
    assert f"{expected['truncated']}-full" not in ids
    reasons = " ".join(str(p) for p in dom.problems)
    assert "mask size (64, 50) differs" in reasons and "never resized" in reasons
    assert "truncated" in reasons and "series is missing" in reasons
    assert all(m["abnormality"] == "calc" for m in data.meta)  # calc by default
    assert all(m["spacing_source"] == "dataset default" for m in data.meta)


def test_masses_are_an_option(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tree
    _, data = _load(root, tmp_path, abnormality="mass")
    assert data.image_ids == ["Mass-Training_P_00077_LEFT_CC-full"]
    _, both = _load(root, tmp_path / "b", abnormality="both")
    assert {m["abnormality"] for m in both.meta} == {"calc", "mass"}


def test_official_split_is_honoured(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tree
    dom, data = _load(root, tmp_path)
    split = make_split(data, dom.fingerprint(), (0.7, 0.1, 0.2), 0, tmp_path)
    test_patients = {data.patient_ids[i] for i in split["test"]}
    assert test_patients == {"P_00101", "P_00102", "P_00103"}
    train_val = {data.patient_ids[i] for i in np.concatenate([split["train"], split["val"]])}
    assert not train_val & test_patients


def test_add_verify_run(tree: tuple[Path, dict], config: Path, tmp_path: Path) -> None:
    root, _ = tree
    res = bench("data", "add", "cbis-ddsm", "--format", "cbis-ddsm", "--root", str(root))
    assert res.exit_code == 0, res.output
    res = bench("data", "verify", "cbis-ddsm")
    assert res.exit_code == 1 and "3 problem(s)" in res.output, res.output
    assert "CBIS-DDSM default" in res.output and "0.05 x 0.05" in res.output
    res = smoke_run("cbis-ddsm", tmp_path / "results", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" not in res.output and "CBIS-DDSM default 0.05 mm" in res.output
    run_dir = next((tmp_path / "results" / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["data_fingerprints"]["cbis-ddsm"]


def test_jpeg_package(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "kaggle"
    cbis_ddsm_jpeg_tree(root)
    res = bench("data", "add", "cbis-jpeg", "--format", "cbis-ddsm-jpeg", "--root", str(root))
    assert res.exit_code == 0, res.output
    res = bench("data", "verify", "cbis-jpeg")
    assert res.exit_code == 1 and "1 problem(s)" in res.output
    assert "no full-mammogram JPEG" in res.output and "JPEG 8-bit (lossy)" in res.output
    dom = RealDomain(Binding("j", "cbis-ddsm-jpeg", str(root), {"tiles": 1}))
    with pytest.warns(UserWarning):
        data = dom.load(32, tmp_path / "cache")
    assert "Calc-Training_P_00002_LEFT_CC-full" in data.image_ids  # the `Unknown` mask row
    assert all(m.any() for m in data.masks)
    assert sorted(set(data.official_split or [])) == ["test", "train"]
    res = smoke_run("cbis-jpeg", tmp_path / "results", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" not in res.output
    run_dir = next((tmp_path / "results" / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["data_fingerprints"]["cbis-jpeg"]


def test_unrecognised_folder_names_fall_back_to_headers(tmp_path: Path) -> None:
    root = tmp_path / "renamed"
    cbis_ddsm_tree(root)
    series = next((root / "CBIS-DDSM" / "Calc-Training_P_00002_RIGHT_MLO").glob("*/*"))
    series.rename(series.parent / "downloaded-somewhere-else")
    _, data = _load(root, tmp_path / "cache")
    assert "Calc-Training_P_00002_RIGHT_MLO-full" in data.image_ids


def test_patient_in_both_official_splits_goes_to_test(tmp_path: Path) -> None:
    dom = RealDomain(Binding("x", "cbis-ddsm", str(tmp_path), {}))
    pids = ["P_1", "P_1", "P_2"]
    with pytest.warns(UserWarning, match="1 official-train image"):
        out = dom._one_split_per_patient(pids, ["train", "test", "train"], None)
    assert out == ["test", "test", "train"]
