"""The `folder` format: a manifest CSV over PNG / TIFF / DICOM files (e.g. private FFDM-DBT).

Columns (header names exact, order free): `image`, `mask`, `patient_id`, `view` required;
`spacing_mm` (one value, or "row col"), `slice` (frame index in a multi-frame file),
`laterality`, `volume_id`, `image_id` optional. Paths are relative to the manifest's folder.
An empty `mask` means a normal image (empty mask). A row whose image is a multi-frame DICOM
(e.g. Breast Tomosynthesis Image Storage) or multi-page TIFF and has no `slice` is a volume:
every frame becomes an image, read one at a time, with spacing and window from the functional
groups; its mask, if any, must be a volume with the same number of frames. A manifest spacing
overrides the file's (the user's explicit statement wins).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from datasets.real.cases import Adapter, Case, Frame, walk_files
from datasets.real.image_files import count_frames, iter_image_frames, iter_mask_frames
from datasets.real.problems import CaseError, Problem, rel, why

REQUIRED = ("image", "mask", "patient_id", "view")


def read_manifest(path: Path) -> pd.DataFrame:
    """The manifest as strings; a missing file or column is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"manifest '{path}' does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"manifest '{path}' is not a readable CSV: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"manifest '{path}' lacks column(s) {', '.join(missing)} "
                        f"(required: {', '.join(REQUIRED)})")
    return df.apply(lambda col: col.str.strip())


def parse_spacing(text: str) -> tuple[float, float] | None:
    """'0.1' or '0.1 0.12' / '0.1,0.12' / '0.1\\0.12' -> (row, col) mm; '' -> None."""
    if not text:
        return None
    parts = [p for p in text.replace(",", " ").replace("\\", " ").replace(";", " ").split() if p]
    vals = [float(p) for p in parts]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"bad spacing_mm '{text}'")
    return vals[0], vals[1]


class FolderAdapter(Adapter):
    """Reads the rows of a manifest CSV; each row is an image, a slice, or a whole volume."""

    format = "folder"
    label = "folder"
    spacing_note = "the --spacing-mm option of `bench data add` (default 0.1 mm)"

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        super().__init__(root, options)
        self.manifest = self.root / str(options.get("manifest", "manifest.csv"))
        self.default_spacing_mm = float(options.get("spacing_mm", 0.1))
        self.label = f"folder ({self.manifest.name})"

    def source_files(self) -> list[Path]:
        """The manifest and every file under the root."""
        return walk_files(self.root)

    def scan(self) -> tuple[list[Case], list[Problem]]:
        """One case per manifest row; rows with missing files or bad values become problems."""
        df = read_manifest(self.manifest)
        cases: list[Case] = []
        problems: list[Problem] = []
        base = self.manifest.parent
        first_line: dict[str, int] = {}  # image id -> manifest line that listed it first
        for n, row in enumerate(df.to_dict("records"), start=2):  # line 1 is the header
            where = f"{self.manifest.name} line {n}"
            try:
                case = self._case(row, base)
            except CaseError as exc:
                problems.append(exc.problem)
                continue
            except ValueError as exc:
                problems.append(Problem(where, str(exc)))
                continue
            if case.image_id in first_line:  # two rows would share one cache/split entry
                problems.append(Problem(where, f"duplicate image id '{case.image_id}' (first "
                                               f"on line {first_line[case.image_id]}); "
                                               "row skipped"))
                continue
            first_line[case.image_id] = n
            cases.append(case)
        return cases, problems

    def _case(self, row: dict[str, str], base: Path) -> Case:
        """Build the case of one row (checks the files exist; decodes nothing)."""
        image = base / row["image"]
        mask = base / row["mask"] if row["mask"] else None
        root = self.root.resolve()
        for path in (image, mask):
            if path is not None and not path.resolve().is_relative_to(root):
                # the binding's fingerprint and privacy checks cover the root only
                raise CaseError(str(path), "lies outside the dataset root "
                                           f"'{self.root}'; paths are relative to the manifest")
            if path is not None and not path.is_file():
                raise CaseError(rel(path, self.root), "listed in the manifest but missing")
        if not row["patient_id"]:
            raise CaseError(rel(image, self.root), "empty patient_id in the manifest")
        spacing = parse_spacing(row.get("spacing_mm", ""))
        sl = int(row["slice"]) if row.get("slice", "") else None
        image_id = row.get("image_id") or (Path(row["image"]).with_suffix("").as_posix()
                                           + (f"-S{sl:03d}" if sl is not None else ""))
        meta = {"view": row["view"], "laterality": row.get("laterality", "")}
        if row.get("volume_id"):
            meta["volume_id"] = row["volume_id"]
        elif sl is not None:
            meta["volume_id"] = Path(row["image"]).as_posix()
        if sl is not None:
            meta["slice"] = sl

        def read() -> Iterator[Frame]:

            """Decode this row's frame(s) and mask(s), one frame at a time."""
            return self._read(image, mask, sl, spacing)

        files = [rel(image, self.root)] + ([rel(mask, self.root)] if mask else [])
        return Case(image_id, row["patient_id"], files, read, meta, volume=sl is None)

    def _read(self, image: Path, mask: Path | None, sl: int | None,
              spacing: tuple[float, float] | None) -> Iterator[Frame]:
        """Decode image frame k with mask frame k, one pair at a time (a volume is never whole
        in memory); the frame counts are compared from the headers before any pixel."""
        image_rel = rel(image, self.root)
        mask_rel = rel(mask, self.root) if mask is not None else image_rel
        try:
            n_image = 1 if sl is not None else count_frames(image)
        except Exception as exc:
            raise CaseError(image_rel, f"unreadable image ({why(exc)})") from None
        pick = None if sl is None else [sl]
        masks: Iterator[np.ndarray] | None = None
        if mask is not None:
            try:
                n_mask = count_frames(mask)
                if sl is not None and n_mask > 1:  # a mask volume: the row's slice of it
                    if not 0 <= sl < n_mask:
                        raise ValueError(f"slice {sl} out of range (the mask has {n_mask})")
                    n_mask = 1
                    masks = iter_mask_frames(mask, pick)
                else:
                    masks = iter_mask_frames(mask)
            except Exception as exc:
                raise CaseError(mask_rel, f"unusable mask ({why(exc)})") from None
            if n_mask != n_image:
                raise CaseError(mask_rel, f"mask has {n_mask} frame(s), the image {n_image}")
        frames = iter_image_frames(image, pick)
        for k in range(n_image):
            try:
                d = next(frames, None)
                if d is None:
                    raise ValueError(f"the file ends after {k} of {n_image} frames")
            except Exception as exc:
                raise CaseError(image_rel, f"unreadable image ({why(exc)})") from None
            if masks is None:
                m = np.zeros(d.image.shape, np.uint8)
            else:
                try:
                    m = next(masks)
                except Exception as exc:
                    raise CaseError(mask_rel, f"unusable mask ({why(exc)})") from None
            if m.shape != d.image.shape:
                raise CaseError(mask_rel, f"mask size {m.shape} differs "
                                f"from image size {d.image.shape}; excluded (never resized)")
            sp, src = (spacing, "manifest spacing_mm") if spacing else (d.spacing_mm,
                                                                        d.spacing_source)
            yield Frame(d.image, m, sp, src, d.photometric, d.window,
                        d.index if (sl is not None or n_image > 1) else None)
            del d, m  # the next pair is decoded with only the consumer's copy alive
