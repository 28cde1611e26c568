"""Aggregation of per-case metrics: percent, std, and the explicit NaN policy."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.aggregate import format_cell, summarize


def _cases(**cols: list[float]) -> pd.DataFrame:
    base = {"TPR": [0.5, 1.0], "Pr": [0.5, 0.5], "DSC": [0.5, 0.7], "HD": [1.0, 3.0],
            "ASSD": [0.5, 0.5]}
    base.update(cols)
    return pd.DataFrame(base)


def test_summarize_percent_and_std() -> None:
    s = summarize(_cases())
    assert s["n"] == 2
    assert s["DSC_mean"] == pytest.approx(60.0)
    assert s["DSC_std"] == pytest.approx(math.sqrt(2) * 10.0)
    assert s["HD_mean"] == pytest.approx(2.0)
    assert s["ASD_mean"] == pytest.approx(0.5)


def test_undefined_tpr_is_excluded_and_counted() -> None:
    s = summarize(_cases(TPR=[float("nan"), 1.0]))
    assert s["TPR_mean"] == pytest.approx(100.0)
    assert s["TPR_undefined"] == 1
    assert "(1 undef.)" in format_cell(s, "TPR", with_undefined=True)
    assert format_cell(s, "TPR") == "100.00 ± 0.00"


def test_nan_distance_is_an_error() -> None:
    with pytest.raises(ValueError, match="HD"):
        summarize(_cases(HD=[float("nan"), 1.0]))
