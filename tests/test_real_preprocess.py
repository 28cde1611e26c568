"""DICOM mapping (modality/VOI LUT, polarity, spacing, functional groups, JPEG 2000) and the
crop / 2x2 split / resampling rules of datasets/real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from datasets.real import dicom_io
from datasets.real.dicom_write import phantom, write_dbt, write_mg
from datasets.real.image_files import binarise
from datasets.real.preprocess import PreprocessConfig, breast_region, preprocess


def _ramp() -> np.ndarray:
    return (np.arange(48 * 64).reshape(48, 64) % 4096).astype(np.uint16)


@pytest.mark.parametrize("func", ["LINEAR", "SIGMOID"])
def test_window_matches_pydicom_and_maps_to_unit(tmp_path: Path, func: str) -> None:
    path = write_mg(tmp_path / "w.dcm", _ramp(), bits_stored=12, WindowCenter="1500",
                    WindowWidth="1000", VOILUTFunction=func, RescaleSlope="1",
                    RescaleIntercept="0")
    frame = next(dicom_io.iter_frames(path))
    ds = pydicom.dcmread(path)
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) / 4095.0
    assert frame.window == f"window {func}"
    np.testing.assert_allclose(frame.image, ref, atol=1e-6)
    assert frame.image.min() >= 0.0 and frame.image.max() <= 1.0


def test_voi_lut_sequence_is_used(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16).tobytes()
    path = write_mg(tmp_path / "lut.dcm", _ramp(), bits_stored=12,
                    VOILUTSequence=Sequence([item]))
    frame = next(dicom_io.iter_frames(path))
    assert frame.window == "VOI LUT sequence"
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose(frame.image, apply_voi_lut(ds.pixel_array, ds) / 65535.0,
                               atol=1e-6)
    assert frame.image.max() > 0.8


def test_monochrome1_and_inverse_become_bright_is_dense(tmp_path: Path) -> None:
    img, _ = phantom(64, 48, seed=1)
    stored = np.round(img * 4095).astype(np.uint16)
    m2 = next(dicom_io.iter_frames(write_mg(tmp_path / "m2.dcm", stored, bits_stored=12,
                                            WindowCenter="2048", WindowWidth="4096")))
    m1 = next(dicom_io.iter_frames(write_mg(tmp_path / "m1.dcm", 4095 - stored, bits_stored=12,
                                            photometric="MONOCHROME1", WindowCenter="2048",
                                            WindowWidth="4096")))
    inv = next(dicom_io.iter_frames(write_mg(tmp_path / "inv.dcm", 4095 - stored,
                                             bits_stored=12, PresentationLUTShape="INVERSE",
                                             WindowCenter="2048", WindowWidth="4096")))
    both = next(dicom_io.iter_frames(write_mg(tmp_path / "both.dcm", 4095 - stored,
                                              bits_stored=12, photometric="MONOCHROME1",
                                              PresentationLUTShape="INVERSE")))
    assert np.corrcoef(m1.image.ravel(), m2.image.ravel())[0, 1] > 0.999
    assert np.corrcoef(inv.image.ravel(), m2.image.ravel())[0, 1] > 0.999
    assert np.corrcoef(both.image.ravel(), m2.image.ravel())[0, 1] > 0.999  # inverted once
    assert m1.photometric == "MONOCHROME1"
    # inversion is around the nominal range, not the image's own min/max
    np.testing.assert_allclose(m1.image, m2.image, atol=1e-6)


def test_spacing_fallback_chain(tmp_path: Path) -> None:
    arr = _ramp()
    ps = next(dicom_io.iter_frames(write_mg(tmp_path / "a.dcm", arr, PixelSpacing=["0.1", "0.12"],
                                            ImagerPixelSpacing=["0.2", "0.2"])))
    ips = next(dicom_io.iter_frames(write_mg(
        tmp_path / "b.dcm", arr, ImagerPixelSpacing=["0.1", "0.1"],
        EstimatedRadiographicMagnificationFactor="2")))
    none = next(dicom_io.iter_frames(write_mg(tmp_path / "c.dcm", arr)))
    assert ps.spacing_mm == (0.1, 0.12) and ps.spacing_source == "PixelSpacing"
    assert ips.spacing_mm == pytest.approx((0.05, 0.05))
    assert ips.spacing_source.startswith("ImagerPixelSpacing/magnification")
    assert none.spacing_mm is None and none.spacing_source == "none"


def test_jpeg2000_decodes_bit_exact(tmp_path: Path) -> None:
    arr = (np.random.default_rng(0).random((48, 64)) * 4095).astype(np.uint16)
    path = write_mg(tmp_path / "j2k.dcm", arr, bits_stored=12, compress=True)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    np.testing.assert_array_equal(dicom_io.read_raw(path), arr)
    frame = next(dicom_io.iter_frames(path))
    np.testing.assert_allclose(frame.image, (arr - arr.min()) / (arr.max() - arr.min()),
                               atol=1e-6)


def test_dbt_frames_use_functional_groups(tmp_path: Path) -> None:
    vol = np.stack([np.full((40, 32), 1000 * (k + 1), np.uint16) for k in range(3)])
    path = write_dbt(tmp_path / "v.dcm", vol, spacing=(0.085, 0.09), window=(2000, 2000),
                     per_frame_window=True, compress=True)
    frames = list(dicom_io.iter_frames(path))
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.spacing_mm == (0.085, 0.09) and f.window == "window LINEAR" for f in frames)
    # window 2000/2000 on a 12-bit range: 1000 -> ~0, 2000 -> ~0.5, 3000 -> ~1
    assert [round(float(f.image.mean()), 2) for f in frames] == [0.0, 0.5, 1.0]
    assert "PixelSpacing" not in pydicom.dcmread(path)  # only in the functional groups


def test_binarise_rules() -> None:
    assert binarise(np.array([[0, 255], [255, 0]], np.uint8)).tolist() == [[0, 1], [1, 0]]
    assert binarise(np.zeros((2, 2))).sum() == 0
    with pytest.raises(ValueError, match="not binary"):
        binarise(np.array([[0, 1], [2, 3]]))
    with pytest.raises(ValueError, match="not binary"):
        binarise(np.array([[5, 9]]))  # two values, neither is background 0
    assert binarise(np.array([[0, 120, 250]], np.uint8), lossy=True).tolist() == [[0, 0, 1]]


def test_background_blocks_are_dropped_and_spacing_recomputed() -> None:
    img = np.zeros((80, 60), np.float32)
    img[:, :22] = 0.6  # breast only on the left third: the right blocks are background
    mask = np.zeros_like(img, np.uint8)
    mask[5:9, 5:9] = 1
    cfg = PreprocessConfig(tiles=2, crop=False)
    out = preprocess(img, mask, (0.1, 0.1), 16, cfg)
    assert [s.block for s in out] == ["r0c0", "r1c0"]
    assert out[0].spacing_mm == pytest.approx((0.1 * 40 / 16, 0.1 * 30 / 16))
    assert out[0].mask.any() and out[0].image.shape == (16, 16)
    # an annotated block is never dropped, even when it is background
    mask[60:62, 50:52] = 1
    assert "r1c1" in [s.block for s in preprocess(img, mask, (0.1, 0.1), 16, cfg)]
    # cropping first: the breast's two halves become the blocks, all kept
    cropped = preprocess(img, mask * 0, (0.1, 0.1), 16, PreprocessConfig())
    assert len(cropped) == 4


def test_breast_region_is_largest_component() -> None:
    img, _ = phantom(64, 48, seed=3, spots=0)
    img[0:2, 40:42] = 1.0  # a bright label in the background
    region = breast_region(img)
    assert region[32, 2] and not region[0, 41]


def test_preprocess_refuses_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="differ"):
        preprocess(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.uint8), (1, 1), 4,
                   PreprocessConfig())


def test_jpeg_lossless_decodes_through_the_declared_plugin(tmp_path: Path) -> None:
    """JPEG Lossless (Process 14, common in FFDM) needs pylibjpeg-libjpeg: Pillow cannot."""
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders import JPEGLosslessDecoder
    from pydicom.uid import JPEGLossless

    assert "pylibjpeg" in JPEGLosslessDecoder.available_plugins
    arr = (np.random.default_rng(1).random((48, 64)) * 4095).astype(np.uint16)
    path = write_mg(tmp_path / "ll.dcm", arr, bits_stored=12, PixelSpacing=["0.07", "0.07"])
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    ds.PixelData = encapsulate([imagecodecs.ljpeg_encode(arr, bitspersample=12)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(dicom_io.read_raw(path), arr)
    assert next(dicom_io.iter_frames(path)).spacing_mm == (0.07, 0.07)
