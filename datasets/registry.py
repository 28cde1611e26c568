"""The built-in synthetic domains, registered through a callback (the harness owns the registry
and resolves names: `benchmark.registry.resolve_domain`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# Names that stand for real datasets in the paper; out of the box they are synthetic stand-ins.
STAND_IN_NAMES = ("ffdm", "dbt", "cbis-ddsm")


def _builtin_dir() -> Path:
    from datasets.synthetic import BUILTIN_DOMAINS_DIR

    return Path(BUILTIN_DOMAINS_DIR)


def register_builtin_domains(add: Callable[[str, Callable[[], Any], str, bool], None]) -> None:
    """Register every TOML file shipped in datasets/synthetic/domains/ under its stem."""
    from datasets.synthetic import SyntheticDomain

    for path in sorted(_builtin_dir().glob("*.toml")):
        name = path.stem

        def factory(path: Path = path, name: str = name) -> Any:
            return SyntheticDomain.from_toml(path, name=name)

        add(name, factory, "datasets.synthetic", name in STAND_IN_NAMES)
