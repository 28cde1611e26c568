"""Read images and masks from DICOM, PNG, TIFF or JPEG files into the common frame form.

DICOM goes through dicom_io (LUTs, polarity, spacing). PNG/JPEG are read with Pillow, TIFF with
tifffile (multi-page TIFF = a volume); these carry no trustworthy spacing and no window, so they
are normalised by the per-image min..max (the same rule as a DICOM without a window).
"""

from __future__ import annotations

from collections.abc import Iterator
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


def _tiff_stack(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    """(frames, lazy iterator over them) of a TIFF, as `tifffile.imread` shapes it; a volume
    whose pages are its frames is read page by page, any other layout (a single RGB page...)
    whole, as before."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape = tuple(series.shape)
        paged = len(shape) == 3 and len(series.pages) == shape[0] and \
            all(p is not None and tuple(p.shape) == shape[1:] for p in series.pages)
    if len(shape) not in (2, 3):
        raise ValueError(f"unsupported image shape {shape}")

    def pages() -> Iterator[np.ndarray]:
        """Each frame in turn (the file stays open while it is iterated)."""
        if len(shape) == 2:
            yield np.asarray(tifffile.imread(path))
            return
        if not paged:
            yield from np.asarray(tifffile.imread(path))
            return
        with tifffile.TiffFile(path) as tif:
            for page in tif.series[0].pages:
                yield np.asarray(page.asarray())

    return (1 if len(shape) == 2 else shape[0]), pages()


def _raster_stack(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    """(frames, iterator) of a raster file: PNG/JPEG hold one 2D frame (colour: its first
    channel), a TIFF one or more (see `_tiff_stack`)."""
    if path.suffix.lower() in {".tif", ".tiff"}:
        return _tiff_stack(path)

    def one() -> Iterator[np.ndarray]:
        """The single frame, decoded when asked for."""
        arr = read_raster(path)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"unsupported image shape {arr.shape}")
        yield arr

    return 1, one()


def count_frames(path: Path) -> int:
    """How many frames an image or mask file holds, from its header where the format has one
    (DICOM NumberOfFrames, TIFF pages), so a volume's frame count is known before decoding."""
    if is_dicom(path):
        return dicom_io.n_frames(dicom_io.open_lazy(path))
    return _raster_stack(path)[0]


def _pick(total: int, stack: Iterator[np.ndarray], frames: list[int] | None
          ) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) for the requested frames of a lazily read stack, in request order."""
    if frames is None:
        yield from enumerate(stack)
        return
    for i in frames:
        if not 0 <= i < total:
            raise ValueError(f"slice {i} out of range (the file has {total})")
    wanted, cache = set(frames), {}
    for k, arr in enumerate(stack):
        if k in wanted:
            cache[k] = arr
        if len(cache) == len(wanted):
            break
    for i in frames:
        yield i, cache[i]


def iter_image_frames(path: Path, frames: list[int] | None = None) -> Iterator[DecodedFrame]:
    """Every requested frame of an image file, decoded one at a time (a 2D file has the
    single frame 0)."""
    if is_dicom(path):
        yield from dicom_io.iter_frames(path, frames)
        return
    total, stack = _raster_stack(path)
    for i, arr in _pick(total, stack, frames):
        yield DecodedFrame(_unit(arr), None, "none", "raster (bright = dense)",
                           "none (min-max)", i)


def read_frames(path: Path, frames: list[int] | None = None) -> list[DecodedFrame]:
    """Every requested frame of an image file, as a list (single images; a volume is better
    read with `iter_image_frames`)."""
    return list(iter_image_frames(path, frames))


def iter_mask_frames(path: Path, frames: list[int] | None = None) -> Iterator[np.ndarray]:
    """Binary uint8 frames of a mask file, one at a time (all when `frames` is None).

    Same rule as `read_mask` over the whole volume: {0, v} with one v for every frame, so a
    later frame whose nonzero value differs is refused as non-binary."""
    if is_dicom(path):
        picked: Iterator[tuple[int, np.ndarray]] = zip(
            range(10**9) if frames is None else frames, dicom_io.iter_raw(path, frames),
            strict=False)
    else:
        picked = _pick(*_raster_stack(path), frames)
    seen: float | None = None
    for _i, arr in picked:
        out = binarise(arr)
        if out.any():
            top = float(np.asarray(arr).max())
            if seen is not None and top != seen:
                raise ValueError(f"mask is not binary (its frames hold different nonzero "
                                 f"values: {seen:g} and {top:g})")
            seen = top
        yield out


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
