"""CBIS-DDSM re-packaged as JPEG (Kaggle awsaf49/cbis-ddsm-breast-cancer-image-dataset).

Layout: csv/ (the four unchanged case CSVs, dicom_info.csv) and jpeg/<SeriesInstanceUID>/*.jpg.
The series UID in a case-CSV path is joined to `dicom_info.SeriesInstanceUID`; the row's
`SeriesDescription` tells full mammogram, ROI mask and cropped image apart, with the public fix
for rows labelled `Unknown` (BitsAllocated 8 -> ROI mask); `image_path`'s `CBIS-DDSM/jpeg/`
prefix is replaced by the local jpeg/ folder. JPEG masks are lossy, so they are thresholded
at half their maximum; images are 8-bit (a different intensity distribution from the DICOMs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from datasets.real.cases import Adapter, Case, Frame, walk_files
from datasets.real.cbis_ddsm import case_meta, case_tables, image_groups
from datasets.real.image_files import read_frames, read_mask
from datasets.real.problems import CaseError, Problem, rel, why

INFO_COLUMNS = ("image_path", "SeriesInstanceUID", "SeriesDescription")


def read_dicom_info(path: Path) -> dict[str, list[dict[str, str]]]:
    """SeriesInstanceUID -> its dicom_info rows (stripped strings)."""
    if not path.is_file():
        raise UserError(f"'{path}' does not exist (the JPEG package keeps it in csv/)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in INFO_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"'{path}' lacks column(s) {', '.join(missing)}")
    out: dict[str, list[dict[str, str]]] = {}
    for row in df.apply(lambda col: col.str.strip()).to_dict("records"):
        out.setdefault(row["SeriesInstanceUID"], []).append(row)
    return out


def role(row: dict[str, str]) -> str:
    """'full', 'mask' or 'crop' from SeriesDescription (Unknown + 8-bit -> mask)."""
    desc = row["SeriesDescription"].lower()
    if desc.startswith("full mammogram"):
        return "full"
    if desc.startswith("roi mask"):
        return "mask"
    if desc.startswith("cropped"):
        return "crop"
    return "mask" if row.get("BitsAllocated", "").strip() in ("8", "8.0") else "crop"


class CbisDdsmJpegAdapter(Adapter):
    """The JPEG re-packaging: same case CSVs, pixels from jpeg/ joined on the series UID."""

    format = "cbis-ddsm-jpeg"
    label = "CBIS-DDSM (JPEG)"
    default_spacing_mm = 0.05
    spacing_note = "DDSM digitisers scanned at 42-50 um; the JPEGs carry no spacing"

    def source_files(self) -> list[Path]:
        """Every JPEG and CSV under the root."""
        return walk_files(self.root, {".jpg", ".jpeg", ".csv"})

    def local(self, image_path: str) -> Path:
        """`CBIS-DDSM/jpeg/<uid>/<file>.jpg` -> <root>/jpeg/<uid>/<file>.jpg."""
        tail = image_path.replace("\\", "/").split("jpeg/", 1)[-1]
        return self.root / "jpeg" / tail

    def scan(self) -> tuple[list[Case], list[Problem]]:
        """One case per full image; joins that fail or miss files become problems."""
        info = read_dicom_info(self.root / "csv" / "dicom_info.csv")
        cases: list[Case] = []
        problems: list[Problem] = []
        for kind, split, csv_path, df in case_tables(self.root, self.options):
            for image_path, rows in image_groups(df).items():
                where = f"{csv_path.name}: {image_path}"
                series = image_path.split("/")[2] if image_path.count("/") >= 2 else ""
                fulls = [self.local(r["image_path"]) for r in info.get(series, [])
                         if role(r) == "full"]
                if not fulls or not fulls[0].is_file():
                    problems.append(Problem(where, "no full-mammogram JPEG for its series UID "
                                                   "in dicom_info.csv / jpeg/"))
                    continue
                mask_sets = []
                for r in rows:
                    roi_series = r["ROI mask file path"].split("/")[2] \
                        if r["ROI mask file path"].count("/") >= 2 else ""
                    found = [self.local(x["image_path"]) for x in info.get(roi_series, [])
                             if role(x) == "mask"]
                    found = [p for p in found if p.is_file()]
                    if not found:
                        problems.append(Problem(f"{csv_path.name}: {r['ROI mask file path']}",
                                                "no ROI-mask JPEG for its series UID; image "
                                                "excluded"))
                        break
                    mask_sets.append(found)
                else:
                    cases.append(self._case(kind, split, image_path, rows, fulls[0], mask_sets))
        return cases, problems

    def _case(self, kind: str, split: str, image_path: str, rows: list[dict[str, str]],
              full: Path, mask_sets: list[list[Path]]) -> Case:
        """A case whose read() decodes the JPEG and merges its abnormalities' masks."""

        def read() -> list[Frame]:

            """Decode the JPEG; union of its abnormalities' masks."""
            frame = read_frames(full)[0]
            mask = np.zeros(frame.image.shape, np.uint8)
            for paths in mask_sets:
                same = []
                for p in paths:
                    try:
                        m = read_mask(p, lossy=True)
                    except Exception as exc:
                        raise CaseError(rel(p, self.root), f"unreadable mask ({why(exc)})") \
                            from None
                    if m.shape == frame.image.shape:
                        same.append(m)
                if not same:
                    raise CaseError(rel(paths[0], self.root), f"mask size differs from the "
                                    f"mammogram {frame.image.shape}; image excluded (never "
                                    "resized)")
                mask |= same[0]
            return [Frame(frame.image, mask, None, "none", "JPEG 8-bit (lossy)", frame.window)]

        files = [rel(full, self.root)] + [rel(p, self.root) for s in mask_sets for p in s]
        return Case(image_path.split("/")[0], rows[0]["patient_id"], files, read,
                    case_meta(rows, kind), split)
