"""The pretraining budget figure of the guide is redrawn from its data file by a script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "plot_pretraining_budget.py"


def _script():
    spec = importlib.util.spec_from_file_location("plot_pretraining_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_data_draws_both_panels(tmp_path: Path) -> None:
    plot = _script()
    frame = plot.load(plot.CSV)
    assert set(frame["source"]) == {"ffdm", "dbt"}
    assert frame["run_id"].notna().all()  # every point says which run produced it
    out = plot.draw(frame, tmp_path / "budget.png")
    with Image.open(out) as image:
        width, height = image.size
    assert width > 1.5 * height  # two panels side by side


def test_a_missing_column_is_a_one_line_error(tmp_path: Path) -> None:
    plot = _script()
    bad = tmp_path / "bad.csv"
    pd.read_csv(plot.CSV).drop(columns="best_val_dsc").to_csv(bad, index=False)
    with pytest.raises(SystemExit, match=r"bad\.csv: missing column\(s\) best_val_dsc"):
        plot.load(bad)
