"""The tile geometry is exact: a reference mask pushed through preprocessing and back
(`plan` → `apply_layout` → `unmap`) is the original mask, pixel for pixel in place.

Fixtures of odd sizes, decoded from real DICOM files (MONOCHROME1, a right breast that is
mirrored, 2x2 tiles, a DBT volume). The masks are large shapes, so the resampling itself loses
well under 1 % of their area; a one-pixel shift of a tile would cost far more (checked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.real.dicom_io import iter_frames
from datasets.real.dicom_write import phantom, write_dbt, write_mg
from datasets.real.preprocess import Layout, PreprocessConfig, apply_layout, plan, unmap


def _shape_mask(rows: int, cols: int, laterality: str) -> np.ndarray:
    """An asymmetric mask over all four quadrants (an ellipse and an L), mirrored for R."""
    r, c = np.mgrid[0:rows, 0:cols]
    mask = (((r - rows * 0.5) / (rows * 0.3)) ** 2 + ((c - cols * 0.3) / (cols * 0.2)) ** 2) < 1
    mask |= (r > rows * 0.15) & (r < rows * 0.25) & (c > 2) & (c < cols * 0.5)
    mask |= (c > 3) & (c < cols * 0.12) & (r > rows * 0.15) & (r < rows * 0.85)
    mask = mask.astype(np.uint8)
    return mask[:, ::-1].copy() if laterality == "R" else mask


def _round_trip(image: np.ndarray, mask: np.ndarray, size: int, laterality: str,
                cfg: PreprocessConfig) -> tuple[np.ndarray, Layout]:
    """The mask through the training preprocessing and back to the original grid."""
    layout = plan(image, mask, size, cfg, laterality)
    tiles = apply_layout(image, mask, (0.1, 0.1), layout)
    back = unmap(layout, {t.block: t.mask.astype(np.float32) for t in tiles}) >= 0.5
    return back, layout


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _centroid(m: np.ndarray) -> np.ndarray:
    return np.argwhere(m).mean(axis=0)


@pytest.mark.parametrize(("rows", "cols", "laterality", "photometric", "size"), [
    (203, 157, "L", "MONOCHROME2", 128),
    (251, 199, "R", "MONOCHROME1", 160),
    (1001, 777, "R", "MONOCHROME2", 512),
    (2457, 1996, "R", "MONOCHROME1", 512),  # a full-size FFDM image at the paper profile
])
def test_mammogram_mask_round_trip_is_exact(tmp_path: Path, rows: int, cols: int,
                                            laterality: str, photometric: str,
                                            size: int) -> None:
    img, _ = phantom(rows, cols, seed=rows, laterality=laterality)
    stored = np.round(img * 4000).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)
    path = write_mg(tmp_path / "mg.dcm", stored, bits_stored=12, photometric=photometric)
    frame = next(iter_frames(path))
    # no window: min-max; MONOCHROME1 inverted, so bright = dense either way
    assert np.allclose(frame.image, (img - img.min()) / (img.max() - img.min()), atol=2e-3)
    mask = _shape_mask(rows, cols, laterality)
    back, layout = _round_trip(frame.image, mask, size, laterality, PreprocessConfig())
    assert layout.flipped == (laterality == "R")
    assert len(layout.blocks) == 4
    assert back.shape == mask.shape
    orig = mask.astype(bool)
    assert _iou(back, orig) >= 0.99
    # in place: no tile is shifted (a one-pixel shift costs more IoU than the resampling)
    for i, j in layout.blocks:
        rs, cs = layout.block_slices(i, j)
        if layout.flipped:
            cs = slice(cols - cs.stop, cols - cs.start)
        a, b = back[rs, cs], orig[rs, cs]
        if b.sum() > 50:  # within half a resampled pixel (a shifted tile: a whole one)
            scale = max(1.0, max(a.shape) / size)
            assert np.abs(_centroid(a) - _centroid(b)).max() < 0.5 * scale, (i, j)
    if size >= max(max(e[-1] - e[0] for e in (layout.row_edges, layout.col_edges)) // 2, 1):
        # tiles not shrunk: the original pixel grid is resolved, so any one-pixel shift of
        # a tile would show (shrunk tiles are held to the centroid check above)
        for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            assert _iou(back, np.roll(orig, shift, axis=(0, 1))) < _iou(back, orig) - 1e-3


def test_mirror_and_crop_put_a_right_breast_chest_wall_left() -> None:
    img, _ = phantom(120, 90, seed=3, laterality="R")
    layout = plan(img, np.zeros(img.shape, np.uint8), 64, PreprocessConfig(), "RIGHT")
    assert layout.flipped
    tiles = apply_layout(img, np.zeros(img.shape, np.uint8), (0.1, 0.1), layout)
    left = [t for t in tiles if t.block.endswith("c0")]
    right = [t for t in tiles if t.block.endswith("c1")]
    assert np.mean([t.image.mean() for t in left]) > np.mean([t.image.mean() for t in right])
    off = plan(img, np.zeros(img.shape, np.uint8), 64, PreprocessConfig(flip_right=False), "R")
    assert not off.flipped


def test_dbt_volume_round_trip_every_slice(tmp_path: Path) -> None:
    rows, cols, n = 181, 143, 5
    img, _ = phantom(rows, cols, seed=9, laterality="R")
    volume = np.stack([np.round(img * 4000).astype(np.uint16)] * n)
    path = write_dbt(tmp_path / "dbt.dcm", volume, spacing=(0.1, 0.1), window=(2000, 4000))
    masks = [np.roll(_shape_mask(rows, cols, "R"), k * 3, axis=0) for k in range(n)]
    frames = list(iter_frames(path))
    assert len(frames) == n
    for frame, mask in zip(frames, masks, strict=True):
        back, layout = _round_trip(frame.image, mask, 160, "R", PreprocessConfig())
        assert layout.flipped and back.shape == (rows, cols)
        assert _iou(back, mask.astype(bool)) >= 0.99


def test_background_tiles_map_back_to_fill_and_image_round_trip() -> None:
    img, _ = phantom(160, 121, seed=5, laterality="L")
    mask = np.zeros(img.shape, np.uint8)
    layout = plan(img, mask, 128, PreprocessConfig(min_breast_fraction=0.9), "L")
    assert len(layout.blocks) < 4  # some quarter is background and dropped
    tiles = apply_layout(img, mask, (0.1, 0.1), layout)
    back = unmap(layout, {t.block: t.image for t in tiles}, fill=-1.0)
    covered = back >= 0
    assert not covered.all() and covered.any()
    assert np.abs(back[covered] - img[covered]).mean() < 0.02  # the image itself comes back
