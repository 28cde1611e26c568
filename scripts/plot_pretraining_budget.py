"""Draw the pretraining budget curve of docs/guide/pretraining.md from its data file.

The points come from fine-tuning runs spread over several results folders and days, so the
figure is drawn from a small CSV that names each point's run id (docs/data/pretraining-budget.csv)
rather than from one results folder. Usage:

    python scripts/plot_pretraining_budget.py [CSV] [PNG]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.plots import save_figure  # sets the Agg backend; atomic PNG writes

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "docs" / "data" / "pretraining-budget.csv"
PNG = ROOT / "docs" / "pretraining-budget.png"
COLUMNS = {"pretext", "steps", "kind", "numerics", "source", "best_val_dsc",
           "all_background_val_dsc"}
COLOURS = {"regions": "tab:blue", "shapes": "tab:orange", "textures": "tab:green",
           "fractals": "tab:purple"}
LINES = {"default": "-", "portable": "--"}


def load(path: Path) -> pd.DataFrame:
    """The budget points, with a one-line error when the file lacks a column."""
    frame = pd.read_csv(path)
    missing = COLUMNS - set(frame.columns)
    if missing:
        raise SystemExit(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return frame


def draw(frame: pd.DataFrame, out: Path) -> Path:
    """One panel per source: a line per (pretext, numerics) from the from-scratch point;
    filled markers are whole runs, hollow ones checkpoints taken mid-run."""
    sources = [s for s in ("ffdm", "dbt") if s in set(frame["source"])]
    fig, axes = plt.subplots(1, len(sources), figsize=(5.2 * len(sources), 3.8), squeeze=False)
    for ax, source in zip(axes[0], sources, strict=True):
        rows = frame[frame["source"] == source]
        start = rows[rows["kind"] == "scratch"]
        for (pretext, numerics), group in rows[rows["kind"] != "scratch"].groupby(
                ["pretext", "numerics"]):
            group = pd.concat([start, group]).sort_values("steps")
            colour = COLOURS.get(pretext, "tab:gray")
            ax.plot(group["steps"], group["best_val_dsc"], LINES.get(numerics, ":"),
                    color=colour, label=f"{pretext} ({numerics} kernels)")
            for _, row in group[group["kind"] != "scratch"].iterrows():
                ax.plot(row["steps"], row["best_val_dsc"], "o", color=colour,
                        markerfacecolor=colour if row["kind"] == "whole" else "white")
        ax.plot(start["steps"], start["best_val_dsc"], "ko", label="from scratch")
        background = float(rows["all_background_val_dsc"].iloc[0])
        ax.axhline(background, color="gray", ls=":", lw=1, label="all-background (not learned)")
        ax.set(title=f"{source.upper()} source", xlabel="pretraining steps (batch 8)",
               ylabel="fine-tuned best validation DSC")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Swin-Unet (quick, seed 0): fine-tuned validation DSC against formula "
                 "pretraining\nfilled: whole run; hollow: checkpoint of a longer run", fontsize=9)
    return save_figure(fig, out)


def main(argv: list[str]) -> None:
    """Read the CSV (first argument, default the docs' one) and write the PNG (second)."""
    src = Path(argv[0]) if argv else CSV
    dst = Path(argv[1]) if len(argv) > 1 else PNG
    if not src.is_file():
        raise SystemExit(f"{src}: no such file")
    print(draw(load(src), dst))


if __name__ == "__main__":
    main(sys.argv[1:])
