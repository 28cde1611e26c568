"""`bench predict` end to end: CBIS-DDSM and INbreast fixtures, a folder of DBT volumes,
DICOM SEG read back with highdicom, resuming, a damaged file, an unknown run, privacy, and
agreement with the evaluation's own per-case rows on a synthetic domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from benchmark.store import ResultsStore
from datasets.real.dicom_write import phantom, write_dbt
from tests.real_cli import bench, config
from tests.real_fixtures import PRIVATE, SECRET, cbis_ddsm_tree, inbreast_tree

__all__ = ["config"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One smoke U-Net on the synthetic FFDM stand-in, evaluated on its test split."""
    return _smoke_run("unet", "ffdm", tmp_path_factory.mktemp("predict"))


def _smoke_run(method: str, source: str, base: Path) -> tuple[Path, Path, str]:
    """`bench run --profile smoke --set epochs=1` of `method` on `source` under `base`:
    (results folder, cache folder, run id)."""
    results, cache = base / "results", base / "cache"
    res = bench("run", "--method", method, "--source", source, "--profile", "smoke",
                "--no-progress", "--threads", "1", "--set", "epochs=1",
                "--results-dir", str(results), "--cache-dir", str(cache))
    assert res.exit_code == 0, res.output
    return results, cache, next((results / "runs").iterdir()).name


def _predict(trained: tuple[Path, Path, str], *args: str) -> object:
    results, cache, run_id = trained
    return bench("predict", run_id, "--results-dir", str(results), "--cache-dir", str(cache),
                 "--no-progress", "--threads", "1", *args)


def _check_seg(seg_path: Path, source: Path, masks: list[np.ndarray]) -> None:
    """The SEG read back: size, frame count, referenced source instance, pixels = the PNGs."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns)
    assert int(seg.NumberOfFrames) == len(masks)
    assert src.SOPInstanceUID in [uids[2] for uids in seg.get_source_image_uids()]
    pixels = seg.get_volume(combine_segments=True).array if len(masks) > 1 else None
    stack = np.asarray(seg.pixel_array).reshape(len(masks), src.Rows, src.Columns)
    if pixels is not None:
        assert pixels.shape[0] == len(masks)
    for frame, mask in zip(stack, masks, strict=True):
        assert np.array_equal(frame.astype(bool), mask > 0)
    for key in ("PatientName", "PatientBirthDate", "StudyDate", "InstitutionName"):
        assert not str(seg.get(key, "")), key
    assert SECRET not in seg_path.read_bytes().decode("latin-1")


def _bind_and_predict(trained: tuple[Path, Path, str], tmp_path: Path, name: str, fmt: str,
                      build: Any, *args: str) -> tuple[Path, Any]:
    """Write a fixture tree in the dataset's real layout, bind it as `name`, predict it."""
    root = tmp_path / name
    build(root)
    assert bench("data", "add", name, "--format", fmt, "--root", str(root)).exit_code == 0
    out = tmp_path / "out"
    res = _predict(trained, "--input", name, "--out", str(out), *args)
    assert res.exit_code in (0, 1), res.output
    return out, res


def test_cbis_ddsm_test_split(trained: tuple[Path, Path, str], tmp_path: Path,
                              config: Path) -> None:
    out, res = _bind_and_predict(trained, tmp_path, "cbis", "cbis-ddsm", cbis_ddsm_tree)
    assert "images/s" in res.output and "s per image end to end" in res.output
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) >= 2 and rows["image_id"].str.startswith("Calc-Test").all()
    for col in ("predicted_area_mm2", "predicted_clusters", "max_probability", "threshold",
                "DSC", "TPR"):
        assert col in rows
    assert rows["DSC"].notna().all()  # CBIS-DDSM has masks: every row is scored
    for row in rows.to_dict("records"):
        mask = np.asarray(Image.open(out / f"{row['image_id']}_mask.png"))
        assert mask.shape == (row["rows"], row["cols"])
        over = np.asarray(Image.open(out / f"{row['image_id']}_overlay.png"))
        assert over.shape == (row["rows"], row["cols"], 3)
        seg = out / f"{row['image_id']}_seg.dcm"
        assert seg.is_file()
    texts = [res.output, (out / "predictions.csv").read_text(),
             " ".join(p.name for p in out.rglob("*"))]
    for needle in (SECRET, PRIVATE["PatientID"], PRIVATE["InstitutionName"], "19700101"):
        assert not any(needle in t for t in texts), needle


def test_inbreast_seg_reads_back(trained: tuple[Path, Path, str], tmp_path: Path,
                                 config: Path) -> None:
    out, res = _bind_and_predict(trained, tmp_path, "inb", "inbreast", inbreast_tree,
                                 "--split", "all")
    root = tmp_path / "inb"
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == 8  # every AllDICOMs image (the CSV row without a DICOM is not one)
    assert rows["flipped"].any() and not rows["flipped"].all()  # R images are mirrored
    for row in rows.to_dict("records"):
        dicom = next((root / "AllDICOMs").glob(f"{row['image_id']}_*.dcm"), None) \
            if (root / "AllDICOMs").is_dir() else None
        seg = out / f"{row['image_id']}_seg.dcm"
        if dicom is None or not seg.is_file():
            continue
        mask = np.asarray(Image.open(out / f"{row['image_id']}_mask.png"))
        _check_seg(seg, dicom, [mask])
    assert any(out.glob("*_seg.dcm")), res.output


def test_dbt_folder_volumes_resume_and_a_damaged_file(trained: tuple[Path, Path, str],
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "dbt"
    sources = {}
    for k, lat in enumerate(("L", "R")):
        img, _ = phantom(71, 53, seed=k, laterality=lat)
        vol = np.stack([np.round(img * 4000).astype(np.uint16)] * (4 + k))
        sources[f"vol{k}"] = write_dbt(
            folder / f"vol{k}.dcm", vol, spacing=(0.085, 0.085), window=(2000, 4000),
            ImageLaterality=lat, StudyInstanceUID=pydicom.uid.generate_uid(),
            SeriesInstanceUID=pydicom.uid.generate_uid(), **PRIVATE)
    (folder / "broken.dcm").write_bytes(sources["vol0"].read_bytes()[:900])
    out = tmp_path / "out"
    res = _predict(trained, "--input", str(folder), "--out", str(out))
    assert res.exit_code == 1, res.output  # the damaged file is reported, the rest predicted
    lines = [ln for ln in res.output.splitlines() if "broken.dcm" in ln]
    assert len(lines) == 1 and "skipped" in lines[0]
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == 4 + 5  # every slice of both volumes
    assert set(rows["slice"]) == {0, 1, 2, 3, 4}
    for name, source in sources.items():
        n = 4 if name == "vol0" else 5
        masks = [np.asarray(Image.open(out / name / f"S{s:03d}_mask.png")) for s in range(n)]
        assert all(m.shape == (71, 53) for m in masks)
        _check_seg(out / f"{name}_seg.dcm", source, masks)
    assert rows.loc[rows["image_id"].str.startswith("vol1"), "flipped"].all()
    before = (out / "predictions.csv").read_text()
    again = _predict(trained, "--input", str(folder), "--out", str(out))
    assert "predicted 0 image(s), skipped 2" in again.output, again.output
    assert (out / "predictions.csv").read_text() == before
    (out / ".rows" / "vol1.json").unlink()  # as if killed before vol1 finished
    (out / ".rows" / "vol0.json").write_text('[{"image_id": ')  # as if killed mid-write
    third = _predict(trained, "--input", str(folder), "--out", str(out))
    assert "predicted 9 image(s), skipped 0" in third.output, third.output
    assert (out / "predictions.csv").read_text() == before
    (out / ".run.json").write_text('{"run_id": "another-run", "threshold": 0.5}')
    other = _predict(trained, "--input", str(folder), "--out", str(out))
    assert other.exit_code == 2 and "holds the predictions of run 'another-run'" in \
        other.output and len(other.output.strip().splitlines()) == 1


def test_synthetic_domain_matches_the_evaluation_rows(trained: tuple[Path, Path, str],
                                                      tmp_path: Path) -> None:
    results, _, run_id = trained
    out = tmp_path / "out"
    res = _predict(trained, "--input", "ffdm", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out / "predictions.csv").set_index("image_id")
    cases = ResultsStore(results).cases(run_id)
    cases = cases[(cases["target"] == "ffdm") & (cases["checkpoint"] == "best")]
    assert len(rows) == len(cases)
    merged = cases.set_index("image_id")["DSC"] * 100
    assert np.allclose(rows.loc[merged.index, "DSC"], merged, atol=1e-6)


def test_unknown_run_and_missing_options(trained: tuple[Path, Path, str],
                                         tmp_path: Path) -> None:
    results, cache, run_id = trained
    res = bench("predict", run_id[:-1] + "x", "--input", "ffdm", "--out", str(tmp_path),
                "--results-dir", str(results))
    assert res.exit_code == 2
    assert f"did you mean '{run_id}'" in res.output and len(res.output.strip().splitlines()) == 1
    res = bench("predict", "--method", "unet", "--source", "dbt", "--profile", "smoke",
                "--input", "ffdm", "--out", str(tmp_path), "--results-dir", str(results),
                "--cache-dir", str(cache))
    assert res.exit_code == 2 and "no run of unet on 'dbt'" in res.output
    res = bench("predict", run_id, "--input", " ", "--out", str(tmp_path),
                "--results-dir", str(results))
    assert res.exit_code == 2 and "--input is empty" in res.output


def test_whole_image_gallery_uses_the_predict_mapping(trained: tuple[Path, Path, str],
                                                      tmp_path: Path) -> None:
    """`bench show cases --whole`: one patient's views (distinct, at most four), each
    method cell's DSC equal to what `bench predict` writes for that image."""
    from benchmark.gallery import GalleryRequest
    from benchmark.gallery_whole import whole_gallery
    from benchmark.progress import NullReporter

    results, cache, _ = trained
    req = GalleryRequest(source="ffdm", target="ffdm", methods=["unet"], results_dir=results,
                         cache_dir=cache, profile="smoke", sets=["epochs=1"],
                         out=tmp_path / "whole.png",
                         device="cpu")
    layout = whole_gallery(req, None, NullReporter())
    assert 1 <= len(layout.rows) <= 4 and layout.columns == ["image", "reference", "Unet"]
    assert (tmp_path / "whole.png").is_file()
    patient = layout.title.split()[1].rstrip(",")
    assert all(row.startswith(patient) for row in layout.rows)
    res = _predict(trained, "--input", "ffdm", "--out", str(tmp_path / "p"))
    assert res.exit_code == 0, res.output
    dsc = pd.read_csv(tmp_path / "p" / "predictions.csv").set_index("image_id")["DSC"]
    for row in layout.rows:
        assert layout.dsc_labels[(row, "unet")] == pytest.approx(dsc[row], abs=1e-9)
    res = bench("show", "cases", "--whole", "--source", "ffdm", "--target", "ffdm",
                "--methods", "unet", "--profile", "smoke", "--set", "epochs=1",
                "--patient", patient + "x",
                "--results-dir", str(results), "--cache-dir", str(cache), "--no-progress")
    assert res.exit_code == 2 and f"did you mean '{patient}'" in res.output


def test_slice_context_method_sees_its_evaluation_neighbours(tmp_path: Path) -> None:
    """CA-net reads adjacent slices: `bench predict` streams a DBT volume's slices with a
    window of neighbours, and so scores every slice exactly as the run's evaluation did."""
    results, cache, run_id = _smoke_run("canet", "dbt", tmp_path)
    out = tmp_path / "out"
    res = bench("predict", run_id, "--input", "dbt", "--out", str(out), "--results-dir",
                str(results), "--cache-dir", str(cache), "--no-progress", "--threads", "1")
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out / "predictions.csv").set_index("image_id")
    assert rows["slice"].notna().all()  # the stand-in's slices came as volumes
    assert any(p.is_dir() and p.name != ".rows" for p in out.iterdir())
    cases = ResultsStore(results).cases(run_id)
    cases = cases[(cases["target"] == "dbt") & (cases["checkpoint"] == "best")]
    assert sorted(rows.index) == sorted(cases["image_id"])
    stored = cases.set_index("image_id")["DSC"] * 100
    assert np.allclose(rows.loc[stored.index, "DSC"], stored, atol=1e-6)
