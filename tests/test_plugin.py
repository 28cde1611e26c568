"""A third-party package adds a method through the `calcbench.methods` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parent / "plugins" / "calcbench-example-plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> None:
    """pip-install the example plugin into this environment for the module, then remove it."""
    build = tmp_path_factory.mktemp("plugin-src")
    subprocess.run(["cp", "-r", str(PLUGIN), str(build)], check=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation",
                    str(build / PLUGIN.name)], check=True, timeout=300)
    yield
    subprocess.run([*pip, "uninstall", "-y", "calcbench-example-plugin"], check=True,
                   timeout=300)


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "bench"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


def test_plugin_is_listed_and_runs(installed_plugin: None, tmp_path: Path,
                                   session_cache: Path) -> None:
    listed = _bench("list", "methods", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if "tinyfcn" in x)
    assert "TinyFCN" in line and "calcbench-example-plugin" in line and "0.0.1" in line
    ran = _bench("run", "--method", "tinyfcn", "--source", "ffdm", "--target", "dbt",
                 "--profile", "smoke", "--no-progress", "--results-dir",
                 str(tmp_path / "results"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "DSC (%)" in ran.stdout
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("tinyfcn-ffdm-smoke")
