"""Patient-level splits: disjoint patients, deterministic, persisted, official split kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.domain import DomainData
from datasets.splits import make_split


def _data(n_patients: int = 20, views: int = 4, official: bool = False) -> DomainData:
    n = n_patients * views
    pids = [f"P{i // views}" for i in range(n)]
    return DomainData(
        domain="d", images=np.zeros((n, 4, 4), np.float32), masks=np.zeros((n, 4, 4), np.uint8),
        spacing_mm=np.ones((n, 2)), patient_ids=pids, image_ids=[f"i{i}" for i in range(n)],
        official_split=["test" if int(p[1:]) < 5 else "train" for p in pids] if official
        else None,
    )


def test_patients_never_span_splits(tmp_path: Path) -> None:
    data = _data()
    split = make_split(data, "fp", (0.7, 0.1, 0.2), 0, tmp_path)
    owners = {}
    for name, idx in split.items():
        for i in idx:
            assert owners.setdefault(data.patient_ids[i], name) == name
    assert sum(len(v) for v in split.values()) == len(data)
    assert len({data.patient_ids[i] for i in split["test"]}) == 4  # 20% of 20 patients


def test_deterministic_and_persisted(tmp_path: Path) -> None:
    data = _data()
    a = make_split(data, "fp", (0.7, 0.1, 0.2), 3, tmp_path)
    files = list((tmp_path / "splits").glob("*.json"))
    assert len(files) == 1
    b = make_split(data, "fp", (0.7, 0.1, 0.2), 3, tmp_path / "elsewhere")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = make_split(data, "fp", (0.7, 0.1, 0.2), 4, tmp_path)
    assert not np.array_equal(a["test"], c["test"])


def test_official_split_is_honoured(tmp_path: Path) -> None:
    data = _data(official=True)
    split = make_split(data, "fp", (0.7, 0.1, 0.2), 0, tmp_path)
    assert {data.patient_ids[i] for i in split["test"]} == {f"P{i}" for i in range(5)}
    assert len(split["val"]) > 0
