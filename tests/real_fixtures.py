"""Builders of tiny real-layout dataset trees (CBIS-DDSM both layouts + JPEG, INbreast, folder).

Every DICOM carries a planted patient name / id / institution (SECRET) that must never reach
any output. Images are 64x48-ish phantoms; every pitfall of docs/guide/data.md that
the adapters handle is planted somewhere and listed in each builder's docstring.
"""

from __future__ import annotations

import csv
import plistlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.real.dicom_write import phantom, write_dbt, write_mg

SECRET = "Doe^Jane-SECRET"
PRIVATE = {"PatientName": SECRET, "PatientID": "SECRET-ID-0042", "PatientBirthDate": "19700101",
           "InstitutionName": "SECRET Hospital", "StudyDate": "20200101"}
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view",
               "abnormality id", "abnormality type", "calc type", "calc distribution",
               "assessment", "pathology", "subtlety", "image file path",
               "cropped image file path", "ROI mask file path"]
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view",
               "abnormality id", "abnormality type", "mass shape", "mass margins", "assessment",
               "pathology", "subtlety", "image file path", "cropped image file path",
               "ROI mask file path"]


def uid(n: int) -> str:
    """A CBIS-DDSM-like UID whose last 5 digits differ per n."""
    return f"1.3.6.1.4.1.9590.100.1.2.{4000000000 + n * 7919:d}{n:05d}"


def _u16(img: np.ndarray) -> np.ndarray:
    return np.round(img * 40000 + 1000).astype(np.uint16)


def _mask_u8(mask: np.ndarray) -> np.ndarray:
    return (mask * 255).astype(np.uint8)


def cbis_ddsm_tree(root: Path) -> dict[str, object]:
    """CBIS-DDSM TCIA download. Planted: descriptive and classic layouts side by side, two
    abnormalities of one image (merged), ROI series with mask/crop order swapped, a trailing
    newline inside a quoted ROI path, a mass CSV with `breast_density`, a 64x50 mask on a 64x48
    image (excluded), a truncated full-mammogram DICOM, a CSV row whose series is missing."""
    calc_rows: dict[str, list[list[str]]] = {"train": [], "test": []}
    n = 0
    expected = {"merged": "Calc-Training_P_00001_LEFT_CC", "size_mismatch":
                "Calc-Test_P_00104_LEFT_CC", "truncated": "Calc-Training_P_00005_LEFT_CC"}
    specs = [("Training", 1, "LEFT", "CC", 2, "descriptive"),
             ("Training", 2, "RIGHT", "MLO", 1, "descriptive"),
             ("Training", 3, "LEFT", "MLO", 1, "classic"),
             ("Training", 4, "RIGHT", "CC", 1, "descriptive"),
             ("Training", 5, "LEFT", "CC", 1, "descriptive"),  # truncated below
             ("Training", 6, "LEFT", "CC", 1, "classic"),
             ("Training", 7, "RIGHT", "CC", 1, "descriptive"),
             ("Test", 101, "LEFT", "CC", 1, "classic"),
             ("Test", 102, "RIGHT", "MLO", 1, "descriptive"),
             ("Test", 103, "LEFT", "MLO", 1, "descriptive"),
             ("Test", 104, "LEFT", "CC", 1, "classic")]  # mask size mismatch
    for split, pnum, lat, view, n_abn, layout in specs:
        subject = f"Calc-{split}_P_{pnum:05d}_{lat}_{view}"
        img, _ = phantom(64, 48, seed=pnum, spots=0, laterality=lat[0])
        n += 1
        study, series = uid(n), uid(n + 500)
        if layout == "descriptive":
            full = root / "CBIS-DDSM" / subject / f"08-07-2016-DDSM-{study[-5:]}" / \
                f"1.000000-full mammogram images-{series[-5:]}" / "1-1.dcm"
        else:
            full = root / subject / study / series / "000000.dcm"
        write_mg(full, _u16(img), SeriesInstanceUID=series, StudyInstanceUID=study, **PRIVATE)
        if pnum == 5:
            full.write_bytes(full.read_bytes()[:400])
        for a in range(1, n_abn + 1):
            n += 1
            rsubject, rstudy, rseries = f"{subject}_{a}", uid(n), uid(n + 500)
            mask = np.zeros((64, 48), np.uint8)
            r0 = 10 + 25 * (a - 1)
            mask[r0:r0 + 8, 12:20] = 1
            mshape = (64, 50) if pnum == 104 else (64, 48)
            mask_arr = np.zeros(mshape, np.uint8)
            mask_arr[:64, :48] = _mask_u8(mask)
            crop = _u16(np.random.default_rng(n).random((10, 12)))
            if layout == "descriptive":
                sdir = root / "CBIS-DDSM" / rsubject / f"08-30-2017-DDSM-{rstudy[-5:]}"
                m_path = sdir / f"1.000000-ROI mask images-{rseries[-5:]}" / \
                    ("1-2.dcm" if a == 2 else "1-1.dcm")
                c_path = sdir / f"1.000000-cropped images-{rseries[-5:]}" / \
                    ("1-1.dcm" if a == 2 else "1-2.dcm")
            else:
                sdir = root / rsubject / rstudy / rseries
                m_path, c_path = sdir / "000001.dcm", sdir / "000000.dcm"
            write_mg(m_path, mask_arr, SeriesInstanceUID=rseries, **PRIVATE)
            write_mg(c_path, crop, SeriesInstanceUID=rseries, **PRIVATE)
            csv_split = "train" if split == "Training" else "test"
            calc_rows[csv_split].append([
                f"P_{pnum:05d}", "3", lat, view, str(a), "calcification", "PLEOMORPHIC",
                "CLUSTERED", "4", "MALIGNANT", "3", f"{subject}/{study}/{series}/000000.dcm",
                f"{rsubject}/{rstudy}/{rseries}/000000.dcm",
                f"{rsubject}/{rstudy}/{rseries}/000001.dcm\n"])  # the trailing-newline pitfall
    calc_rows["train"].append(["P_00009", "2", "LEFT", "CC", "1", "calcification", "N/A", "N/A",
                               "3", "BENIGN", "2",
                               f"Calc-Training_P_00009_LEFT_CC/{uid(900)}/{uid(901)}/000000.dcm",
                               "x/y/z/000000.dcm", "x/y/z/000001.dcm"])
    for split, rows in calc_rows.items():
        _write_csv(root / f"calc_case_description_{split}_set.csv", CALC_HEADER, rows)
    # one mass case (descriptive layout), only used with --abnormality mass|both
    img, _ = phantom(64, 48, seed=77, spots=0)
    study, series, rstudy, rseries = uid(700), uid(701), uid(702), uid(703)
    subject = "Mass-Training_P_00077_LEFT_CC"
    write_mg(root / "CBIS-DDSM" / subject / f"09-01-2016-DDSM-NA-{study[-5:]}" /
             f"1.000000-full mammogram images-{series[-5:]}" / "1-1.dcm", _u16(img),
             SeriesInstanceUID=series, **PRIVATE)
    mask = np.zeros((64, 48), np.uint8)
    mask[20:40, 10:25] = 255
    rdir = root / "CBIS-DDSM" / f"{subject}_1" / f"09-01-2016-DDSM-NA-{rstudy[-5:]}"
    write_mg(rdir / f"1.000000-ROI mask images-{rseries[-5:]}" / "1-1.dcm", mask,
             SeriesInstanceUID=rseries, **PRIVATE)
    _write_csv(root / "mass_case_description_train_set.csv", MASS_HEADER, [[
        "P_00077", "2", "LEFT", "CC", "1", "mass", "OVAL", "CIRCUMSCRIBED", "4", "BENIGN", "4",
        f"{subject}/{study}/{series}/000000.dcm", f"{subject}_1/{rstudy}/{rseries}/000000.dcm\n",
        f"{subject}_1/{rstudy}/{rseries}/000001.dcm"]])
    return expected


def cbis_ddsm_jpeg_tree(root: Path) -> None:
    """Kaggle JPEG package: csv/ (case CSVs + dicom_info.csv) and jpeg/<series UID>/1-n.jpg.
    Planted: a mask labelled `Unknown` with BitsAllocated 8, a row whose JPEG is missing."""
    info = [["file_path", "image_path", "PatientID", "SeriesInstanceUID", "StudyInstanceUID",
             "SeriesDescription", "Rows", "Columns", "BitsAllocated"]]
    rows = {"train": [], "test": []}
    for k, (split, pnum) in enumerate([("Training", 1), ("Training", 2), ("Training", 3),
                                       ("Training", 4), ("Test", 101), ("Test", 102),
                                       ("Test", 103)]):
        subject = f"Calc-{split}_P_{pnum:05d}_LEFT_CC"
        study, series, rseries = uid(k * 3), uid(k * 3 + 1), uid(k * 3 + 2)
        img, _ = phantom(64, 48, seed=pnum, spots=0)
        mask = np.zeros((64, 48), np.uint8)
        mask[12:22, 8:18] = 255
        jdir = root / "jpeg"
        (jdir / series).mkdir(parents=True, exist_ok=True)
        (jdir / rseries).mkdir(parents=True, exist_ok=True)
        if pnum != 4:  # planted: listed but its JPEG is missing
            Image.fromarray((img * 255).astype(np.uint8)).save(jdir / series / "1-1.jpg")
        Image.fromarray(mask).save(jdir / rseries / "1-1.jpg", quality=90)
        Image.fromarray((np.random.default_rng(k).random((10, 12)) * 255).astype(np.uint8)
                        ).save(jdir / rseries / "1-2.jpg")
        desc = "Unknown" if pnum == 2 else "ROI mask images"
        info += [[f"CBIS-DDSM/dicom/{k}/1-1.dcm", f"CBIS-DDSM/jpeg/{series}/1-1.jpg", subject,
                  series, study, "full mammogram images", "64", "48", "16"],
                 [f"CBIS-DDSM/dicom/{k}/2-1.dcm", f"CBIS-DDSM/jpeg/{rseries}/1-1.jpg",
                  f"{subject}_1", rseries, study, desc, "64", "48", "8"],
                 [f"CBIS-DDSM/dicom/{k}/2-2.dcm", f"CBIS-DDSM/jpeg/{rseries}/1-2.jpg",
                  f"{subject}_1", rseries, study, "cropped images", "10", "12", "16"]]
        rows["train" if split == "Training" else "test"].append([
            f"P_{pnum:05d}", "2", "LEFT", "CC", "1", "calcification", "AMORPHOUS", "CLUSTERED",
            "4", "BENIGN", "3", f"{subject}/{study}/{series}/000000.dcm",
            f"{subject}_1/{study}/{rseries}/000000.dcm",
            f"{subject}_1/{study}/{rseries}/000001.dcm\n"])
    _write_csv(root / "csv" / "dicom_info.csv", info[0], info[1:])
    for split, r in rows.items():
        _write_csv(root / "csv" / f"calc_case_description_{split}_set.csv", CALC_HEADER, r)


def inbreast_tree(root: Path) -> dict[str, str]:
    """INbreast release: AllDICOMs, AllXML plists, INbreast.csv (';'). Planted: ROI name
    variants (Calcifications, Espiculated Region, Point 1, ''), single-point calcifications, a
    Cluster outline, an image with calcifications but no Cluster ROI, a MONOCHROME1 image with
    a SIGMOID window, a CSV row whose DICOM is missing, an unannotated image."""
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    ids = {}
    for k in range(8):
        fname, phash = f"{20586900 + k}", f"{k:02d}6c613a14b8{k:04d}"
        lat, view = ("R", "CC") if k % 2 == 0 else ("L", "ML")
        img, _ = phantom(64, 48, seed=k, spots=0, laterality=lat)
        stored = np.round(img * 16000).astype(np.uint16)
        extra = dict(PixelSpacing=["0.07", "0.07"], **PRIVATE)
        if k == 3:
            stored = 16383 - stored
            extra.update(PhotometricInterpretation="MONOCHROME1", WindowCenter="8000",
                         WindowWidth="16000", VOILUTFunction="SIGMOID")
        write_mg(root / "AllDICOMs" / f"{fname}_{phash}_MG_{lat}_{view}_ANON.dcm", stored,
                 bits_stored=14, **extra)
        ids[fname] = phash
        lines.append(f"removed;removed;{lat};{'MLO' if view == 'ML' else 'CC'};201001;{fname};"
                     f"{'2 ' if k % 3 else '   '};{'4a' if k % 2 else '2'}")
        if k == 7:
            continue  # no XML: a normal image
        rois = [{"Name": "Calcification", "NumberOfPoints": 1,
                 "Point_px": [f"({12.4 + k}, {20.6})"]},
                {"Name": "Calcifications ", "NumberOfPoints": 1, "Point_px": [f"({16.0}, {24.0})"]},
                {"Name": "calcification", "NumberOfPoints": 2,
                 "Point_px": ["(14.0, 30.0)", "(15.0, 30.5)"]},
                {"Name": "Espiculated Region", "NumberOfPoints": 3,
                 "Point_px": ["(30, 50)", "(34, 50)", "(32, 55)"]},
                {"Name": "Point 1", "NumberOfPoints": 1, "Point_px": ["(5, 5)"]},
                {"Name": "", "NumberOfPoints": 1, "Point_px": ["(6, 6)"]}]
        if k % 2 == 0:
            rois.append({"Name": "Cluster", "NumberOfPoints": 4,
                         "Point_px": ["(8.5, 15.5)", "(22.5, 15.5)", "(22.5, 34.5)",
                                      "(8.5, 34.5)"]})
        doc = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
        with open(root / "AllXML" / f"{fname}.xml", "wb") as fh:
            plistlib.dump(doc, fh, fmt=plistlib.FMT_XML)
    lines.append("removed;removed;L;CC;201001;99999999;1;1")  # planted: DICOM missing
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    return ids


def folder_tree(root: Path) -> dict[str, str]:
    """Folder format over PNG / TIFF / DICOM: FFDM DICOMs (one JPEG 2000 compressed, one
    MONOCHROME1 + INVERSE, one with ImagerPixelSpacing and magnification), a PNG image, a DBT
    volume (functional groups, per-frame window) with a multi-page TIFF mask, a slice row.
    Planted: a missing file, a non-binary mask, a size-mismatched mask, a NaN TIFF image,
    a truncated DICOM."""
    rows = [["image", "mask", "patient_id", "view", "spacing_mm", "slice"]]
    for p in range(6):
        for view in ("CC", "MLO"):
            img, mask = phantom(64, 48, seed=p * 2 + (view == "MLO"), spots=2)
            stored = np.round(img * 4095).astype(np.uint16)
            extra: dict[str, object] = dict(PixelSpacing=["0.1", "0.1"], **PRIVATE)
            if p == 1 and view == "CC":
                stored = 4095 - stored
                extra.update(PhotometricInterpretation="MONOCHROME1",
                             PresentationLUTShape="INVERSE")
            if p == 2 and view == "CC":
                extra = dict(ImagerPixelSpacing=["0.1", "0.1"],
                             EstimatedRadiographicMagnificationFactor="1.25", **PRIVATE)
            write_mg(root / "ffdm" / f"p{p}_{view}.dcm", stored, bits_stored=12,
                     compress=(p == 0 and view == "CC"), WindowCenter="2048",
                     WindowWidth="4096", **extra)
            Image.fromarray(mask * 255).save(root / "ffdm" / f"p{p}_{view}_mask.png")
            rows.append([f"ffdm/p{p}_{view}.dcm", f"ffdm/p{p}_{view}_mask.png", f"F{p:02d}",
                         view, "", ""])
    img, mask = phantom(64, 48, seed=50, spots=2)
    Image.fromarray((img * 65535).astype(np.uint16)).save(root / "ffdm" / "png_image.png")
    Image.fromarray(mask).save(root / "ffdm" / "png_mask.png")
    rows.append(["ffdm/png_image.png", "ffdm/png_mask.png", "F06", "CC", "0.085", ""])
    import tifffile

    vols, vmasks = zip(*(phantom(64, 48, seed=60 + k, spots=2) for k in range(5)), strict=True)
    write_dbt(root / "dbt" / "vol1.dcm", np.round(np.stack(vols) * 4095).astype(np.uint16),
              spacing=(0.085, 0.085), window=(2048, 4096), per_frame_window=True, **PRIVATE)
    tifffile.imwrite(root / "dbt" / "vol1_mask.tif", np.stack(vmasks) * 255)
    rows.append(["dbt/vol1.dcm", "dbt/vol1_mask.tif", "D01", "CC", "", ""])
    Image.fromarray(vmasks[2] * 255).save(root / "dbt" / "vol1_s2_mask.png")
    rows.append(["dbt/vol1.dcm", "dbt/vol1_s2_mask.png", "D02", "MLO", "", "2"])
    # planted problems
    rows.append(["ffdm/missing.dcm", "ffdm/p0_CC_mask.png", "F07", "CC", "", ""])
    grey = (np.random.default_rng(0).random((64, 48)) * 200).astype(np.uint8)
    Image.fromarray(grey).save(root / "ffdm" / "grey_mask.png")
    # own copies of good images: a second row listing the same file is a duplicate image id
    shutil.copyfile(root / "ffdm" / "p3_CC.dcm", root / "ffdm" / "grey_case.dcm")
    rows.append(["ffdm/grey_case.dcm", "ffdm/grey_mask.png", "F08", "CC", "", ""])
    Image.fromarray(np.zeros((60, 48), np.uint8)).save(root / "ffdm" / "small_mask.png")
    shutil.copyfile(root / "ffdm" / "p4_CC.dcm", root / "ffdm" / "small_case.dcm")
    rows.append(["ffdm/small_case.dcm", "ffdm/small_mask.png", "F09", "CC", "", ""])
    nan_img = np.full((64, 48), 0.5, np.float32)
    nan_img[3, 3] = np.nan
    tifffile.imwrite(root / "ffdm" / "nan.tif", nan_img)
    rows.append(["ffdm/nan.tif", "", "F10", "CC", "", ""])
    trunc = root / "ffdm" / "truncated.dcm"
    trunc.write_bytes((root / "ffdm" / "p5_CC.dcm").read_bytes()[:500])
    rows.append(["ffdm/truncated.dcm", "", "F11", "CC", "", ""])
    _write_csv(root / "manifest.csv", rows[0], rows[1:])
    return {"problems": "missing.dcm grey_mask.png small_mask.png nan.tif truncated.dcm"}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        w.writerows(rows)
