"""Evaluation: predict every image of a split, threshold, per-case metrics in millimetres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from benchmark.config import Profile
from benchmark.metrics import case_metrics
from benchmark.progress import Reporter
from benchmark.trainer import to_batch
from datasets.domain import DomainData
from methods.base import Method

META_COLUMNS = ("view", "laterality", "slice", "volume_id")


@torch.no_grad()
def evaluate(method: Method, data: DomainData, index: np.ndarray, profile: Profile,
             device: torch.device, reporter: Reporter, label: str) -> pd.DataFrame:
    """One row per image of `index`: ids, spacing, meta, every metric and method extras."""
    method.train(False)
    rows = []
    with reporter.task(f"evaluate {label}", total=len(index)) as task:
        for start in range(0, len(index), profile.eval_batch_size):
            chunk = index[start:start + profile.eval_batch_size]
            batch = to_batch(data, chunk, device, method.context_slices)
            probs = method.predict_batch(batch).float().cpu().numpy()[:, 0]
            extras = method.case_info()
            for j, i in enumerate(chunk):
                pred = probs[j] >= profile.threshold
                spacing = tuple(float(s) for s in data.spacing_mm[i])
                row = {
                    "image_id": data.image_ids[i],
                    "patient_id": data.patient_ids[i],
                    "spacing_row_mm": spacing[0],
                    "spacing_col_mm": spacing[1],
                    **{k: str(data.meta[i].get(k, "")) for k in META_COLUMNS},
                    **case_metrics(pred, data.masks[i].astype(bool), spacing),
                }
                if j < len(extras):
                    row.update({f"info_{k}": v for k, v in extras[j].items()})
                rows.append(row)
            task.advance(len(chunk))
    return pd.DataFrame(rows)
