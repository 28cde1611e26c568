"""datasets/resize.py: the tap sums equal the dense matrix products they replace."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.resize import area_matrix, area_taps, resample, separable, taps_of


@pytest.mark.parametrize(("n_in", "n_out"), [(500, 128), (2457, 512), (37, 37), (7, 3)])
def test_area_taps_equal_the_dense_matrix(n_in: int, n_out: int) -> None:
    """Area resampling by taps matches `R @ x @ R.T` to float32 rounding, for sizes that do
    and do not divide (the paper's 2457-row slices to 512 among them)."""
    rng = np.random.default_rng(0)
    x = rng.random((n_in, n_in), dtype=np.float32)
    dense = area_matrix(n_in, n_out).astype(np.float32)
    taps = area_taps(n_in, n_out)
    assert taps.index.shape[1] <= int(np.ceil(n_in / n_out)) + 1  # a few taps, not n_in
    np.testing.assert_allclose(separable(x, taps, taps), dense @ x @ dense.T, rtol=0, atol=2e-6)


def test_taps_keep_repeated_columns_and_float64() -> None:
    """A row whose weight sits in one column twice (clipped interpolation) keeps the sum, and
    float64 input stays float64."""
    w = np.array([[0.0, 1.0, 0.0], [0.25, 0.0, 0.75], [0.0, 0.0, 1.0]])
    x = np.arange(9.0).reshape(3, 3)
    out = separable(x, taps_of(w), taps_of(w))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, w @ x @ w.T)


def test_resample_keeps_a_lesion_smaller_than_an_output_pixel() -> None:
    """A one-pixel lesion in a 64 px image survives resampling to 8 px as one pixel."""
    image = np.zeros((64, 64), np.float32)
    mask = np.zeros((64, 64), np.uint8)
    mask[10, 50] = 1
    img, out = resample(image, mask, 8)
    assert img.shape == out.shape == (8, 8) and out.sum() == 1 and out[1, 6] == 1
