"""Helpers for the real-data CLI tests: an in-process `bench` with isolated config/results."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app

runner = CliRunner()


@pytest.fixture()
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data-binding file ($CALCBENCH_CONFIG) for one test."""
    path = tmp_path / "config" / "data.toml"
    monkeypatch.setenv("CALCBENCH_CONFIG", str(path))
    return path


def bench(*args: str) -> object:
    """Invoke `bench ARGS` in-process; the result has exit_code and output."""
    return runner.invoke(app, list(args))


def smoke_run(name: str, results: Path, cache: Path, target: str | None = None) -> object:
    """`bench run --method unet --profile smoke` on a bound name (optionally a target), cut to
    one epoch of one step: the data path is under test, and the CPU is shared."""
    args = ["run", "--method", "unet", "--source", name, "--profile", "smoke", "--no-progress",
            "--set", "epochs=1", "--set", "steps_per_epoch=1",
            "--results-dir", str(results), "--cache-dir", str(cache)]
    if target:
        args += ["--target", target]
    return bench(*args)
