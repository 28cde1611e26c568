"""INbreast: AllDICOMs/ + AllXML/ (OsiriX plist ROIs) + INbreast.csv (semicolon-separated).

File names are `<FileName>_<patient hash>_MG_<R|L>_<CC|ML>_ANON.dcm` (ML = MLO); the patient
hash is the pseudonymous patient id. ROI `Name`s are normalised (case, plural, the
Spiculated/Espiculated and Assymetry typos, `Point N`). Mask modes:
* `cluster` (default; the paper segments clustered microcalcifications): `Cluster` outlines
  filled; in an image without a Cluster ROI, calcifications are grouped by single linkage
  within `cluster_link_mm` (default 5 mm; BI-RADS calls >= 3 calcifications within about 1 cm
  a cluster) and each group of >= 3 becomes the convex hull of its calcifications.
* `calc`: every calcification ROI; polygons filled, and single-point ROIs (<= 2 points, most
  of INbreast's calcifications) drawn as disks of `point_radius_mm` (default 0.2 mm, i.e. a
  0.4 mm speck, mid-range of the 0.1-1 mm microcalcification sizes) instead of 1-2 pixels, on
  which Dice and HD would be meaningless.
Spacing: from the DICOM, else 0.07 mm (the INbreast paper's pixel size).
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from skimage.draw import ellipse, polygon
from skimage.morphology import convex_hull_image

from benchmark.errors import UserError
from datasets.real import dicom_io
from datasets.real.cases import Adapter, Case, Frame, walk_files
from datasets.real.problems import CaseError, Problem, rel, why

MASK_MODES = ("cluster", "calc")
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)")


def normalise_name(name: str) -> str:
    """Canonical ROI name: 'calcification', 'cluster', 'mass', 'spiculated region', ..."""
    n = " ".join(str(name).strip().lower().split())
    if n.startswith("calcification"):
        return "calcification"
    if n.startswith("cluster"):
        return "cluster"
    if n in ("spiculated region", "espiculated region"):
        return "spiculated region"
    if n in ("assymetry", "asymmetry"):
        return "asymmetry"
    if n.startswith("point"):
        return "point"
    return n or "unnamed"


def parse_points(points: list[str]) -> np.ndarray:
    """`Point_px` strings "(x, y)" -> (n, 2) float array of (row, col)."""
    out = []
    for text in points:
        m = _POINT.search(str(text))
        if m:
            out.append((float(m.group(2)), float(m.group(1))))
    return np.asarray(out, np.float64).reshape(-1, 2)


def read_rois(path: Path) -> list[tuple[str, np.ndarray]]:
    """(normalised name, points (row, col)) of every ROI in an INbreast XML plist."""
    with open(path, "rb") as fh:
        doc = plistlib.load(fh, fmt=plistlib.FMT_XML)
    images = doc.get("Images") or []
    if not images:
        return []
    return [(normalise_name(roi.get("Name", "")), parse_points(roi.get("Point_px", [])))
            for roi in images[0].get("ROIs", [])]


def draw_mask(rois: list[tuple[str, np.ndarray]], shape: tuple[int, int],
              spacing: tuple[float, float], mode: str, radius_mm: float, link_mm: float
              ) -> np.ndarray:
    """Rasterise the ROIs for `mode` ('cluster' or 'calc') into a uint8 mask."""
    mask = np.zeros(shape, bool)
    calcs = [pts for name, pts in rois if name == "calcification" and len(pts)]
    if mode == "calc":
        for pts in calcs:
            _fill(mask, pts, spacing, radius_mm)
        return mask.astype(np.uint8)
    clusters = [pts for name, pts in rois if name == "cluster" and len(pts) >= 3]
    for pts in clusters:
        rr, cc = polygon(pts[:, 0], pts[:, 1], shape)
        mask[rr, cc] = True
    if clusters or len(calcs) < 3:
        return mask.astype(np.uint8)
    centres = np.asarray([p.mean(axis=0) for p in calcs]) * np.asarray(spacing)
    groups = fcluster(linkage(centres, "single"), t=link_mm, criterion="distance")
    for g in np.unique(groups):
        members = [calcs[i] for i in np.flatnonzero(groups == g)]
        if len(members) < 3:
            continue
        part = np.zeros(shape, bool)
        for pts in members:
            _fill(part, pts, spacing, radius_mm)
        mask |= convex_hull_image(part)
    return mask.astype(np.uint8)


def _fill(mask: np.ndarray, pts: np.ndarray, spacing: tuple[float, float], radius_mm: float
          ) -> None:
    """A polygon (>= 3 points) or a disk of radius_mm around a 1-2 point ROI."""
    if len(pts) >= 3:
        rr, cc = polygon(pts[:, 0], pts[:, 1], mask.shape)
        if rr.size:
            mask[rr, cc] = True
            return
    r, c = pts.mean(axis=0)
    rr, cc = ellipse(r, c, max(radius_mm / spacing[0], 0.5), max(radius_mm / spacing[1], 0.5),
                     shape=mask.shape)
    mask[rr, cc] = True


def parse_file_name(name: str) -> dict[str, str] | None:
    """FileName, patient hash, laterality and view from an AllDICOMs file name."""
    parts = Path(name).stem.split("_")
    if len(parts) < 5 or parts[2] != "MG":
        return None
    view = {"ML": "MLO"}.get(parts[4].upper(), parts[4].upper())
    return {"file_name": parts[0], "patient": parts[1], "laterality": parts[3].upper(),
            "view": view}


def find_dir(root: Path, name: str) -> Path | None:
    """`name` in the root or one folder down (the release zip adds a folder)."""
    for cand in (root / name, *sorted(root.glob(f"*/{name}"))):
        if cand.exists():
            return cand
    return None


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """INbreast.csv (semicolon-separated) as File Name -> stripped row."""
    df = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    df.columns = [str(c).strip() for c in df.columns]
    if "File Name" not in df.columns:
        raise UserError(f"'{path}' lacks the 'File Name' column (is it ';'-separated?)")
    df = df.apply(lambda col: col.str.strip())
    return {r["File Name"]: r for r in df.to_dict("records") if r["File Name"]}


class InbreastAdapter(Adapter):
    """INbreast: one case per DICOM; masks from the XML ROIs per the mask mode."""

    format = "inbreast"
    label = "INbreast"
    default_spacing_mm = 0.07
    spacing_note = "the INbreast paper's pixel size (Moreira et al. 2012)"

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        super().__init__(root, options)
        self.mode = str(options.get("mask_mode", "cluster"))
        if self.mode not in MASK_MODES:
            raise UserError(f"mask mode '{self.mode}': expected one of {', '.join(MASK_MODES)}")
        self.radius_mm = float(options.get("point_radius_mm", 0.2))
        self.link_mm = float(options.get("cluster_link_mm", 5.0))

    def source_files(self) -> list[Path]:
        """DICOMs, XMLs and the CSV."""
        return walk_files(self.root, {".dcm", ".xml", ".csv"})

    def scan(self) -> tuple[list[Case], list[Problem]]:
        """One case per AllDICOMs file; CSV rows without a DICOM become problems."""
        dicoms = find_dir(self.root, "AllDICOMs")
        if dicoms is None:
            raise UserError(f"no AllDICOMs folder under '{self.root}'")
        xml_dir = find_dir(self.root, "AllXML")
        csv = find_dir(self.root, "INbreast.csv")
        table = read_table(csv) if csv is not None else {}
        cases: list[Case] = []
        problems: list[Problem] = []
        seen = set()
        for path in sorted(dicoms.glob("*.dcm")):
            info = parse_file_name(path.name)
            if info is None:
                problems.append(Problem(rel(path, self.root), "file name is not "
                                        "<FileName>_<hash>_MG_<R|L>_<CC|ML>_ANON.dcm"))
                continue
            seen.add(info["file_name"])
            row = table.get(info["file_name"], {})
            listed = (row.get("Laterality", "").upper(), row.get("View", "").upper())
            if row and listed != (info["laterality"], info["view"]):
                problems.append(Problem(rel(path, self.root), f"INbreast.csv says "
                                        f"{' '.join(listed)}, the file name "
                                        f"{info['laterality']} {info['view']}; file name used "
                                        "(image kept)"))
            xml = xml_dir / f"{info['file_name']}.xml" if xml_dir is not None else None
            meta = {"view": info["view"], "laterality": info["laterality"],
                    "density": row.get("ACR", ""), "birads": row.get("Bi-Rads", ""),
                    "annotated": bool(xml is not None and xml.is_file())}
            cases.append(self._case(path, xml, info, meta))
        for name in sorted(set(table) - seen):
            problems.append(Problem(f"INbreast.csv: File Name {name}",
                                    "listed in the CSV but missing from AllDICOMs"))
        return cases, problems

    def _case(self, path: Path, xml: Path | None, info: dict[str, str], meta: dict[str, Any]
              ) -> Case:
        """A case whose read() decodes the DICOM and rasterises its XML ROIs."""

        def read() -> list[Frame]:

            """Decode the DICOM; rasterise its ROIs."""
            frame = next(dicom_io.iter_frames(path))
            spacing = frame.spacing_mm or (self.default_spacing_mm,) * 2
            rois: list[tuple[str, np.ndarray]] = []
            if xml is not None and xml.is_file():
                try:
                    rois = read_rois(xml)
                except Exception as exc:
                    raise CaseError(rel(xml, self.root), f"unreadable ROI plist ({why(exc)})") \
                        from None
            mask = draw_mask(rois, frame.image.shape, spacing, self.mode, self.radius_mm,
                             self.link_mm)
            return [Frame(frame.image, mask, frame.spacing_mm, frame.spacing_source,
                          frame.photometric, frame.window)]

        files = [rel(path, self.root)] + ([rel(xml, self.root)] if xml and xml.is_file() else [])
        return Case(info["file_name"], info["patient"], files, read, meta)
