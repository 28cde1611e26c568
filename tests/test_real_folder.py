"""The `folder` format end to end: add -> verify -> run, DBT volumes, bad input, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.real import RealDomain
from datasets.real.bindings import Binding, load_bindings
from tests.real_cli import bench, config, smoke_run
from tests.real_fixtures import folder_tree

__all__ = ["config"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder-format dataset shared by the tests of this module."""
    root = tmp_path_factory.mktemp("folder")
    folder_tree(root)
    return root


def test_add_verify_run_end_to_end(tree: Path, config: Path, tmp_path: Path) -> None:
    res = bench("data", "add", "ffdm", "--format", "folder", "--root", str(tree))
    assert res.exit_code == 0, res.output
    assert load_bindings()["ffdm"].format == "folder" and config.is_file()
    listed = bench("data", "list")
    assert "ffdm" in listed.output and "replaces the synthetic stand-in" in listed.output
    domains = bench("list", "domains").output  # the binding replaces the stand-in's row
    assert "real" in domains and "bench data add" in domains
    assert domains.count("stand-in") == 2  # dbt and cbis-ddsm only
    res = bench("data", "verify", "ffdm")
    assert res.exit_code == 1, res.output  # planted problems: reported, exit 1, no traceback
    out = res.output
    assert "Traceback" not in out and "5 problem(s)" in out
    for planted in ("missing.dcm: listed in the manifest but missing", "grey_mask.png",
                    "not binary", "small_mask.png", "never resized", "nan.tif", "NaN",
                    "truncated.dcm"):
        assert planted in out, planted
    for fact in ("MONOCHROME1", "ImagerPixelSpacing/magnification 1.25", "manifest spacing_mm",
                 "window LINEAR", "D01"):
        assert fact in out, fact
    res = smoke_run("ffdm", tmp_path / "results", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC stand-in" not in res.output and "DSC (%)" in res.output
    run_dir = next((tmp_path / "results" / "runs").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data_fingerprints"]["ffdm"]
    cases = pd.read_parquet(run_dir / "per_case.parquet")
    assert len(cases) and set(cases["target"]) == {"ffdm"}


def test_dbt_volume_slices_are_neighbours(tree: Path, tmp_path: Path) -> None:
    dom = RealDomain(Binding("v", "folder", str(tree), {}))
    data = dom.load(32, tmp_path)
    ids = [data.image_ids[i] for i, p in enumerate(data.patient_ids) if p == "D01"]
    assert any("-S000-" in i for i in ids) and any("-S004-" in i for i in ids)
    first = next(i for i, iid in enumerate(data.image_ids) if iid.startswith("dbt/vol1-S002-r0c0"))
    picks, real = data.neighbour_index(first, 3)
    assert real
    assert [data.meta[j]["slice"] for j in picks] == [1, 2, 3]
    assert len({data.meta[j]["volume_id"] for j in picks}) == 1
    assert all(data.meta[j]["block"] == "r0c0" for j in picks)
    slice_row = [i for i, p in enumerate(data.patient_ids) if p == "D02"]
    assert slice_row and all(data.meta[i]["slice"] == 2 for i in slice_row)
    # spacing from the functional groups, recomputed for the block: 32 px span half the volume
    span = data.spacing_mm[first] * 32
    assert 0.25 * 64 * 0.085 < span[0] <= 0.6 * 64 * 0.085
    assert data.meta[first]["spacing_source"] == "PixelSpacing"


def test_cache_is_reused_without_decoding(tree: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    binding = Binding("c", "folder", str(tree), {})
    first = RealDomain(binding).load(32, tmp_path)
    files = list((tmp_path / "shards" / "real").glob("*/manifest.json"))
    assert len(files) == 1 and not list((tmp_path / "shards" / "real").glob("*/.*tmp"))

    import pydicom

    def no_decoding(*_a: object, **_k: object) -> None:
        raise AssertionError("the cache read decoded a DICOM")

    monkeypatch.setattr(pydicom, "dcmread", no_decoding)
    again_dom = RealDomain(binding)
    again = again_dom.load(32, tmp_path)
    assert again_dom.decode_count == 0 and again_dom.problems  # problems kept in the header
    np.testing.assert_array_equal(first.images, again.images)
    assert first.image_ids == again.image_ids and first.meta == again.meta


def test_fingerprint_follows_files_and_settings(tree: Path, tmp_path: Path) -> None:
    base = RealDomain(Binding("f", "folder", str(tree), {})).fingerprint()
    assert base == RealDomain(Binding("f", "folder", str(tree), {})).fingerprint()
    assert base != RealDomain(Binding("f", "folder", str(tree), {"tiles": 1})).fingerprint()
    extra = tree / "ffdm" / "new_note.txt"
    extra.write_text("x")
    try:
        assert base != RealDomain(Binding("f", "folder", str(tree), {})).fingerprint()
    finally:
        extra.unlink()


def test_corrupt_cache_is_rebuilt(tree: Path, tmp_path: Path) -> None:
    binding = Binding("k", "folder", str(tree), {"tiles": 1})
    RealDomain(binding).load(32, tmp_path)
    path = next((tmp_path / "shards" / "real").glob("*/shard-00000.masks.npy"))
    path.write_bytes(path.read_bytes()[:100])
    dom = RealDomain(binding)
    with pytest.warns(UserWarning, match="shard-00000.masks.npy"):
        data = dom.load(32, tmp_path)
    assert dom.decode_count == 1 and all(m["block"] == "full" for m in data.meta)


def test_manifest_missing_columns_is_one_line(tmp_path: Path, config: Path) -> None:
    (tmp_path / "manifest.csv").write_text("image,patient_id\na.png,P1\n")
    res = bench("data", "add", "mine", "--format", "folder", "--root", str(tmp_path))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "manifest.csv" in res.output and "mask, view" in res.output
    assert not config.exists()  # nothing written for a bad binding


def test_bad_options_and_names(tmp_path: Path, config: Path) -> None:
    res = bench("data", "add", "x", "--format", "folder", "--root", str(tmp_path),
                "--mask-mode", "calc")
    assert res.exit_code == 2 and "--mask-mode applies to inbreast" in res.output
    res = bench("data", "add", "x", "--format", "dicomdir", "--root", str(tmp_path))
    assert res.exit_code == 2 and "expected one of" in res.output
    res = bench("data", "verify", "nothing")
    assert res.exit_code == 2 and "not bound" in res.output
    res = bench("data", "remove", "nothing")
    assert res.exit_code == 2


def test_remove_restores_the_stand_in(tree: Path, config: Path) -> None:
    from benchmark.registry import resolve_domain

    assert bench("data", "add", "dbt", "--format", "folder", "--root", str(tree)).exit_code == 0
    assert not resolve_domain("dbt").synthetic
    assert bench("data", "remove", "dbt").exit_code == 0
    assert resolve_domain("dbt").synthetic


def test_nothing_usable_is_one_line_and_writes_no_cache(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "broken.dcm").write_bytes(b"\0" * 64)
    (root / "manifest.csv").write_text("image,mask,patient_id,view\nbroken.dcm,,P1,CC\n")
    assert bench("data", "add", "bad", "--format", "folder", "--root", str(root)).exit_code == 0
    res = smoke_run("bad", tmp_path / "results", tmp_path / "cache")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "has no usable image" in res.output and "broken.dcm" in res.output
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_bindings_accumulate(tree: Path, config: Path) -> None:
    for name in ("a", "b"):
        assert bench("data", "add", name, "--format", "folder", "--root", str(tree),
                     "--tiles", "1", "--spacing-mm", "0.07").exit_code == 0
    bound = load_bindings()
    assert set(bound) == {"a", "b"}
    assert bound["a"].options == {"tiles": 1, "spacing_mm": 0.07}


def test_perf_data_command(tree: Path, config: Path) -> None:
    res = bench("perf", "data", "--n", "2", "--rows", "64", "--cols", "48", "--image-size", "32")
    assert res.exit_code == 0, res.output
    assert "read shard cache" in res.output and "faster than decoding" in res.output
    assert bench("data", "add", "p", "--format", "folder", "--root", str(tree)).exit_code == 0
    res = bench("perf", "data", "p", "--image-size", "32")
    assert res.exit_code == 0 and "p (" in res.output, res.output
