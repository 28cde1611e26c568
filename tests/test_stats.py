"""Leaderboard statistics: bootstrap coverage, Holm, Wilcoxon markers, ranks, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.stats import (
    average_ranks,
    bootstrap_ci,
    cell_statistics,
    check_aggregation,
    compare_to_baseline,
    holm,
    per_image,
    point_estimate,
)


def _cases(dsc: np.ndarray, patients: np.ndarray | None = None, seed: int = 0) -> pd.DataFrame:
    n = len(dsc)
    tp = np.round(dsc * 100)
    return pd.DataFrame({
        "image_id": [f"i{i}" for i in range(n)],
        "patient_id": patients if patients is not None else [f"p{i // 2}" for i in range(n)],
        "DSC": dsc, "TPR": dsc, "Pr": dsc, "HD": 10 * (1 - dsc), "ASSD": 1 - dsc,
        "TP": tp, "FP": 100 - tp, "FN": 100 - tp, "seed": seed})


def test_bootstrap_ci_covers_the_truth() -> None:
    """Over 40 synthetic data sets with known mean 0.6, the 95% CI covers it most times."""
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        # patient effect + image noise: images of one patient are correlated
        effect = np.repeat(rng.normal(0, 0.08, 30), 2)
        dsc = np.clip(0.6 + effect + rng.normal(0, 0.05, 60), 0, 1)
        images = per_image(_cases(dsc), "DSC")
        lo, hi = bootstrap_ci(images, "DSC", "image", n_boot=400, seed=trial)
        covered += lo <= 60.0 <= hi
        assert lo < point_estimate(images, "DSC", "image")[0] < hi
    assert covered >= 34  # nominal 38/40; patient resampling keeps it near nominal


def test_bootstrap_is_seeded_and_patient_ci_wider_than_naive() -> None:
    dsc = np.repeat(np.linspace(0.2, 0.9, 10), 4)  # 10 patients x 4 identical images
    cases = _cases(dsc, patients=np.repeat([f"p{i}" for i in range(10)], 4))
    images = per_image(cases, "DSC")
    a = bootstrap_ci(images, "DSC", "image", 500, seed=3)
    assert a == bootstrap_ci(images, "DSC", "image", 500, seed=3)
    naive = images.assign(patient_id=images["image_id"])
    lo, hi = bootstrap_ci(naive, "DSC", "image", 500, seed=3)
    assert a[1] - a[0] > 1.5 * (hi - lo)  # treating images as independent is overconfident


def test_pooled_and_patient_aggregation() -> None:
    cases = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p", "p", "q"],
                          "DSC": [1.0, 0.0, 0.5], "TPR": [1.0, math.nan, 0.5],
                          "Pr": [1.0, 0.0, 0.5], "HD": [0.0, 5.0, 1.0], "ASSD": [0, 1, 1.0],
                          "TP": [10, 0, 1], "FP": [0, 0, 1], "FN": [0, 10, 1], "seed": 0})
    images = per_image(cases, "DSC")
    assert point_estimate(images, "DSC", "image")[0] == pytest.approx(50.0)
    assert point_estimate(images, "DSC", "patient")[0] == pytest.approx(50.0)  # (50+50)/2
    assert point_estimate(images, "DSC", "pooled")[0] == pytest.approx(2 * 11 / (22 + 1 + 11)
                                                                        * 100)
    tpr = per_image(cases, "TPR")
    assert point_estimate(tpr, "TPR", "image")[0] == pytest.approx(75.0)  # NaN excluded
    assert point_estimate(tpr, "TPR", "pooled")[0] == pytest.approx(11 / 22 * 100)
    stats = cell_statistics(cases, "image", n_boot=50)
    assert stats["TPR_undefined"] == 1 and stats["n_seeds"] == 1


def test_seeds_mean_and_std() -> None:
    a = _cases(np.full(6, 0.5), seed=0)
    b = _cases(np.full(6, 0.7), seed=1)
    s = cell_statistics(pd.concat([a, b]), "image", n_boot=50)
    assert s["n_seeds"] == 2 and s["n"] == 6
    assert s["DSC_mean"] == pytest.approx(60.0)
    assert s["DSC_std"] == pytest.approx(np.std([50, 70], ddof=1))
    assert s["DSC_std_units"] == pytest.approx(0.0)  # seed-averaged images are all 60


def test_holm_against_hand_computation() -> None:
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06 monotone), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    adjusted = holm([0.2, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.2) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_wilcoxon_markers_against_baseline() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, 40)
    cells = {"Unet": _cases(base), "Better": _cases(base + 0.2),
             "Worse": _cases(base - 0.2), "Same": _cases(base)}
    out = compare_to_baseline(cells, "Unet", "DSC", "image")
    assert out["Better"].marker("DSC") == "↑" and out["Worse"].marker("DSC") == "↓"
    assert out["Same"].marker("DSC") == "" and out["Same"].p == 1.0
    assert out["Better"].p_holm >= out["Better"].p
    hd = compare_to_baseline(cells, "Unet", "HD", "image")
    assert hd["Better"].marker("HD") == "↑"  # lower HD is better
    assert compare_to_baseline(cells, "Missing", "DSC", "image") == {}


def test_average_rank_with_ties() -> None:
    means = pd.DataFrame({"ffdm→dbt DSC": [80.0, 80.001, 60.0],
                          "ffdm→dbt HD": [10.0, 20.0, 30.0]}, index=["A", "B", "C"])
    ranks = average_ranks(means)
    assert ranks["A"] == pytest.approx((1.5 + 1) / 2)  # DSC tie at the shown 2 decimals
    assert ranks["B"] == pytest.approx((1.5 + 2) / 2)
    assert ranks["C"] == pytest.approx(3.0)


def test_bad_aggregation_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--aggregate 'breast'"):
        check_aggregation("breast")
