"""Samples/s of a real domain read from the preprocessed shard cache vs decoded from DICOM.

Run as `bench perf data` (a generated folder dataset of full-field-sized DICOMs, JPEG 2000
compressed or not) or `bench perf data NAME` (a bound dataset). Both paths produce the same
DomainData; the decode path includes DICOM decoding, LUTs, crop, 2x2 split and resampling.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasets.real.bindings import Binding
from datasets.real.dicom_write import phantom, write_mg
from datasets.real.domain import RealDomain


def make_dicom_set(folder: Path, n: int, rows: int, cols: int, compress: bool) -> Binding:
    """`n` 12-bit MONOCHROME1 mammogram-like DICOMs + masks and a manifest, as a binding."""
    from PIL import Image

    lines = ["image,mask,patient_id,view"]
    for i in range(n):
        img, mask = phantom(rows, cols, seed=i, spots=6, laterality="LR"[i % 2])
        stored = np.round((1.0 - img) * 4095).astype(np.uint16)
        write_mg(folder / f"img{i:03d}.dcm", stored, bits_stored=12, photometric="MONOCHROME1",
                 compress=compress, PixelSpacing=["0.1", "0.1"])
        Image.fromarray(mask * 255).save(folder / f"img{i:03d}_mask.png")
        view = "CC" if i % 4 < 2 else "MLO"
        lines.append(f"img{i:03d}.dcm,img{i:03d}_mask.png,P{i // 2:03d},{view}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return Binding("perf-data", "folder", str(folder), {})


def run_data_perf(binding: Binding | None = None, n: int = 16, rows: int = 2457,
                  cols: int = 1996, image_size: int = 512, compress: bool = True,
                  repeats: int = 3) -> dict[str, Any]:
    """Time a cold load (decode + preprocess) and `repeats` reads of every cached row; returns
    the numbers. (`--scale` in data_scale.py measures the store at realistic size.)"""
    with tempfile.TemporaryDirectory(prefix="calcbench-perf-data-") as tmp:
        tmp_path = Path(tmp)
        if binding is None:
            (tmp_path / "src").mkdir()
            binding = make_dicom_set(tmp_path / "src", n, rows, cols, compress)
        cache = tmp_path / "cache"
        domain = RealDomain(binding)
        t0 = time.perf_counter()
        data = domain.load(image_size, cache)
        decode_s = time.perf_counter() - t0
        reads = []
        for _ in range(repeats):
            fresh = RealDomain(binding)
            t0 = time.perf_counter()
            again = fresh.load(image_size, cache)
            images = again.images[np.arange(len(again))]  # every row: the lazy store reads
            reads.append(time.perf_counter() - t0)
            assert fresh.decode_count == 0 and np.array_equal(images, data.images[:])
    cached_s = float(np.median(reads))
    samples = len(data)
    return {"dataset": binding.name, "samples": samples, "image_size": image_size,
            "decode_s": decode_s, "cache_s": cached_s,
            "decode_samples_per_s": samples / decode_s, "cache_samples_per_s": samples / cached_s,
            "ratio": decode_s / cached_s}


def print_data_perf(result: dict[str, Any], console: Any) -> None:
    """One table: samples/s by path and the cache speed-up."""
    from rich.table import Table

    table = Table(title=f"data loading: {result['dataset']} ({result['samples']} samples at "
                        f"{result['image_size']}px)")
    for col in ("path", "seconds", "samples/s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    table.add_row("decode DICOM + preprocess", f"{result['decode_s']:.3f}",
                  f"{result['decode_samples_per_s']:.1f}")
    table.add_row("read shard cache (whole domain)", f"{result['cache_s']:.3f}",
                  f"{result['cache_samples_per_s']:.1f}")
    console.print(table)
    console.print(f"cache is {result['ratio']:.1f}x faster than decoding", highlight=False)
