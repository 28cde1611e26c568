"""Per-image metrics -> mean ± std per cell, with the NaN policy made explicit.

TPR/Pr are undefined (NaN) when the reference/prediction is empty (docs/design.md, metric policy);
they are excluded from that metric's mean and the excluded count is reported beside it. Any
other NaN is an error, never silently dropped.
"""

from __future__ import annotations

import math

import pandas as pd

# Leaderboard column -> per-case column. The paper's "ASD" (Eq. 24) is reported as ASSD.
REPORTED = {"TPR": "TPR", "Pr": "Pr", "DSC": "DSC", "HD": "HD", "ASD": "ASSD"}
PERCENT = {"TPR", "Pr", "DSC"}
MAY_BE_UNDEFINED = {"TPR", "Pr"}


def summarize(cases: pd.DataFrame) -> dict[str, float | int]:
    """Mean and std (ddof=1; 0 for one image) of every reported metric over images.

    Fractions are converted to percent as in the paper's tables. Keys: `n`, `<M>_mean`,
    `<M>_std`, and `<M>_undefined` (images excluded because the metric is undefined there).
    """
    out: dict[str, float | int] = {"n": len(cases)}
    for label, column in REPORTED.items():
        values = cases[column].astype(float)
        undefined = int(values.isna().sum())
        if undefined and column not in MAY_BE_UNDEFINED:
            raise ValueError(f"{undefined} NaN values in {column}: the metric policy forbids it")
        values = values.dropna() * (100.0 if label in PERCENT else 1.0)
        out[f"{label}_mean"] = float(values.mean()) if len(values) else math.nan
        out[f"{label}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[f"{label}_undefined"] = undefined
    return out


def format_cell(summary: dict[str, float | int], label: str, with_undefined: bool = False
                ) -> str:
    """'mean ± std' with 2 decimals ('undefined' when no image defines it), optionally
    followed by '(k undef.)' when images were excluded."""
    mean = summary[f"{label}_mean"]
    if isinstance(mean, float) and math.isnan(mean):
        return "undefined"
    text = f"{mean:.2f} ± {summary[f'{label}_std']:.2f}"
    undefined = summary.get(f"{label}_undefined", 0)
    return f"{text} ({undefined} undef.)" if with_undefined and undefined else text
