"""Write small, standard-conforming DICOM files: test fixtures and the `bench perf data` set.

2D mammograms (Digital Mammography X-Ray Image Storage) and DBT volumes (Breast Tomosynthesis
Image Storage, enhanced multi-frame with shared / per-frame functional groups), optionally
JPEG 2000 lossless compressed through pydicom's pylibjpeg encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

MG_SOP = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - Presentation
DBT_SOP = "1.2.840.10008.5.1.4.1.1.13.1.3"  # Breast Tomosynthesis Image Storage


def _base(sop: str, arr: np.ndarray, bits_stored: int, photometric: str,
          extra: dict[str, Any]) -> Dataset:
    """A dataset with file meta, pixel description and `extra` attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()  # type 1
    ds.Modality = "MG"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated = 8 if arr.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


def write_mg(path: Path, arr: np.ndarray, *, bits_stored: int | None = None,
             photometric: str = "MONOCHROME2", compress: bool = False,
             **extra: Any) -> Path:
    """Write a single-frame MG image (uint8 or uint16 `arr`); `extra` sets any attribute."""
    bits = bits_stored or (8 if arr.dtype == np.uint8 else 16)
    ds = _base(MG_SOP, arr, bits, photometric, extra)
    if compress:
        ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dbt(path: Path, volume: np.ndarray, *, spacing: tuple[float, float],
              window: tuple[float, float] | None = None, bits_stored: int = 12,
              photometric: str = "MONOCHROME2", per_frame_window: bool = False,
              compress: bool = False, **extra: Any) -> Path:
    """Write an enhanced multi-frame DBT volume (frames, rows, cols) with functional groups.

    Spacing sits in the shared PixelMeasuresSequence only (no top-level PixelSpacing), the
    window in the shared or, with `per_frame_window`, the per-frame FrameVOILUTSequence.
    """
    ds = _base(DBT_SOP, volume, bits_stored, photometric,
               {"FrameOfReferenceUID": generate_uid(), **extra})  # the IOD requires one
    ds.NumberOfFrames = int(volume.shape[0])
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    measures.SliceThickness = "1"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    per_frame = []
    for k in range(volume.shape[0]):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = ["0", "0", f"{k:g}"]
        item.PlanePositionSequence = Sequence([pos])
        if window is not None and per_frame_window:
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
            item.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(item)
    if window is not None and not per_frame_window:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
        shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    if compress:
        ds.compress(JPEG2000Lossless, volume, encoding_plugin="pylibjpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom(rows: int, cols: int, seed: int, spots: int = 3, laterality: str = "L"
            ) -> tuple[np.ndarray, np.ndarray]:
    """A breast-like half-ellipse in [0, 1] on a dark background with bright specks, + mask."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    c_edge = c if laterality == "L" else cols - 1 - c
    breast = ((r - rows / 2) / (rows * 0.45)) ** 2 + (c_edge / (cols * 0.8)) ** 2 < 1
    img = np.where(breast, 0.35 + 0.15 * rng.random((rows, cols)), 0.02)
    mask = np.zeros((rows, cols), np.uint8)
    for _ in range(spots):
        cr = int(rng.integers(rows // 4, 3 * rows // 4))
        cc = int(rng.integers(1, max(2, cols // 3))) if laterality == "L" else \
            int(rng.integers(cols - cols // 3, cols - 1))
        spot = (r - cr) ** 2 + (c - cc) ** 2 <= 4
        img[spot] = 0.95
        mask[spot] = 1
    return img.astype(np.float32), mask
