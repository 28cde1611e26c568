"""Resolve a domain name or TOML path to a Domain; registers the built-in synthetic domains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

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


def resolve_domain(spec: str) -> Any:
    """A user data binding, a registered domain name, or a synthetic-domain TOML path -> Domain."""
    from benchmark.registry import DOMAINS

    if spec.endswith(".toml") or Path(spec).suffix == ".toml":
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"domain file '{spec}' does not exist")
        from datasets.synthetic import SyntheticDomain

        return SyntheticDomain.from_toml(path)
    from datasets.real.bindings import lookup

    binding = lookup(spec)  # `bench data add` bindings win over built-in names
    if binding is not None:
        from datasets.real import RealDomain

        return RealDomain(binding)
    return DOMAINS.get(spec).factory()


def stand_in_note(spec: str, domain: Any) -> str | None:
    """The one-line notice printed whenever a synthetic stand-in answers for a real name."""
    from benchmark.registry import DOMAINS

    info = DOMAINS.all().get(spec)
    if info is not None and info.synthetic_stand_in and getattr(domain, "synthetic", False):
        return (f"note: '{spec}' is the built-in SYNTHETIC stand-in "
                f"(datasets/synthetic/domains/{spec}.toml), not real {spec.upper()} data")
    return None
