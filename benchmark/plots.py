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


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write atomically as a 110-dpi PNG (a killed run leaves no half file), close."""
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
    return save_figure(fig, path)


def distributions(cases: pd.DataFrame, path: Path, metric: str = "DSC") -> Path | None:
    """Box plot with every image as a point, per method (rows) and pairing (hue)."""
    cross = cases[cases["source"] != cases["target"]]
    if not len(cross):
        return None
    frame = cross.assign(value=_values(cross, metric), pairing=_pairing(cross))
    n_methods, n_pairs = frame["method_display"].nunique(), frame["pairing"].nunique()
    fig, ax = plt.subplots(figsize=(9, 0.45 * n_methods * max(1, n_pairs) + 2))
    sns.boxplot(data=frame, x="value", y="method_display", hue="pairing", fliersize=0,
                boxprops={"alpha": 0.45}, ax=ax)
    sns.stripplot(data=frame, x="value", y="method_display", hue="pairing", dodge=True,
                  size=3, alpha=0.7, jitter=0.2, ax=ax, legend=False)
    ax.set(xlabel=f"{metric} per image", ylabel="", title=f"{metric} per test image")
    return save_figure(fig, path)


def generalisation_gap(cases: pd.DataFrame, path: Path, metric: str = "DSC") -> Path | None:
    """Per method and source: the source test mean beside each target's mean."""
    if not len(cases):
        return None
    frame = cases.assign(value=_values(cases, metric))
    frame["row"] = frame["method_display"] + " (" + frame["source"] + ")"
    frame["evaluated on"] = ["source test" if s == t else f"target {t}"
                             for s, t in zip(frame["source"], frame["target"], strict=True)]
    means = frame.groupby(["row", "evaluated on"])["value"].mean().reset_index()
    fig, ax = plt.subplots(figsize=(9, 0.5 * means["row"].nunique()
                                    * means["evaluated on"].nunique() + 2))
    sns.barplot(data=means, x="value", y="row", hue="evaluated on", ax=ax)
    ax.set(xlabel=f"mean {metric}", ylabel="method (trained on)",
           title="Generalisation gap: source test vs each target")
    return save_figure(fig, path)


def froc_plot(got: Collected, cases: pd.DataFrame, path: Path) -> Path | None:
    """Lesion sensitivity vs mean false positives per image, one curve per method, one panel
    per pairing (plain matplotlib steps: a FacetGrid is 10x slower for the same figure)."""
    cross = cases[cases["source"] != cases["target"]]
    if not len(cross) or not len(got.candidates) or "lesion_n_ref" not in cross:
        return None
    pairings = sorted(set(_pairing(cross)))
    fig, axes = plt.subplots(1, len(pairings), figsize=(4 * len(pairings) + 1, 3.8),
                             squeeze=False, sharey=True)
    palette = dict(zip(sorted(cross["method_display"].unique()),
                       sns.color_palette(n_colors=cross["method_display"].nunique()),
                       strict=True))
    drawn = False
    for ax, pairing in zip(axes[0], pairings, strict=True):
        sub = cross[_pairing(cross) == pairing]
        top = 8.0
        for display, rows in sub.groupby("method_display"):
            curve = froc_for(got, rows)
            if len(curve):
                # from (0, 0) to the last operating point, then flat to the right edge
                x = [0.0, *curve["fp_per_image"], 1e9]
                y = [0.0, *curve["sensitivity"], curve["sensitivity"].iloc[-1]]
                ax.step(x, y, where="post", label=display, color=palette[display])
                top = max(top, float(curve["fp_per_image"].iloc[-1]))
                drawn = True
        ax.set_xscale("symlog", linthresh=0.125)
        ticks = [t for t in (0, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if t <= top]
        ax.set(xlim=(0, top), ylim=(0, 1.02), xticks=ticks, xticklabels=[f"{t:g}" for t in ticks],
               title=pairing, xlabel="mean false positives per image")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0][0].set_ylabel("lesion sensitivity")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


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
