"""Results store: one folder per run under `<results>/runs/<run_id>/`.

Files (all written atomically): `run.json` (what produced the run: config, resolved hparams,
versions, git commit, data fingerprints, timings), `status.json` (training state and per-target
evaluation state), `per_case.parquet` (one row per evaluated image, every target),
`froc_candidates.parquet` (lesion candidates for FROC curves, every target) and
`checkpoints/{best,last}.pt`. Corrupt or partial folders are reported, never silently used.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.errors import UserError
from benchmark.io import atomic_write, atomic_write_text, folder_lock

TRAIN_STATES = ("created", "training", "trained", "failed")

#: The column the store writes into every row of a run's tables (`_replace_rows`) and every
#: reader filters by; a file without it has another schema.
REQUIRED_COLUMNS = {"per_case.parquet": ("target_key",), "froc_candidates.parquet": ("target_key",)}


def now_iso() -> str:
    """Current UTC time, ISO 8601, second precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class RunRecord:
    """A run folder's parsed run.json and status.json."""

    run_id: str
    path: Path
    info: dict[str, Any]
    status: dict[str, Any]

    @property
    def trained(self) -> bool:
        return self.status.get("state") == "trained"


class ResultsStore:
    """Reads and writes run folders under `root/runs` (root defaults to ./results)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"

    # --- writing ------------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the runs folder, or raise a UserError naming it and the reason."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            # a probe of its own: runs and sweep workers started together share the folder
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.runs_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UserError(f"results folder '{self.runs_dir}' is not writable: "
                            f"{exc.strerror or exc}") from None

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def write_info(self, run_id: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.run_dir(run_id) / "run.json",
                          json.dumps(info, indent=2, sort_keys=True, default=str))

    def update_status(self, run_id: str, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into status.json under the run's lock; `targets` merge per key."""
        folder = self.run_dir(run_id)
        with folder_lock(folder):
            status = self._read_json(folder / "status.json", missing_ok=True) or {
                "state": "created", "targets": {}}
            targets = changes.pop("targets", None)
            status.update(changes)
            if targets:
                status.setdefault("targets", {}).update(targets)
            status["updated"] = now_iso()
            atomic_write_text(folder / "status.json", json.dumps(status, indent=2, default=str))
        return status

    def add_cases(self, run_id: str, target_key: str, cases: pd.DataFrame) -> None:
        """Replace the rows of `target_key` in per_case.parquet (locked read-modify-write)."""
        self._replace_rows(run_id, "per_case.parquet", target_key, cases)

    def add_candidates(self, run_id: str, target_key: str, candidates: pd.DataFrame) -> None:
        """Replace the rows of `target_key` in froc_candidates.parquet (same protocol)."""
        self._replace_rows(run_id, "froc_candidates.parquet", target_key, candidates)

    def _replace_rows(self, run_id: str, name: str, target_key: str, cases: pd.DataFrame
                      ) -> None:
        folder = self.run_dir(run_id)
        path = folder / name
        with folder_lock(folder):
            frames = [cases.assign(target_key=target_key)]
            if path.is_file():
                old = self._read_rows(run_id, name)
                if len(old.columns):
                    frames.insert(0, old[old["target_key"] != target_key])
            frame = pd.concat(frames, ignore_index=True)

            def write(fh: Any) -> None:
                buf = io.BytesIO()
                frame.to_parquet(buf, index=False)
                fh.write(buf.getvalue())

            atomic_write(path, write)

    # --- reading ------------------------------------------------------------------------------
    def _read_json(self, path: Path, missing_ok: bool = False) -> dict[str, Any] | None:
        if not path.is_file():
            if missing_ok:
                return None
            raise UserError(f"run folder '{path.parent}' is incomplete: {path.name} is missing")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"'{path}' is corrupt: {exc}; delete the run folder or rerun "
                            "the command that wrote it") from None
        if not isinstance(data, dict):
            raise UserError(f"'{path}' is corrupt: expected a JSON object")
        return data

    def read(self, run_id: str) -> RunRecord:
        """Load one run, or raise a UserError saying what is missing or corrupt."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            known = [p.name for p in self.runs_dir.glob("*") if p.is_dir()]
            hint = f"; known runs: {', '.join(sorted(known)[:10])}" if known else ""
            raise UserError(f"no run '{run_id}' under '{self.runs_dir}'{hint}")
        info = self._read_json(folder / "run.json")
        status = self._read_json(folder / "status.json")
        assert info is not None and status is not None
        for key in ("method", "source", "profile", "seed"):
            if key not in info:
                raise UserError(f"'{folder / 'run.json'}' is corrupt: key '{key}' is missing")
        return RunRecord(run_id, folder, info, status)

    def cases(self, run_id: str) -> pd.DataFrame:
        """per_case.parquet of a run (empty frame when nothing was evaluated yet)."""
        return self._read_rows(run_id, "per_case.parquet")

    def candidates(self, run_id: str) -> pd.DataFrame:
        """froc_candidates.parquet of a run (empty frame when none were stored)."""
        return self._read_rows(run_id, "froc_candidates.parquet")

    def _read_rows(self, run_id: str, name: str) -> pd.DataFrame:
        path = self.run_dir(run_id) / name
        if not path.is_file():
            return pd.DataFrame()
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise UserError(f"'{path}' is corrupt: {' '.join(str(exc).split())}") from None
        missing = [c for c in REQUIRED_COLUMNS.get(name, ()) if c not in frame.columns]
        if missing and len(frame.columns):
            raise UserError(f"'{path}' is not a calcbench results table: column(s) "
                            f"{', '.join(missing)} missing")
        return frame

    def list_runs(self) -> tuple[list[RunRecord], list[str]]:
        """All readable runs, and one problem line per unreadable folder."""
        records: list[RunRecord] = []
        problems: list[str] = []
        if not self.runs_dir.is_dir():
            return records, problems
        for folder in sorted(p for p in self.runs_dir.iterdir() if p.is_dir()):
            try:
                records.append(self.read(folder.name))
            except UserError as exc:
                problems.append(str(exc))
        return records, problems
