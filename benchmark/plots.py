"""seaborn figures for the reports: method x pairing heatmap, per-case distributions (box +
points, as Metrics Reloaded recommends), the generalisation gap (source test vs target) and
FROC curves. Each function writes one PNG and returns its path (None when there is no data).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from benchmark.aggregate import PERCENT, REPORTED
from benchmark.collect import Collected
from benchmark.io import atomic_write
from benchmark.sections import froc_for


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def _values(cases: pd.DataFrame, metric: str) -> pd.Series:
    return cases[REPORTED[metric]].astype(float) * (100.0 if metric in PERCENT else 1.0)


def _pairing(cases: pd.DataFrame) -> pd.Series:
    return cases["source"] + "→" + cases["target"]


def heatmap(cases: pd.DataFrame, path: Path, metric: str = "DSC") -> Path | None:
    """Mean `metric` per method (rows) and source→target pairing (columns, diagonal kept)."""
    if not len(cases):
        return None
    frame = cases.assign(value=_values(cases, metric), pairing=_pairing(cases))
    grid = frame.pivot_table(index="method_display", columns="pairing", values="value",
                             aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.4 * grid.shape[1] + 3, 0.5 * grid.shape[0] + 2))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis_r" if metric in ("HD", "ASD")
                else "viridis", ax=ax, cbar_kws={"label": metric})
    ax.set(xlabel="source → target", ylabel="", title=f"{metric} (mean over images)")
    return _save(fig, path)


def distributions(cases: pd.DataFrame, path: Path, metric: str = "DSC") -> Path | None:
    """Box plot with every image as a point, per method, one panel column per pairing."""
    cross = cases[cases["source"] != cases["target"]]
    if not len(cross):
        return None
    frame = cross.assign(value=_values(cross, metric), pairing=_pairing(cross))
    grid = sns.catplot(data=frame, x="value", y="method_display", col="pairing", kind="box",
                       color="#cfe0f3", fliersize=0, height=0.35 * frame["method_display"]
                       .nunique() + 2.5, aspect=1.2, sharex=True)
    grid.map_dataframe(sns.stripplot, x="value", y="method_display", size=3, color="#20456f",
                       alpha=0.6, jitter=0.2)
    grid.set_axis_labels(f"{metric} per image", "")
    grid.set_titles("{col_name}")
    return _save(grid.figure, path)


def generalisation_gap(cases: pd.DataFrame, path: Path, metric: str = "DSC") -> Path | None:
    """Per method and source: the source test mean beside each target's mean."""
    if not len(cases):
        return None
    frame = cases.assign(value=_values(cases, metric))
    frame["evaluated on"] = [f"{t} (source test)" if s == t else t
                             for s, t in zip(frame["source"], frame["target"], strict=True)]
    means = frame.groupby(["method_display", "source", "evaluated on"])["value"].mean() \
        .reset_index()
    grid = sns.catplot(data=means, x="value", y="method_display", hue="evaluated on",
                       col="source", kind="bar", height=0.4 * means["method_display"].nunique()
                       + 2.5, aspect=1.3)
    grid.set_axis_labels(f"mean {metric}", "")
    grid.set_titles("trained on {col_name}")
    return _save(grid.figure, path)


def froc_plot(got: Collected, cases: pd.DataFrame, path: Path) -> Path | None:
    """Lesion sensitivity vs mean false positives per image, one curve per method/pairing."""
    cross = cases[cases["source"] != cases["target"]]
    if not len(cross) or not len(got.candidates) or "lesion_n_ref" not in cross:
        return None
    curves = []
    for (display, src, tgt), sub in cross.groupby(["method_display", "source", "target"]):
        curve = froc_for(got, sub)
        if len(curve):
            curves.append(curve.assign(method=display, pairing=f"{src}→{tgt}"))
    if not curves:
        return None
    frame = pd.concat(curves, ignore_index=True)
    grid = sns.relplot(data=frame, x="fp_per_image", y="sensitivity", hue="method",
                       col="pairing", kind="line", drawstyle="steps-post", height=3.5,
                       estimator=None)
    for ax in grid.axes.flat:
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_ylim(0, 1.02)
    grid.set_axis_labels("mean false positives per image", "lesion sensitivity")
    grid.set_titles("{col_name}")
    return _save(grid.figure, path)


def all_plots(got: Collected, out_dir: Path, kind: str, profile: str) -> dict[str, Path]:
    """Every figure for one data kind and profile; returns name -> written path."""
    cases = got.cases
    if len(cases):
        cases = cases[(cases["data_kind"] == kind) & (cases["profile"] == profile)
                      & (cases["target_kind"] == cases["data_kind"])]
    stem = f"{kind}-{profile}"
    made = {"heatmap": heatmap(cases, out_dir / f"heatmap-{stem}.png"),
            "distributions": distributions(cases, out_dir / f"distributions-{stem}.png"),
            "gap": generalisation_gap(cases, out_dir / f"gap-{stem}.png"),
            "froc": froc_plot(got, cases, out_dir / f"froc-{stem}.png")}
    return {k: v for k, v in made.items() if v is not None}
