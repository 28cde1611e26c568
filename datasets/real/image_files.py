"""Read images and masks from DICOM, PNG, TIFF or JPEG files into the common frame form.

DICOM goes through dicom_io (LUTs, polarity, spacing). PNG/JPEG are read with Pillow, TIFF with
tifffile (multi-page TIFF = a volume); these carry no trustworthy spacing and no window, so they
are normalised by the per-image min..max (the same rule as a DICOM without a window).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.real import dicom_io
from datasets.real.dicom_io import DecodedFrame

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def is_dicom(path: Path) -> bool:
    """DICOM by suffix, or by the 'DICM' preamble for suffix-less files."""
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_raster(path: Path) -> np.ndarray:
    """Pixel array of a PNG/JPEG (2D) or TIFF (2D, or 3D for a multi-page volume)."""
    suffix = path.suffix.lower()
    if suffix in {".tif", ".tiff"}:
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "I", "I;16", "I;16B", "F", "1"):
            im = im.convert("L")
        return np.asarray(im)


def _unit(arr: np.ndarray) -> np.ndarray:
    """Min..max normalisation to float32 [0, 1], refusing NaN/inf."""
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("pixel data contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)


def read_frames(path: Path, frames: list[int] | None = None) -> list[DecodedFrame]:
    """Every requested frame of an image file (a 2D file has the single frame 0)."""
    if is_dicom(path):
        return list(dicom_io.iter_frames(path, frames))
    arr = read_raster(path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and path.suffix.lower() not in {".tif", ".tiff"}:
        arr = arr[..., 0]
    stack = arr[None] if arr.ndim == 2 else arr
    if stack.ndim != 3:
        raise ValueError(f"unsupported image shape {arr.shape}")
    picks = range(len(stack)) if frames is None else frames
    out = []
    for i in picks:
        if not 0 <= i < len(stack):
            raise ValueError(f"slice {i} out of range (the file has {len(stack)})")
        out.append(DecodedFrame(_unit(stack[i]), None, "none", "raster (bright = dense)",
                                "none (min-max)", i))
    return out


def read_mask(path: Path, index: int | None = None, lossy: bool = False) -> np.ndarray:
    """A binary uint8 mask (all frames when `index` is None for a volume).

    Accepted: values {0, v} (e.g. 0/1 or 0/255). Anything else is refused as non-binary, except
    for lossy JPEG masks (`lossy`), which are thresholded at half their maximum.
    """
    if is_dicom(path):
        arr = dicom_io.read_raw(path, index)
    else:
        arr = read_raster(path)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and \
                path.suffix.lower() not in {".tif", ".tiff"}:
            arr = arr[..., 0]
        if index is not None and arr.ndim == 3:
            arr = arr[index]
    return binarise(arr, lossy)


def binarise(arr: np.ndarray, lossy: bool = False) -> np.ndarray:
    """{0, v} -> {0, 1}; raises ValueError naming the values for a non-binary mask."""
    a = np.asarray(arr)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError("mask contains NaN or infinite values")
    if lossy:
        top = float(a.max())
        return (a > top / 2).astype(np.uint8) if top > 0 else np.zeros(a.shape, np.uint8)
    values = np.unique(a)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (" ..." if values.size > 5 else "")
        raise ValueError(f"mask is not binary ({values.size} distinct values: {shown})")
    return (a > 0).astype(np.uint8)
