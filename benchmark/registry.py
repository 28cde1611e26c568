"""Plugin registries for methods and domains.

Built-in methods register with `@register_method(...)` in modules of the `methods` package;
third-party packages add entries through the entry-point groups `calcbench.methods` and
`calcbench.domains`. Nothing is imported until a registry is first used (lazy), and a name
claimed twice fails loudly, naming both providers. `CALCBENCH_NO_PLUGINS=1` skips entry points.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from benchmark.errors import UserError, closest

PAPER_GROUPS = ("P1", "P2", "P3", "ours", "ablation", "plugin")

T = TypeVar("T")


@dataclass(frozen=True)
class Provider:
    """Which package supplied a registry entry (for listings and duplicate errors)."""

    package: str
    version: str
    origin: str  # module or entry point that registered it

    def __str__(self) -> str:
        return f"{self.package} {self.version} ({self.origin})"


@dataclass(frozen=True)
class MethodInfo:
    """Registry record of one method: the class plus its paper metadata."""

    name: str
    cls: type
    display_name: str
    group: str
    citation: str
    provider: Provider


@dataclass(frozen=True)
class DomainInfo:
    """Registry record of one domain factory (a callable returning a Domain)."""

    name: str
    factory: Callable[[], Any]
    provider: Provider
    synthetic_stand_in: bool = False


def _calcbench_version() -> str:
    try:
        return metadata.version("calcbench")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _builtin_provider(module: str) -> Provider:
    return Provider("calcbench", _calcbench_version(), module)


class _Registry:
    """Name -> record map, filled lazily by `loader` on first access."""

    def __init__(self, kind: str, loader: Callable[[], None]) -> None:
        self.kind = kind
        self._loader = loader
        self._entries: dict[str, Any] = {}
        self._loaded = False
        self._loading = False

    def add(self, name: str, record: Any) -> None:
        if name in self._entries:
            old = self._entries[name].provider
            raise RuntimeError(
                f"{self.kind} '{name}' is registered twice: by {old} and by {record.provider}"
            )
        self._entries[name] = record

    def ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            self._loader()
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> Any:
        self.ensure_loaded()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise UserError(
                f"unknown {self.kind} '{name}'{closest(name, self._entries)}; known: {known}"
            )
        return self._entries[name]

    def all(self) -> dict[str, Any]:
        self.ensure_loaded()
        return dict(self._entries)


# --- methods -----------------------------------------------------------------------------------

_pending_provider: Provider | None = None  # set while an entry point's module is imported


def _load_methods() -> None:
    import methods as builtin_pkg

    for mod in pkgutil.iter_modules(builtin_pkg.__path__):
        if not mod.name.startswith("_") and mod.name not in {"base", "networks", "losses"}:
            importlib.import_module(f"methods.{mod.name}")
    _load_entry_points("calcbench.methods", _register_method_entry_point)


def _register_method_entry_point(ep: metadata.EntryPoint, provider: Provider) -> None:
    global _pending_provider
    _pending_provider = provider
    try:
        obj = ep.load()
    finally:
        _pending_provider = None
    meta = getattr(obj, "_calcbench_method", None)
    if meta is None:
        raise RuntimeError(
            f"entry point '{ep.name}' of {provider} is not a calcbench method: decorate the class "
            "with @benchmark.registry.register_method(...)"
        )
    if meta["name"] not in METHODS._entries:  # not self-registered on import: register it now
        _add_method(obj, provider=provider, **meta)


def _load_entry_points(group: str, handler: Callable[[metadata.EntryPoint, Provider], None]
                       ) -> None:
    if os.environ.get("CALCBENCH_NO_PLUGINS") == "1":
        return
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        provider = Provider(
            dist.metadata["Name"] if dist else "unknown",
            dist.version if dist else "?",
            f"entry point {ep.value}",
        )
        handler(ep, provider)


def _add_method(cls: type, *, name: str, display_name: str, group: str, citation: str,
                provider: Provider) -> None:
    METHODS.add(name, MethodInfo(name, cls, display_name, group, citation, provider))


def register_method(name: str, *, display_name: str, group: str, citation: str = ""
                    ) -> Callable[[type[T]], type[T]]:
    """Class decorator registering a Method under `name` with its paper metadata."""
    if group not in PAPER_GROUPS:
        raise ValueError(f"method '{name}': group must be one of {PAPER_GROUPS}, got '{group}'")

    def decorate(cls: type[T]) -> type[T]:
        meta = {"name": name, "display_name": display_name, "group": group,
                "citation": citation}
        cls._calcbench_method = meta  # type: ignore[attr-defined]
        cls.name = name  # type: ignore[attr-defined]
        provider = _pending_provider or _builtin_provider(cls.__module__)
        _add_method(cls, provider=provider, **meta)
        return cls

    return decorate


METHODS = _Registry("method", _load_methods)


def get_method(name: str) -> MethodInfo:
    """Look up a registered method by its CLI name (UserError with a suggestion if unknown)."""
    return METHODS.get(name)


# --- domains -----------------------------------------------------------------------------------

def _load_domains() -> None:
    from datasets.registry import register_builtin_domains

    register_builtin_domains(lambda name, factory, module, stand_in: DOMAINS.add(
        name, DomainInfo(name, factory, _builtin_provider(module), stand_in)))
    _load_entry_points("calcbench.domains", _register_domain_entry_point)


def _register_domain_entry_point(ep: metadata.EntryPoint, provider: Provider) -> None:
    factory = ep.load()
    if not callable(factory):
        raise RuntimeError(f"entry point '{ep.name}' of {provider} must be a Domain factory")
    DOMAINS.add(ep.name, DomainInfo(ep.name, factory, provider))


DOMAINS = _Registry("domain", _load_domains)


def resolve_domain(spec: str) -> Any:
    """A user data binding, a registered domain name, or a synthetic-domain TOML path -> Domain."""
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
    info = DOMAINS.all().get(spec)
    if info is not None and info.synthetic_stand_in and getattr(domain, "synthetic", False):
        return (f"note: '{spec}' is the built-in SYNTHETIC stand-in "
                f"(datasets/synthetic/domains/{spec}.toml), not real {spec.upper()} data")
    return None
