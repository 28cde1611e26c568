"""Lesion-level matching on hand-made masks, and FROC values and monotonicity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.lesions import froc_candidates, froc_curve, lesion_metrics, sensitivity_at

SP = (0.1, 0.1)  # mm per pixel


def _blank() -> np.ndarray:
    return np.zeros((100, 100), bool)


def test_overlap_centroid_and_false_positive() -> None:
    ref = _blank()
    ref[10:20, 10:20] = True  # lesion A: overlapped by a prediction
    ref[60:70, 10:20] = True  # lesion B: a prediction 3 mm away (centroid rule)
    ref[10:20, 80:90] = True  # lesion C: missed
    pred = _blank()
    pred[15:18, 15:25] = True  # overlaps A
    pred[60:70, 40:50] = True  # centroid 3 mm from B's
    pred[90:95, 90:95] = True  # far from everything: FP
    m = lesion_metrics(pred, ref, SP)
    assert (m["lesion_n_ref"], m["lesion_n_pred"]) == (3, 3)
    assert (m["lesion_tp"], m["lesion_fn"], m["lesion_fp"]) == (2, 1, 1)
    assert m["lesion_sensitivity"] == pytest.approx(2 / 3)
    assert m["lesion_precision"] == pytest.approx(2 / 3)
    assert m["lesion_f1"] == pytest.approx(2 / 3)
    strict = lesion_metrics(pred, ref, SP, radius_mm=1.0)  # B no longer matched
    assert strict["lesion_tp"] == 1 and strict["lesion_fp"] == 2


def test_diagonal_pixels_are_one_component_and_empty_policy() -> None:
    ref = _blank()
    ref[5, 5] = ref[6, 6] = True  # 8-connected: one lesion
    assert lesion_metrics(_blank(), ref, SP)["lesion_n_ref"] == 1
    empty = lesion_metrics(_blank(), _blank(), SP)
    assert math.isnan(empty["lesion_sensitivity"]) and math.isnan(empty["lesion_f1"])
    missed = lesion_metrics(_blank(), ref, SP)
    assert missed["lesion_sensitivity"] == 0 and math.isnan(missed["lesion_precision"])
    assert missed["lesion_f1"] == 0.0


def test_candidates_scores_and_hits() -> None:
    ref = _blank()
    ref[10:20, 10:20] = True
    prob = np.zeros((100, 100))
    prob[12:15, 12:15] = 0.9  # hit
    prob[50:53, 50:53] = 0.6  # FP (far)
    prob[80:82, 80:82] = 0.05  # below the floor: no candidate
    cand = froc_candidates(prob, ref, SP, "img")
    assert sorted(cand["score"].tolist()) == pytest.approx([0.6, 0.9])
    scores = cand.set_index("lesion")["score"]
    assert (scores[0], scores[-1]) == pytest.approx((0.9, 0.6))
    capped = froc_candidates(prob, ref, SP, "img", max_candidates=1)
    assert capped["score"].tolist() == pytest.approx([0.9])


def test_froc_values_and_monotonicity() -> None:
    # two images, three lesions; one candidate matches two lesions of image a
    cand = pd.DataFrame({
        "image_id": ["a", "a", "a", "b", "b", "b"],
        "candidate": [0, 0, 1, 0, 1, 2],
        "score": [0.9, 0.9, 0.3, 0.8, 0.7, 0.2],
        "lesion": [0, 1, -1, -1, 0, -1],
        "hit": [True, True, False, False, True, False]})
    curve = froc_curve(cand, n_lesions=4, n_images=2)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.7, 0.3, 0.2]
    assert curve["sensitivity"].tolist() == pytest.approx([0.5, 0.5, 0.75, 0.75, 0.75])
    assert curve["fp_per_image"].tolist() == pytest.approx([0, 0.5, 0.5, 1.0, 1.5])
    assert (np.diff(curve["sensitivity"]) >= 0).all() and (np.diff(curve["fp_per_image"])
                                                            >= 0).all()
    at = sensitivity_at(curve, (0.25, 1.0, 2.0))
    assert at == {0.25: 0.5, 1.0: 0.75, 2.0: 0.75}


def test_evaluate_stores_lesion_columns_candidates_and_costs(tmp_path: Path) -> None:
    """evaluate() on the toy domain with a thresholding 'method' (bright disks = lesions)."""
    import torch

    from benchmark.config import get_profile
    from benchmark.evaluate import evaluate
    from benchmark.progress import Reporter
    from tests.toy import ToyDomain

    class Bright:
        context_slices = 0

        def train(self, mode: bool) -> None:
            pass

        def predict_batch(self, batch: dict) -> torch.Tensor:
            return (batch["image"] - 0.3).clamp(0, 1) * 1.5

        def case_info(self) -> list[dict]:
            return []

    data = ToyDomain(n_patients=3).load(32, tmp_path)
    cands: list[pd.DataFrame] = []
    rows = evaluate(Bright(), data, np.arange(len(data.images)), get_profile("smoke"),
                    torch.device("cpu"), Reporter(plain=True), "toy", cands)
    assert (rows["lesion_n_ref"] == 1).all() and (rows["lesion_tp"] == 1).all()
    assert rows["lesion_sensitivity"].eq(1.0).all()
    assert (rows["infer_seconds"] > 0).all() and rows["peak_mem_kind"].eq("cpu_peak_rss").all()
    assert len(cands) == 1 and set(cands[0]["image_id"]) == set(rows["image_id"])
    curve = froc_curve(cands[0], int(rows["lesion_n_ref"].sum()), len(rows))
    assert curve["sensitivity"].max() == 1.0
