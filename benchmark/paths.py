"""Default folders: the cache (data shards, formula weights) and the results store.

A leaf module (standard library only), so that both the runner and the methods' weight
loaders can name the cache without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$CALCBENCH_CACHE, else $XDG_CACHE_HOME/calcbench, else ~/.cache/calcbench; absolute,
    so that cluster workers started in another folder use the same cache."""
    if os.environ.get("CALCBENCH_CACHE"):
        return Path(os.environ["CALCBENCH_CACHE"]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base).expanduser() / "calcbench").absolute()


def default_results_dir() -> Path:
    """$CALCBENCH_RESULTS, else ./results; absolute (resolved against this process's folder),
    so that cluster workers whose working folder differs write to the same place."""
    return Path(os.environ.get("CALCBENCH_RESULTS", "results")).expanduser().absolute()
