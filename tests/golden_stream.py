"""The numbers that tests/data/golden-stream-smoke.json pins: the tiny stand-ins' arrays at
32 px and a smoke U-Net run tiny-ffdm -> tiny-dbt (history and per-case rows).

Run in a subprocess with CALCBENCH_PORTABLE=1 and two threads, so the same numbers come out on
any x86-64 CPU with AVX2 and any core count (benchmark/numerics.py says why that is needed).
`python -m tests.golden_stream --write` records them anew after a deliberate change."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchmark  # noqa: F401  (first: applies CALCBENCH_PORTABLE before numpy loads)

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden-stream-smoke.json"
ENV = {"CALCBENCH_PORTABLE": "1", "OMP_NUM_THREADS": "2"}
# the per-case columns pinned (not the run id, times or versions, which change by design)
COLUMNS = ("ASD", "ASSD", "DSC", "FN", "FP", "HD", "HD95", "Pr", "TP", "TPR", "checkpoint",
           "group", "image_id", "laterality", "lesion_f1", "lesion_fn", "lesion_fp",
           "lesion_n_pred", "lesion_n_ref", "lesion_precision", "lesion_sensitivity",
           "lesion_tp", "method", "method_display", "patient_id", "pred_empty", "profile",
           "ref_empty", "seed", "slice", "spacing_col_mm", "spacing_row_mm", "split",
           "target_kind", "view", "volume_id")


def compute(work: Path) -> dict[str, Any]:
    """Hashes of the generated arrays, the training history and the per-case rows."""
    import numpy as np
    import pandas as pd

    from benchmark.progress import NullReporter
    from benchmark.runner import RunRequest, run
    from datasets.synthetic.domain import SyntheticDomain

    arrays = {}
    for name in ("tiny-ffdm", "tiny-dbt"):
        data = SyntheticDomain.from_toml(DATA / f"{name}.toml").generate(32)
        arrays[name] = {key: hashlib.sha256(np.asarray(getattr(data, key)).tobytes()).hexdigest()
                        for key in ("images", "masks")}
    run(RunRequest(method="unet", source=str(DATA / "tiny-ffdm.toml"),
                   targets=[str(DATA / "tiny-dbt.toml")], profile="smoke",
                   results_dir=work / "res", cache_dir=work / "cache",
                   eval_last=True), NullReporter())  # rows of both checkpoints
    folder = next((work / "res" / "runs").iterdir())
    info = json.loads((folder / "run.json").read_text())
    rows = pd.read_parquet(folder / "per_case.parquet")
    return {"arrays_32px": arrays, "history": info["training"]["history"],
            "rows": json.loads(rows[list(COLUMNS)].to_json(orient="records")),
            "numerics": info["numerics"]}


def main() -> None:
    """Print the payload as JSON (or write it to the golden file with --write)."""
    with tempfile.TemporaryDirectory() as tmp:
        payload = compute(Path(tmp))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps({k: v for k, v in payload.items() if k != "numerics"},
                                     indent=1, sort_keys=True) + "\n")
    print(json.dumps(payload))


if __name__ == "__main__":
    main()
