"""No patient-identifying DICOM field reaches stdout, logs, config, cache or results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.real_cli import bench, config, smoke_run
from tests.real_fixtures import PRIVATE, SECRET, folder_tree

__all__ = ["config"]
NEEDLES = ("SECRET", "Doe^Jane", "19700101", "20200101")


def _texts(path: Path) -> list[str]:
    """Raw bytes as text, plus the decoded contents of compressed files."""
    data = path.read_bytes()
    out = [data.decode("latin-1")]
    if path.suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out += [" ".join(map(str, z[k].ravel().tolist())) for k in z.files
                    if z[k].dtype.kind in "US"]
    if path.suffix == ".parquet":
        out.append(pd.read_parquet(path).to_csv())
    return out


def test_planted_patient_name_never_leaks(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "data"
    folder_tree(root)
    import pydicom

    assert str(pydicom.dcmread(root / "ffdm" / "p1_CC.dcm").PatientName) == SECRET  # planted
    results, cache = tmp_path / "results", tmp_path / "cache"
    outputs = [bench("data", "add", "ffdm", "--format", "folder", "--root", str(root)),
               bench("data", "list"), bench("data", "verify", "ffdm"),
               smoke_run("ffdm", results, cache),
               bench("data", "show", "ffdm", "--image-size", "32", "--results-dir", str(results),
                     "--cache-dir", str(cache), "--no-progress")]
    assert outputs[3].exit_code == 0, outputs[3].output
    assert outputs[4].exit_code == 0, outputs[4].output
    assert '"kind": "real"' in outputs[4].output
    files = [p for d in (results, cache, config.parent) for p in d.rglob("*") if p.is_file()]
    # the shard store is uncompressed (.npy arrays, .json records, index.csv): raw bytes suffice
    assert any(p.name == "index.csv" for p in files) and any(p.suffix == ".npy" for p in files)
    assert any(p.suffix == ".parquet" for p in files)
    texts = [o.output for o in outputs] + [t for p in files for t in _texts(p)]
    for needle in (*NEEDLES, PRIVATE["PatientID"], PRIVATE["InstitutionName"]):
        assert not any(needle in t for t in texts), needle
    run_json = json.loads(next(results.rglob("run.json")).read_text())
    assert run_json["data_fingerprints"]["ffdm"]
