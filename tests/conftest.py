"""Shared fixtures: isolated results/cache folders and a registered toy domain."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Every test (and every `bench` subprocess it starts) uses one throw-away data cache, never
# the user's ~/.cache/calcbench; synthetic domains are generated once per session.
_CACHE = Path(tempfile.mkdtemp(prefix="calcbench-test-cache-"))
os.environ["CALCBENCH_CACHE"] = str(_CACHE)
# ...and an empty data-bindings file, so a developer's `bench data add ffdm ...` never turns
# the synthetic tests into runs on their real data.
os.environ["CALCBENCH_CONFIG"] = str(_CACHE / "data-bindings.toml")


@pytest.fixture(scope="session")
def session_cache() -> Path:
    """The session-wide data cache folder."""
    return _CACHE


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    """A fresh results folder per test."""
    return tmp_path / "results"


@pytest.fixture(scope="session")
def toy_domains() -> dict[str, object]:
    """Register 'toy' and 'toy-inv' in the domain registry (once per session)."""
    from benchmark.registry import DOMAINS, DomainInfo, Provider
    from tests.toy import ToyDomain

    made = {"toy": ToyDomain("toy"), "toy-inv": ToyDomain("toy-inv", invert=True, seed=1)}
    DOMAINS.ensure_loaded()
    for name, dom in made.items():
        if name not in DOMAINS.all():
            DOMAINS.add(name, DomainInfo(name, lambda d=dom: d, Provider("tests", "0", "toy")))
    return made
