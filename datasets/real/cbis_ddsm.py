"""CBIS-DDSM as downloaded from TCIA: the four case CSVs and the DICOM tree, both layouts.

CSVs (exact names): {calc,mass}_case_description_{train,test}_set.csv; the density column is
`breast density` (calc) or `breast_density` (mass); quoted paths may end in a newline, so every
field is stripped. One row per abnormality: rows sharing an `image file path` are merged into
one mask (union). Series folders are found from the series UID in the CSV path: the classic
layout names the folder by the full UID, the NBIA "descriptive" layout ends it in `-<last 5
digits of the UID>`; failing both, every DICOM header under the root is indexed by
SeriesInstanceUID. The ROI series holds the mask and the cropped image in an unstable order:
they are told apart by content (the mask is binary). A mask whose size differs from its
mammogram is reported and the image excluded, never resized. Official train/test honoured.
Calcification cases by default; `abnormality = "mass"` or `"both"` selects masses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from datasets.real import dicom_io
from datasets.real.cases import Adapter, Case, Frame, walk_files
from datasets.real.image_files import binarise
from datasets.real.problems import CaseError, Problem, rel, why

CSV_NAMES = {
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
}
REQUIRED_COLUMNS = ("patient_id", "left or right breast", "image view", "abnormality id",
                    "image file path", "ROI mask file path")
ABNORMALITIES = {"calc": ("calc",), "mass": ("mass",), "both": ("calc", "mass")}


def kinds(options: dict[str, Any]) -> tuple[str, ...]:
    """The abnormality kinds selected by the `abnormality` option (calc by default)."""
    choice = str(options.get("abnormality", "calc"))
    if choice not in ABNORMALITIES:
        raise UserError(f"abnormality '{choice}': expected one of {', '.join(ABNORMALITIES)}")
    return ABNORMALITIES[choice]


def find_csv(root: Path, name: str) -> Path | None:
    """A case CSV in the root, in root/csv, or one folder down."""
    for cand in (root / name, root / "csv" / name, *sorted(root.glob(f"*/{name}"))):
        if cand.is_file():
            return cand
    return None


def read_case_csv(path: Path) -> pd.DataFrame:
    """A case CSV with stripped headers and values and one density column name."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"'{path}' is not a readable CSV: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.rename(columns={"breast_density": "breast density"})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"'{path}' lacks column(s) {', '.join(missing)}")
    return df.apply(lambda col: col.str.strip())


def case_tables(root: Path, options: dict[str, Any]) -> list[tuple[str, str, Path, pd.DataFrame]]:
    """(kind, official split, csv path, table) for every selected CSV found."""
    out = []
    for kind in kinds(options):
        for split in ("train", "test"):
            path = find_csv(root, CSV_NAMES[(kind, split)])
            if path is not None:
                out.append((kind, split, path, read_case_csv(path)))
    if not out:
        names = ", ".join(CSV_NAMES[(k, s)] for k in kinds(options) for s in ("train", "test"))
        raise UserError(f"no CBIS-DDSM case CSV under '{root}' (looked for {names})")
    return out


def image_groups(df: pd.DataFrame) -> dict[str, list[dict[str, str]]]:
    """`image file path` -> its abnormality rows (one image, several abnormalities)."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in df.to_dict("records"):
        groups.setdefault(row["image file path"], []).append(row)
    return groups


def case_meta(rows: list[dict[str, str]], kind: str) -> dict[str, Any]:
    """View, laterality and the clinical labels of an image (pseudonymous, from the CSV)."""
    first = rows[0]
    return {"view": first["image view"], "laterality": first["left or right breast"],
            "abnormality": kind, "density": first.get("breast density", ""),
            "pathology": "|".join(sorted({r.get("pathology", "") for r in rows})),
            "n_abnormalities": len(rows)}


class SeriesLocator:
    """Find a series' DICOM files by folder name (classic or descriptive) or by header."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_header: dict[str, list[Path]] | None = None

    def subject_dirs(self, subject: str) -> list[Path]:
        """The Subject-ID folder, directly under the root or under root/CBIS-DDSM."""
        return [d for d in (self.root / subject, self.root / "CBIS-DDSM" / subject) if d.is_dir()]

    def files(self, csv_path: str) -> list[Path]:
        """DICOM files of the series named by a CSV path (subject/study/series/file)."""
        parts = csv_path.replace("\\", "/").split("/")
        if len(parts) < 3:
            return []
        subject, series = parts[0], parts[2]
        found: list[Path] = []
        for sdir in self.subject_dirs(subject):
            for study in sorted(p for p in sdir.iterdir() if p.is_dir()):
                for folder in sorted(p for p in study.iterdir() if p.is_dir()):
                    if folder.name == series or folder.name.endswith("-" + series[-5:]):
                        found += sorted(folder.glob("*.dcm"))
        return found or self.header_index().get(series, [])

    def header_index(self) -> dict[str, list[Path]]:
        """SeriesInstanceUID -> files, from every header under the root (built once)."""
        if self._by_header is None:
            self._by_header = {}
            for path in walk_files(self.root, {".dcm"}):
                try:
                    uid = str(dicom_io.read_header(path).get("SeriesInstanceUID", ""))
                except Exception:
                    continue  # unreadable files surface when a case reads them
                self._by_header.setdefault(uid, []).append(path)
        return self._by_header


class CbisDdsmAdapter(Adapter):
    """CBIS-DDSM DICOM download: one case per full mammogram, masks merged per image."""

    format = "cbis-ddsm"
    label = "CBIS-DDSM"
    default_spacing_mm = 0.05
    spacing_note = ("DDSM digitisers scanned at 42-50 um (DBA 42, Howtek 43.5, Lumisys 50); "
                    "the converted DICOMs carry no spacing")

    def source_files(self) -> list[Path]:
        """Every DICOM and CSV under the root."""
        return walk_files(self.root, {".dcm", ".csv"})

    def scan(self) -> tuple[list[Case], list[Problem]]:
        """One case per full image of the selected CSVs; missing files become problems."""
        locate = SeriesLocator(self.root)
        cases: list[Case] = []
        problems: list[Problem] = []
        for kind, split, csv_path, df in case_tables(self.root, self.options):
            for image_path, rows in image_groups(df).items():
                where = f"{csv_path.name}: {image_path}"
                images = locate.files(image_path)
                if not images:
                    problems.append(Problem(where, "listed in the CSV but the full mammogram "
                                                   "series is missing"))
                    continue
                roi_sets = []
                for r in rows:
                    roi = locate.files(r["ROI mask file path"])
                    if r.get("cropped image file path"):
                        roi += [p for p in locate.files(r["cropped image file path"])
                                if p not in roi]
                    if not roi:
                        problems.append(Problem(f"{csv_path.name}: {r['ROI mask file path']}",
                                                "listed in the CSV but the ROI series is "
                                                "missing; image excluded"))
                        break
                    roi_sets.append(roi)
                else:
                    cases.append(self._case(kind, split, image_path, rows, images, roi_sets))
        return cases, problems

    def _case(self, kind: str, split: str, image_path: str, rows: list[dict[str, str]],
              images: list[Path], roi_sets: list[list[Path]]) -> Case:
        """A case whose read() decodes the mammogram and merges its abnormalities' masks."""
        full = max(images, key=lambda p: p.stat().st_size)  # a series holds one mammogram

        def read() -> list[Frame]:

            """Decode the mammogram; union of its abnormalities' masks."""
            frame = next(dicom_io.iter_frames(full))
            mask = np.zeros(frame.image.shape, np.uint8)
            for roi in roi_sets:
                mask |= self._roi_mask(roi, frame.image.shape)
            return [Frame(frame.image, mask, frame.spacing_mm, frame.spacing_source,
                          frame.photometric, frame.window)]

        subject = image_path.split("/")[0]
        files = [rel(full, self.root)] + [rel(p, self.root) for s in roi_sets for p in s]
        return Case(subject, rows[0]["patient_id"], files, read, case_meta(rows, kind), split)

    def _roi_mask(self, files: list[Path], shape: tuple[int, ...]) -> np.ndarray:
        """The binary file among an ROI series' files (the other is the crop), checked in size."""
        masks = []
        for path in files:
            try:
                arr = dicom_io.read_raw(path)
            except Exception as exc:
                raise CaseError(rel(path, self.root), f"unreadable ROI file ({why(exc)})") \
                    from None
            try:
                masks.append((path, binarise(arr)))
            except ValueError:
                continue  # not binary: the cropped image
        if not masks:
            raise CaseError(rel(files[0], self.root), "no binary ROI mask in this series "
                            f"({len(files)} file(s), all grey-level); image excluded")
        path, mask = max(masks, key=lambda pm: pm[1].size)
        if mask.shape != shape:
            raise CaseError(rel(path, self.root), f"mask size {mask.shape} differs from the "
                            f"mammogram {tuple(shape)}; image excluded (never resized)")
        return mask
