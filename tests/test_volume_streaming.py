"""DBT volumes are decoded frame by frame during the cache build (a worker's memory does not
grow with the volume), and a case that fails part-way is rolled back out of its shard."""

from __future__ import annotations

import csv
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from datasets.real import RealDomain, dicom_io, image_files
from datasets.real.bindings import Binding
from datasets.real.cases import Case, Frame
from datasets.real.dicom_write import phantom, write_dbt
from datasets.real.domain import add_case, preprocess_config
from datasets.real.problems import CaseError
from datasets.shard_build import ShardWriter
from datasets.shards import ARRAYS

FRAMES = 24


def _manifest(root: Path, rows: list[list[str]]) -> None:
    """Write manifest.csv with the required columns."""
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "patient_id", "view"])
        w.writerows(rows)


def _volume(seed: int, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 64, 48) stored 12-bit values and binary masks."""
    vols, masks = zip(*(phantom(64, 48, seed=seed + k, spots=2) for k in range(frames)),
                      strict=True)
    return np.round(np.stack(vols) * 4095).astype(np.uint16), np.stack(masks).astype(np.uint8)


class _Live:
    """Counts arrays alive at once (weakref.finalize on each new one) and the peak."""

    def __init__(self) -> None:
        self.now = self.peak = self.total = 0

    def track(self, arr: np.ndarray) -> np.ndarray:
        """Register `arr`; return it unchanged."""
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)
        weakref.finalize(arr, self._gone)
        return arr

    def _gone(self) -> None:
        """One tracked array was freed."""
        self.now -= 1


@pytest.mark.parametrize("mask_kind", ["tiff", "dicom"])
def test_volume_build_holds_one_or_two_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              mask_kind: str) -> None:
    root = tmp_path / "data"
    (root / "dbt").mkdir(parents=True)
    stored, masks = _volume(100)
    write_dbt(root / "dbt" / "vol.dcm", stored, spacing=(0.085, 0.085), window=(2048, 4096),
              per_frame_window=True)
    if mask_kind == "tiff":
        tifffile.imwrite(root / "dbt" / "vol_mask.tif", masks * 255)
        mask_name = "vol_mask.tif"
    else:
        write_dbt(root / "dbt" / "vol_mask.dcm", masks.astype(np.uint16),
                  spacing=(0.085, 0.085))
        mask_name = "vol_mask.dcm"
    _manifest(root, [["dbt/vol.dcm", f"dbt/{mask_name}", "D01", "CC"]])

    images, mask_frames = _Live(), _Live()
    to_unit, binarise = dicom_io.to_unit, image_files.binarise

    def counted_to_unit(*a: object, **k: object) -> tuple[np.ndarray, str, str]:
        """The real decoder, with its output image tracked."""
        image, window, photometric = to_unit(*a, **k)  # type: ignore[arg-type]
        return images.track(image), window, photometric

    def counted_binarise(*a: object, **k: object) -> np.ndarray:
        """The real mask binariser, with its output tracked."""
        return mask_frames.track(binarise(*a, **k))  # type: ignore[arg-type]

    monkeypatch.setattr(dicom_io, "to_unit", counted_to_unit)
    monkeypatch.setattr(image_files, "binarise", counted_binarise)
    dom = RealDomain(Binding("s", "folder", str(root), {}))
    dom.workers = 1  # in this process, so the counters see the decoding
    data = dom.load(32, tmp_path / "cache")
    assert images.total == FRAMES and mask_frames.total == FRAMES
    assert images.peak <= 2, f"{images.peak} decoded frames alive at once"
    assert mask_frames.peak <= 2, f"{mask_frames.peak} mask frames alive at once"
    assert sorted({m["slice"] for m in data.meta}) == list(range(FRAMES))
    assert not dom.problems


def test_header_frame_count_mismatch_is_reported_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "dbt").mkdir(parents=True)
    stored, masks = _volume(200, frames=6)
    write_dbt(root / "dbt" / "vol.dcm", stored, spacing=(0.085, 0.085), window=(2048, 4096))
    tifffile.imwrite(root / "dbt" / "vol_mask.tif", masks[:4] * 255, photometric="minisblack")
    _manifest(root, [["dbt/vol.dcm", "dbt/vol_mask.tif", "D01", "CC"],
                     ["dbt/vol.dcm", "", "D02", "MLO"]])
    decoded: list[int] = []
    to_unit = dicom_io.to_unit

    def counted(*a: object, **k: object) -> tuple[np.ndarray, str, str]:
        """The real decoder, counted."""
        decoded.append(1)
        return to_unit(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(dicom_io, "to_unit", counted)
    cases, _ = RealDomain(Binding("m", "folder", str(root), {})).adapter.scan()
    with pytest.raises(CaseError) as err:
        next(iter(cases[0].read()))
    assert str(err.value.problem) == "dbt/vol_mask.tif: mask has 4 frame(s), the image 6"
    assert not decoded  # decided from the headers


def _nan_in_frame(path: Path, frames: int, bad: int) -> None:
    """A float32 multi-page TIFF volume whose frame `bad` holds a NaN."""
    vol = np.stack([phantom(64, 48, seed=300 + k)[0] for k in range(frames)]).astype(np.float32)
    vol[bad, 5, 5] = np.nan
    tifffile.imwrite(path, vol)


@pytest.mark.parametrize("cached", [True, False])
def test_failing_middle_frame_leaves_the_case_out(tmp_path: Path, cached: bool) -> None:
    root = tmp_path / "data"
    (root / "dbt").mkdir(parents=True)
    good, good_masks = _volume(400, frames=6)
    write_dbt(root / "dbt" / "good.dcm", good, spacing=(0.085, 0.085), window=(2048, 4096))
    tifffile.imwrite(root / "dbt" / "good_mask.tif", good_masks * 255)
    _nan_in_frame(root / "dbt" / "bad.tif", frames=8, bad=5)
    _manifest(root, [["dbt/bad.tif", "", "D01", "CC"],
                     ["dbt/good.dcm", "dbt/good_mask.tif", "D02", "CC"]])
    dom = RealDomain(Binding("r", "folder", str(root), {}))
    dom.workers = 1
    data = dom.load(32, tmp_path / "cache" if cached else None)
    assert set(data.patient_ids) == {"D02"}
    assert [str(p) for p in dom.problems] == [
        "dbt/bad.tif: unreadable image (ValueError: pixel data contains NaN or infinite "
        "values)"]
    assert sorted({m["slice"] for m in data.meta}) == list(range(6))
    if cached:
        shard = next((tmp_path / "cache").rglob("shard-00000.json"))
        assert '"rows": 0' in shard.read_text()
        npy = np.load(shard.with_name("shard-00000.images.npy"))
        assert npy.shape[0] == 0
        # the same rows as a build into memory
        mem = RealDomain(Binding("r", "folder", str(root), {})).load(32, None)
        assert mem.image_ids == data.image_ids
        np.testing.assert_array_equal(mem.images, np.asarray(data.images))


def _frames(seed: int, n: int, fail_at: int | None) -> Iterator[Frame]:
    """`n` frames without spacing (each adds a defaulted-spacing note); raises at `fail_at`."""
    for k in range(n):
        if k == fail_at:
            raise ValueError(f"frame {k} is corrupt")
        img, mask = phantom(64, 48, seed=seed + k, spots=2)
        yield Frame(img.astype(np.float32), mask.astype(np.uint8), None, "none",
                    "MONOCHROME2", "none (min-max)", k)


def test_shard_writer_rolls_a_failed_case_back(tmp_path: Path) -> None:
    cases = [Case(f"v{i}", f"P{i}", [f"v{i}.tif"],
                  (lambda i=i: _frames(10 * i, 4, 2 if i == 1 else None)), {"view": "CC"},
                  volume=True) for i in range(3)]
    adapter = RealDomain(Binding("w", "folder", str(tmp_path), {})).adapter
    config = preprocess_config({})

    def build(folder: Path, which: list[int]) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        """Write cases `which` into shard 0 of `folder`; the record and arrays."""
        folder.mkdir()
        writer = ShardWriter(folder, 0, 32)
        kept = [add_case(cases[i], adapter, config, 32, writer) for i in which]
        record = writer.finish()
        record["kept"] = kept
        return record, {a: np.load(folder / f"shard-00000.{a}.npy") for a in ARRAYS}

    with_failure, arrays = build(tmp_path / "a", [0, 1, 2])
    without, expected = build(tmp_path / "b", [0, 2])
    assert with_failure["kept"] == [True, False, True]
    assert with_failure["samples"] == without["samples"]
    assert with_failure["notes"] == without["notes"] == {"defaulted_spacing": 8}
    assert [p["reason"] for p in with_failure["problems"]] == [  # type: ignore[index]
        "unreadable (ValueError: frame 2 is corrupt)"]
    for a in ARRAYS:
        np.testing.assert_array_equal(arrays[a], expected[a])
    sizes = {a: (tmp_path / "a" / f"shard-00000.{a}.npy").stat().st_size for a in ARRAYS}
    assert sizes == {a: (tmp_path / "b" / f"shard-00000.{a}.npy").stat().st_size
                     for a in ARRAYS}


@pytest.mark.parametrize("compress", [False, True])
def test_dicom_volume_pixels_are_read_per_frame(tmp_path: Path, compress: bool) -> None:
    """Python-traced peak while iterating a volume's frames does not grow with its frames
    (pydicom reads one frame's bytes from the open file, not the whole pixel data)."""
    rng = np.random.default_rng(0)
    peaks = {}
    for frames in (4, 32):
        vol = (rng.random((frames, 256, 256)) * 4095).astype(np.uint16)
        path = write_dbt(tmp_path / f"v{frames}.dcm", vol, spacing=(0.1, 0.1),
                         window=(2048, 4096), compress=compress)
        tracemalloc.start()
        seen = sum(1 for _ in image_files.iter_image_frames(path))
        peaks[frames] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == frames
    raw_32 = 32 * 256 * 256 * 2
    assert peaks[32] < 1.5 * peaks[4], peaks
    assert peaks[32] < raw_32, (peaks, raw_32)


def test_mask_volume_frames_must_share_one_value(tmp_path: Path) -> None:
    """Read per frame, a mask volume still follows the whole-volume rule {0, v}: a frame whose
    nonzero value differs from an earlier frame's is refused, and the case left out."""
    root = tmp_path / "data"
    (root / "dbt").mkdir(parents=True)
    stored, masks = _volume(500, frames=4)
    masks[:, 10, 10] = 1  # every frame annotated
    values = masks * 255
    values[3] = masks[3]  # the last frame uses 1 instead of 255
    write_dbt(root / "dbt" / "vol.dcm", stored, spacing=(0.085, 0.085), window=(2048, 4096))
    tifffile.imwrite(root / "dbt" / "vol_mask.tif", values, photometric="minisblack")
    _manifest(root, [["dbt/vol.dcm", "dbt/vol_mask.tif", "D01", "CC"]])
    cases, _ = RealDomain(Binding("v", "folder", str(root), {})).adapter.scan()
    with pytest.raises(CaseError) as err:
        list(cases[0].read())
    assert str(err.value.problem) == ("dbt/vol_mask.tif: unusable mask (ValueError: mask is "
                                      "not binary (its frames hold different nonzero values: "
                                      "255 and 1))")
