"""Tests of benchmark.metrics: medpy 0.5.2 is the oracle for every distance on non-empty masks."""

from __future__ import annotations

import math

import medpy.metric.binary as medpy_binary
import numpy as np
import pandas as pd
import pytest
from medpy.metric.binary import asd, assd, hd, hd95
from rich.console import Console
from scipy.ndimage import binary_erosion, generate_binary_structure

from benchmark.metrics import (
    METRIC_KEYS,
    case_metrics,
    hd95_max_directed,
    hd95_pooled,
    surface_distances,
)
from benchmark.perf.metrics_perf import make_case, print_metrics_perf, target_met

TOL_MM = 1e-6
SPACINGS = [(1.0, 1.0), (0.1, 0.1), (0.07, 0.1), (0.2, 0.05)]
# medpy's own directed-distance helper (full-image EDT), an implementation independent of ours.
medpy_directed = getattr(medpy_binary, "__surface_distances")


def _blobs(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Random elliptical blobs, single pixels and border-touching blobs."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    rr, cc = np.mgrid[:h, :w]
    for _ in range(n):
        kind = rng.integers(0, 4)
        if kind == 0:  # single pixel, sometimes on the border
            r = int(rng.choice([0, h - 1, rng.integers(0, h)]))
            c = int(rng.choice([0, w - 1, rng.integers(0, w)]))
            mask[r, c] = True
            continue
        if kind == 1:  # blob centred on the image edge
            cr = float(rng.choice([0.0, h - 1.0]))
            cc0 = rng.uniform(0, w - 1)
        else:
            cr, cc0 = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        ra, rb = rng.uniform(0.6, 6.0, size=2)
        mask |= ((rr - cr) / ra) ** 2 + ((cc - cc0) / rb) ** 2 <= 1.0
    return mask


def _pairs(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    """Deterministic non-empty (pred, ref, spacing) triples of varied shapes and spacings."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        shape = [(64, 80), (128, 128), (1, 30), (17, 3)][len(out) % 4]
        ref = _blobs(rng, shape, int(rng.integers(1, 8)))
        pred = _blobs(rng, shape, int(rng.integers(1, 8)))
        if len(out) % 5 == 0:  # overlapping prediction: a perturbed copy of the reference
            pred = ref ^ (rng.random(shape) < 0.02)
        if pred.any() and ref.any():
            out.append((pred, ref, SPACINGS[len(out) % len(SPACINGS)]))
    return out


PAIRS = _pairs(seed=12345, count=80)


@pytest.mark.parametrize("idx", range(len(PAIRS)))
def test_distances_match_medpy(idx: int) -> None:
    pred, ref, spacing = PAIRS[idx]
    m = case_metrics(pred, ref, spacing)
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    assert m["HD"] == pytest.approx(hd(pred, ref, voxelspacing=spacing), abs=TOL_MM)
    assert m["ASD"] == pytest.approx(asd(pred, ref, voxelspacing=spacing), abs=TOL_MM)
    assert m["ASSD"] == pytest.approx(assd(pred, ref, voxelspacing=spacing), abs=TOL_MM)
    assert hd95_pooled(d_pr, d_rp) == pytest.approx(
        hd95(pred, ref, voxelspacing=spacing), abs=TOL_MM
    )
    # Directed arrays themselves equal medpy's full-image EDT, element by element (same order).
    np.testing.assert_allclose(d_pr, medpy_directed(pred, ref, spacing, 1), rtol=0, atol=TOL_MM)
    np.testing.assert_allclose(d_rp, medpy_directed(ref, pred, spacing, 1), rtol=0, atol=TOL_MM)
    # ref->pred direction is medpy's asd with swapped arguments.
    assert float(d_rp.mean()) == pytest.approx(asd(ref, pred, voxelspacing=spacing), abs=TOL_MM)


@pytest.mark.parametrize("idx", range(0, len(PAIRS), 3))
def test_surface_is_medpy_definition(idx: int) -> None:
    pred, ref, spacing = PAIRS[idx]
    cross = generate_binary_structure(2, 1)
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    n_surf_pred = np.count_nonzero(pred ^ binary_erosion(pred, structure=cross, border_value=0))
    n_surf_ref = np.count_nonzero(ref ^ binary_erosion(ref, structure=cross, border_value=0))
    assert d_pr.shape == (n_surf_pred,)
    assert d_rp.shape == (n_surf_ref,)


@pytest.mark.parametrize("idx", range(len(PAIRS)))
def test_hd95_max_directed(idx: int) -> None:
    pred, ref, spacing = PAIRS[idx]
    m = case_metrics(pred, ref, spacing)
    d1 = medpy_directed(pred, ref, spacing, 1)
    d2 = medpy_directed(ref, pred, spacing, 1)
    expected = max(np.percentile(d1, 95), np.percentile(d2, 95))
    assert m["HD95"] == pytest.approx(expected, abs=TOL_MM)
    assert m["HD95"] <= m["HD"] + TOL_MM
    # "max-directed >= pooled" is NOT a theorem with linear interpolation (a counterexample is
    # in PAIRS: 0.535 < 0.555 mm, and ~1 in 80 clustered 512x512 perf cases). What does hold:
    # pooled P95 <= max of the directed P95s taken with method="higher" (nearest rank above).
    upper = max(np.percentile(d1, 95, method="higher"), np.percentile(d2, 95, method="higher"))
    assert hd95(pred, ref, voxelspacing=spacing) <= upper + TOL_MM


def test_hd95_max_directed_usually_not_below_pooled() -> None:
    # On clustered microcalcification masks the max-directed HD95 is >= medpy's pooled one in
    # nearly all cases and much larger on average (missed blobs are not diluted).
    diffs = []
    for seed in range(12):
        pred, ref = make_case((512, 512), seed % 2 == 1, seed)
        d_pr, d_rp = surface_distances(pred, ref, (0.1, 0.1))
        diffs.append(hd95_max_directed(d_pr, d_rp) - hd95_pooled(d_pr, d_rp))
    assert sum(d >= -TOL_MM for d in diffs) >= 10
    assert float(np.mean(diffs)) > 0.05


def test_hd95_definitions_differ_on_a_missed_blob() -> None:
    # A big well-matched blob plus a missed far-away small blob in the reference: the few large
    # ref->pred distances are diluted in the pooled P95 but not in the max-directed one.
    ref = np.zeros((100, 100), dtype=bool)
    rr, cc = np.mgrid[:100, :100]
    ref |= (rr - 40) ** 2 + (cc - 40) ** 2 <= 25**2
    pred = ref.copy()
    ref[90:93, 90:94] = True  # 10 surface px: > 5 % of ref's surface, < 5 % of both pooled
    spacing = (0.1, 0.1)
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    pooled = hd95_pooled(d_pr, d_rp)
    max_dir = hd95_max_directed(d_pr, d_rp)
    assert pooled == pytest.approx(hd95(pred, ref, voxelspacing=spacing), abs=TOL_MM)
    assert pooled == pytest.approx(0.0, abs=TOL_MM)
    assert max_dir > 4.0  # the missed blob is ~4.7 mm from the matched one
    assert case_metrics(pred, ref, spacing)["HD95"] == pytest.approx(max_dir, abs=0)


def test_perf_cases_match_medpy_small() -> None:
    for with_fps in (False, True):
        pred, ref = make_case((512, 512), with_fps, seed=3)
        spacing = (0.1, 0.1)
        m = case_metrics(pred, ref, spacing)
        assert m["HD"] == pytest.approx(hd(pred, ref, voxelspacing=spacing), abs=TOL_MM)
        assert m["ASSD"] == pytest.approx(assd(pred, ref, voxelspacing=spacing), abs=TOL_MM)


def test_single_pixels_analytic_distance() -> None:
    pred = np.zeros((10, 10), dtype=bool)
    ref = np.zeros((10, 10), dtype=bool)
    pred[0, 0] = True
    ref[3, 4] = True
    m = case_metrics(pred, ref, (1.0, 1.0))
    for key in ("HD", "HD95", "ASD", "ASSD"):
        assert m[key] == pytest.approx(5.0, abs=1e-12)
    m = case_metrics(pred, ref, (0.5, 2.0))  # (row, col): 3 rows * 0.5, 4 cols * 2.0
    assert m["HD"] == pytest.approx(math.hypot(1.5, 8.0), abs=1e-12)


def test_identical_masks_zero_distance() -> None:
    ref = _blobs(np.random.default_rng(7), (64, 80), 5)
    m = case_metrics(ref, ref, (0.07, 0.1))
    assert (m["HD"], m["HD95"], m["ASD"], m["ASSD"]) == (0.0, 0.0, 0.0, 0.0)
    assert (m["DSC"], m["TPR"], m["Pr"]) == (1.0, 1.0, 1.0)
    assert m["FP"] == 0 and m["FN"] == 0 and m["TP"] == int(ref.sum())


def test_overlap_counts_hand_computed() -> None:
    pred = np.array(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 0, 1],
        ]
    )
    ref = np.array(
        [
            [0, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ]
    )
    m = case_metrics(pred, ref, (0.1, 0.1))
    # TP: (0,1), (1,0), (1,1); FP: (0,0), (2,3); FN: (1,2)
    assert (m["TP"], m["FP"], m["FN"]) == (3, 2, 1)
    assert m["TPR"] == pytest.approx(3 / 4)
    assert m["Pr"] == pytest.approx(3 / 5)
    assert m["DSC"] == pytest.approx(6 / 9)
    assert (m["ref_empty"], m["pred_empty"]) == (False, False)


def test_keys_order_and_plain_python_types() -> None:
    pred, ref, spacing = PAIRS[1]
    m = case_metrics(pred, ref, spacing)
    assert tuple(m) == METRIC_KEYS
    assert METRIC_KEYS == (
        "TP", "FP", "FN", "TPR", "Pr", "DSC", "HD", "HD95", "ASD", "ASSD",
        "ref_empty", "pred_empty",
    )  # fmt: skip
    for key in ("TP", "FP", "FN"):
        assert type(m[key]) is int
    for key in ("TPR", "Pr", "DSC", "HD", "HD95", "ASD", "ASSD"):
        assert type(m[key]) is float
    for key in ("ref_empty", "pred_empty"):
        assert type(m[key]) is bool
    for key in ("TPR", "Pr", "DSC"):
        assert 0.0 <= m[key] <= 1.0


def test_int_and_view_inputs_equal_bool() -> None:
    pred, ref, spacing = PAIRS[0]
    base = case_metrics(pred, ref, spacing)
    assert case_metrics(pred.astype(np.uint8), ref.astype(np.int64), spacing) == base
    assert case_metrics(pred.astype(np.float32), ref, list(spacing)) == base
    # Non-contiguous views (transpose) must give the transposed-spacing result.
    t = case_metrics(pred.T, ref.T, (spacing[1], spacing[0]))
    assert t["HD"] == pytest.approx(base["HD"], abs=1e-12)
    assert t["ASSD"] == pytest.approx(base["ASSD"], abs=1e-12)
    assert t["TP"] == base["TP"]


# ----------------------------------------------------------------------------- empty masks


def test_both_empty() -> None:
    z = np.zeros((20, 30), dtype=bool)
    m = case_metrics(z, z, (0.1, 0.2))
    assert m["DSC"] == 1.0
    assert (m["HD"], m["HD95"], m["ASD"], m["ASSD"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(m["TPR"]) and math.isnan(m["Pr"])
    assert (m["TP"], m["FP"], m["FN"]) == (0, 0, 0)
    assert m["ref_empty"] is True and m["pred_empty"] is True


def test_ref_empty_pred_not() -> None:
    ref = np.zeros((20, 30), dtype=bool)
    pred = ref.copy()
    pred[5, 5:8] = True
    m = case_metrics(pred, ref, (0.1, 0.2))
    diag = math.hypot(20 * 0.1, 30 * 0.2)
    assert m["DSC"] == 0.0
    assert math.isnan(m["TPR"])
    assert m["Pr"] == 0.0
    for key in ("HD", "HD95", "ASD", "ASSD"):
        assert m[key] == pytest.approx(diag, abs=1e-12)
    assert (m["TP"], m["FP"], m["FN"]) == (0, 3, 0)
    assert m["ref_empty"] is True and m["pred_empty"] is False


def test_pred_empty_ref_not() -> None:
    pred = np.zeros((20, 30), dtype=bool)
    ref = pred.copy()
    ref[19, 29] = True
    ref[0, 0] = True
    m = case_metrics(pred, ref, (0.07, 0.1))
    diag = math.hypot(20 * 0.07, 30 * 0.1)
    assert m["DSC"] == 0.0
    assert m["TPR"] == 0.0
    assert math.isnan(m["Pr"])
    for key in ("HD", "HD95", "ASD", "ASSD"):
        assert m[key] == pytest.approx(diag, abs=1e-12)
    assert (m["TP"], m["FP"], m["FN"]) == (0, 0, 2)
    assert m["ref_empty"] is False and m["pred_empty"] is True


def test_diagonal_bounds_every_distance() -> None:
    # The worst-case value must exceed any real distance: opposite corners.
    pred = np.zeros((20, 30), dtype=bool)
    ref = pred.copy()
    pred[0, 0] = True
    ref[19, 29] = True
    real_hd = case_metrics(pred, ref, (0.1, 0.2))["HD"]
    worst = case_metrics(pred, np.zeros_like(ref), (0.1, 0.2))["HD"]
    assert worst > real_hd


@pytest.mark.parametrize("which", ["pred", "ref", "both"])
def test_surface_distances_rejects_empty(which: str) -> None:
    full = np.zeros((8, 8), dtype=bool)
    full[2:4, 2:4] = True
    empty = np.zeros((8, 8), dtype=bool)
    pred = empty if which in ("pred", "both") else full
    ref = empty if which in ("ref", "both") else full
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(pred, ref, (0.1, 0.1))


# ------------------------------------------------------------------------------ validation

GOOD = np.zeros((8, 8), dtype=bool)
GOOD[3, 3] = True


@pytest.mark.parametrize(
    ("pred", "ref", "match"),
    [
        (GOOD, np.zeros((8, 9), dtype=bool), "same shape"),
        (np.zeros((2, 8, 8), dtype=bool), np.zeros((2, 8, 8), dtype=bool), "2D"),
        (np.zeros(8, dtype=bool), np.zeros(8, dtype=bool), "2D"),
        (np.zeros((0, 8), dtype=bool), np.zeros((0, 8), dtype=bool), "empty array"),
        (GOOD.astype(np.uint8) * 255, GOOD, "only 0 and 1"),
        (GOOD, GOOD * 0.5, "only 0 and 1"),
        (GOOD, np.where(GOOD, np.nan, 0.0), "only 0 and 1"),
        (GOOD.astype(str), GOOD, "dtype"),
    ],
)
def test_mask_validation(pred: np.ndarray, ref: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        case_metrics(pred, ref, (0.1, 0.1))
    with pytest.raises(ValueError, match=match):
        surface_distances(pred, ref, (0.1, 0.1))


@pytest.mark.parametrize(
    "spacing",
    [(0.1,), (0.1, 0.1, 0.1), (0.0, 0.1), (-0.1, 0.1), (float("nan"), 0.1), (0.1, math.inf),
     "ab", None, 0.1, ("x", 0.1)],
)  # fmt: skip
def test_spacing_validation(spacing: object) -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        case_metrics(GOOD, GOOD, spacing)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing_mm"):
        surface_distances(GOOD, GOOD, spacing)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ perf helpers (fast)


def test_make_case_deterministic_and_clustered() -> None:
    p1, r1 = make_case((512, 512), True, seed=5)
    p2, r2 = make_case((512, 512), True, seed=5)
    p3, _ = make_case((512, 512), True, seed=6)
    assert np.array_equal(p1, p2) and np.array_equal(r1, r2)
    assert not np.array_equal(p1, p3)
    assert r1.any() and p1.any()
    pc, rc = make_case((512, 512), False, seed=5)
    assert np.array_equal(rc, r1)  # same GT; the FP variant only adds prediction blobs
    assert p1.sum() > pc.sum()


def test_print_metrics_perf_verdict() -> None:
    rows = [
        ("2457x1996 clustered", 3000.0, 10.0, 300.0, 1e-15),
        ("512x512 clustered", 100.0, 1.0, 100.0, 1e-15),
    ]
    df = pd.DataFrame(rows, columns=["case", "medpy_ms", "ours_ms", "ratio", "max_abs_diff_mm"])
    assert target_met(df)
    console = Console(record=True, width=140)
    print_metrics_perf(df, console)
    text = console.export_text()
    assert "2457x1996 clustered" in text and ": MET" in text
    slow = df.assign(ratio=[10.0, 100.0])
    assert not target_met(slow)
    wrong = df.assign(max_abs_diff_mm=[1e-15, 1e-3])
    assert not target_met(wrong)
    console = Console(record=True, width=140)
    print_metrics_perf(wrong, console)
    assert "NOT MET" in console.export_text()
