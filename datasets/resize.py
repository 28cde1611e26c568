"""Area resampling and separable interpolation as fixed-order tap sums, not BLAS products.

Written by hand, not as `rows @ image @ cols.T`: a BLAS GEMM's summation order and use of
fused multiply-add depend on the kernel OpenBLAS picks for the CPU (SkylakeX on an Intel
AVX-512 machine, Haswell on an AMD Zen 4 one), so the same seed gave different stand-in images
and different real-data caches on different machines, under one cache fingerprint. Here each
output pixel is the sum of its few non-zero weights, in a fixed order, using only element-wise
multiply and add, which IEEE 754 rounds the same way at every SIMD width.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np


class Taps(NamedTuple):
    """A sparse (n_out, n_in) weight matrix: per output index, the input indices it reads
    and their weights (rows padded with index 0, weight 0)."""

    index: np.ndarray  # (n_out, k) int64
    weight: np.ndarray  # (n_out, k) float32


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that average input pixels by their overlap with output pixels."""
    edges = np.arange(n_in + 1) * (n_out / n_in)  # input pixel edges in output pixel units
    lo = np.maximum(edges[None, :-1], np.arange(n_out)[:, None])
    hi = np.minimum(edges[None, 1:], np.arange(n_out)[:, None] + 1)
    w = np.maximum(hi - lo, 0.0)
    return w / w.sum(axis=1, keepdims=True)


def taps_of(weights: np.ndarray) -> Taps:
    """The non-zero entries of each row of a dense weight matrix, in ascending column order."""
    nonzero = weights != 0
    k = max(1, int(nonzero.sum(axis=1).max()))
    index = np.argsort(~nonzero, axis=1, kind="stable")[:, :k]
    weight = np.where(np.take_along_axis(nonzero, index, axis=1),
                      np.take_along_axis(weights, index, axis=1), 0.0)
    return Taps(index.astype(np.int64), weight.astype(np.float32))


@lru_cache(maxsize=64)
def area_taps(n_in: int, n_out: int) -> Taps:
    """Taps of `area_matrix(n_in, n_out)` (cached: every image of a domain shares them)."""
    return taps_of(area_matrix(n_in, n_out))


def separable(x: np.ndarray, rows: Taps, cols: Taps) -> np.ndarray:
    """`R @ x @ C.T` for the matrices R, C that `rows`, `cols` describe (float32, or float64
    for float64 `x`), summed tap by tap in a fixed order: no dependence on the BLAS kernel."""
    x = np.asarray(x)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    rw, cw = rows.weight.astype(x.dtype), cols.weight.astype(x.dtype)
    tmp = rw[:, :1] * x[rows.index[:, 0]]
    for k in range(1, rows.index.shape[1]):
        tmp += rw[:, k:k + 1] * x[rows.index[:, k]]
    out = tmp[:, cols.index[:, 0]] * cw[:, 0]
    for k in range(1, cols.index.shape[1]):
        out += tmp[:, cols.index[:, k]] * cw[:, k]
    return out


def resample(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average an image to size x size and keep mask pixels covered >= 50 % (a lesion
    never vanishes: if the mask is non-empty its best-covered output pixel is kept)."""
    rows, cols = area_taps(image.shape[0], size), area_taps(image.shape[1], size)
    img = np.clip(separable(image.astype(np.float32), rows, cols), 0.0, 1.0)
    if not mask.any():
        return img, np.zeros((size, size), np.uint8)
    frac = separable(mask.astype(np.float32), rows, cols)
    out = (frac >= 0.5).astype(np.uint8)
    if not out.any():
        out[np.unravel_index(np.argmax(frac), frac.shape)] = 1
    return img, out
