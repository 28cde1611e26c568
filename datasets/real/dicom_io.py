"""DICOM reading: pixel data (compressed too), modality LUT, VOI LUT / window, polarity, spacing.

pydicom does the decoding (JPEG 2000 / JPEG Lossless through the pylibjpeg plugins declared in
pyproject.toml), `apply_modality_lut` and `apply_voi_lut` (LINEAR, LINEAR_EXACT, SIGMOID, VOI
LUT sequences). Hand-written here, because pydicom does not do it: (1) for enhanced multi-frame
objects (DBT) the per-frame / shared functional groups are flattened into a plain Dataset so the
same pydicom functions apply to each frame; (2) the output range of the VOI step, needed to
invert MONOCHROME1 around the nominal range rather than the per-image min/max; (3) the spacing
fallback chain. No patient-identifying attribute (PatientName, PatientID, dates, institution)
is ever read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

# Attributes copied from functional-group items into the flat per-frame Dataset.
_GROUPS = {
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
}
_TOP = ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "VOILUTSequence",
        "WindowCenter", "WindowWidth", "VOILUTFunction", "PresentationLUTShape",
        "PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor",
        "Rows", "Columns")


@dataclass
class DecodedFrame:
    """One frame as float32 in [0, 1] (bright = dense) plus how it was mapped and its spacing."""

    image: np.ndarray
    spacing_mm: tuple[float, float] | None  # None: the file carries no spacing
    spacing_source: str
    photometric: str
    window: str  # "VOI LUT sequence", "window LINEAR", ... or "none (min-max)"
    index: int  # frame index (0 for a single-frame image)


def read_header(path: Path) -> Dataset:
    """Header only (no pixel data): for classifying and indexing files cheaply."""
    return pydicom.dcmread(path, stop_before_pixels=True)


def n_frames(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_dataset(ds: Dataset, index: int) -> Dataset:
    """A flat Dataset with the attributes that govern frame `index`.

    Top-level attributes first, then the shared functional groups, then the per-frame group of
    this frame (most specific wins), so pydicom's LUT functions see one frame's values.
    """
    flat = Dataset()
    if hasattr(ds, "file_meta"):
        flat.file_meta = ds.file_meta  # LUT data is parsed with the file's endianness
    for key in _TOP:
        if key in ds:
            setattr(flat, key, ds[key].value)
    groups: list[Dataset] = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for seq_name, keys in _GROUPS.items():
            seq = group.get(seq_name)
            if not seq:
                continue
            for key in keys:
                if key in seq[0]:
                    setattr(flat, key, seq[0][key].value)
    return flat


def resolve_spacing(flat: Dataset) -> tuple[tuple[float, float] | None, str]:
    """(row, col) mm: PixelSpacing, else ImagerPixelSpacing / magnification factor, else None."""
    ps = _pair(flat.get("PixelSpacing"))
    if ps is not None:
        return ps, "PixelSpacing"
    ips = _pair(flat.get("ImagerPixelSpacing"))
    if ips is not None:
        try:
            mag = float(flat.get("EstimatedRadiographicMagnificationFactor") or 1.0)
        except (TypeError, ValueError):
            mag = 1.0
        mag = mag if mag > 0 else 1.0
        source = "ImagerPixelSpacing" if mag == 1.0 else \
            f"ImagerPixelSpacing/magnification {mag:g}"
        return (ips[0] / mag, ips[1] / mag), source
    return None, "none"


def _pair(value: object) -> tuple[float, float] | None:
    """A positive, finite (row, col) pair from a DICOM DS value, or None."""
    try:
        vals = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(vals) != 2 or not all(np.isfinite(v) and v > 0 for v in vals):
        return None
    return vals[0], vals[1]


def nominal_range(flat: Dataset) -> tuple[float, float]:
    """The value range of the stored pixels after the modality LUT (PS3.3 C.11.1.1.1).

    Mirrors the range pydicom's `apply_windowing` maps a window onto.
    """
    bits = int(flat.get("BitsStored", 16) or 16)
    if flat.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(flat.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(flat.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, icpt = flat.get("RescaleSlope"), flat.get("RescaleIntercept")
    if slope is not None and icpt is not None and not flat.get("ModalityLUTSequence"):
        lo, hi = sorted((lo * float(slope) + float(icpt), hi * float(slope) + float(icpt)))
    return lo, hi


def to_unit(raw: np.ndarray, flat: Dataset) -> tuple[np.ndarray, str, str]:
    """Stored values -> float32 [0, 1], bright = dense. Returns (image, window, photometric).

    Modality LUT, then the VOI LUT sequence or window (first one) mapped from its output range;
    with neither, the per-image min..max (CBIS-DDSM and INbreast carry no window). Inverted once
    when PhotometricInterpretation is MONOCHROME1 or PresentationLUTShape is INVERSE (the MG IOD
    pairs the two to describe the same single inversion), around the nominal range.
    """
    photometric = str(flat.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    modality = np.asarray(apply_modality_lut(raw, flat))
    arr = modality.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("pixel data contains NaN or infinite values")
    if flat.get("VOILUTSequence"):
        bits = int(flat.VOILUTSequence[0].LUTDescriptor[2])
        lut_in = modality if modality.dtype.kind in "iu" else np.rint(arr).astype(np.int64)
        arr = np.asarray(apply_voi_lut(lut_in, flat, prefer_lut=True), np.float64)
        lo, hi, window = 0.0, float(2**bits - 1), "VOI LUT sequence"
    elif flat.get("WindowCenter") is not None and flat.get("WindowWidth") is not None:
        func = str(flat.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        arr = np.asarray(apply_voi_lut(arr, flat, prefer_lut=False), np.float64)
        lo, hi = nominal_range(flat)
        window = f"window {func}"
    else:
        lo, hi, window = float(arr.min()), float(arr.max()), "none (min-max)"
    inverse = photometric == "MONOCHROME1" or \
        str(flat.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    if inverse:
        arr = (lo + hi) - arr
    out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.clip(out, 0.0, 1.0).astype(np.float32), window, photometric


DEFER_BYTES = 1 << 16  # elements this large (the pixel data) are read only when used


def open_lazy(path: Path) -> Dataset:
    """The dataset with its pixel data (and other large elements) left on disk until used,
    so a multi-frame volume costs its header, not its pixels; refuses a file without pixels."""
    ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    if "PixelData" not in ds:
        raise ValueError("no pixel data (truncated file or not an image)")
    return ds


def _raw_frames(path: Path, ds: Dataset, frames: list[int] | None) -> Iterator[np.ndarray]:
    """Stored values of the requested frames, one at a time: a multi-frame file is decoded
    frame by frame from the open file (pydicom reads only that frame's bytes), so a DBT
    volume is never whole in memory."""
    total = n_frames(ds)
    if total == 1:
        for i in [0] if frames is None else frames:
            if i != 0:
                raise ValueError(f"frame {i} out of range (the file has {total})")
            yield np.asarray(ds.pixel_array)
        return
    with open(path, "rb") as fh:
        for i in range(total) if frames is None else frames:
            if not 0 <= i < total:
                raise ValueError(f"frame {i} out of range (the file has {total})")
            fh.seek(0)
            yield np.asarray(pixel_array(fh, index=i))


def iter_frames(path: Path, frames: list[int] | None = None) -> Iterator[DecodedFrame]:
    """Decode frames of a DICOM file one at a time (all frames when `frames` is None)."""
    ds = open_lazy(path)
    picks = range(n_frames(ds)) if frames is None else frames
    for i, raw in zip(picks, _raw_frames(path, ds, frames), strict=False):
        if raw.ndim != 2:
            raise ValueError(f"expected a grayscale frame, got shape {raw.shape}")
        flat = frame_dataset(ds, i)
        image, window, photometric = to_unit(raw, flat)
        spacing, source = resolve_spacing(flat)
        yield DecodedFrame(image, spacing, source, photometric, window, i)


def iter_raw(path: Path, frames: list[int] | None = None) -> Iterator[np.ndarray]:
    """Stored pixel values with no LUT (for mask files), one frame at a time."""
    ds = open_lazy(path)
    yield from _raw_frames(path, ds, frames)


def read_raw(path: Path, index: int | None = None) -> np.ndarray:
    """Stored pixel values with no LUT (for mask files); all frames when index is None."""
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError("no pixel data (truncated file or not an image)")
    if index is not None and n_frames(ds) > 1:
        return np.asarray(pixel_array(ds, index=index))
    return np.asarray(ds.pixel_array)
