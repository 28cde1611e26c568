"""Sweep launchers as plugins (entry-point group `calcbench.launchers`): local, slurm, ray.

A launcher receives picklable `JobCall`s and runs each somewhere (a process pool, a Slurm job
array, Ray tasks), reporting every outcome back. The registry reuses `benchmark.registry`'s
lazy, duplicate-checking `_Registry` and entry-point loader; the built-ins are declared in
pyproject.toml and also registered directly, so they work from a source checkout and with
CALCBENCH_NO_PLUGINS=1.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata

from benchmark.launchers.base import Launcher, LaunchOptions
from benchmark.registry import Provider, _builtin_provider, _load_entry_points, _Registry

BUILTIN_LAUNCHERS = {
    "local": "benchmark.launchers.local:LocalLauncher",
    "slurm": "benchmark.launchers.slurm:SlurmLauncher",
    "ray": "benchmark.launchers.ray_tasks:RayLauncher",
}

__all__ = ["LAUNCHERS", "LaunchOptions", "Launcher", "LauncherInfo", "get_launcher"]


@dataclass(frozen=True)
class LauncherInfo:
    """Registry record of one launcher class."""

    name: str
    cls: type[Launcher]
    provider: Provider


def _check(obj: object, where: str) -> type[Launcher]:
    if not (isinstance(obj, type) and issubclass(obj, Launcher)):
        raise RuntimeError(f"{where} is not a calcbench launcher: subclass "
                           "benchmark.launchers.base.Launcher")
    return obj


def _register_entry_point(ep: metadata.EntryPoint, provider: Provider) -> None:
    LAUNCHERS.add(ep.name, LauncherInfo(ep.name, _check(ep.load(), f"entry point '{ep.name}' "
                                                        f"of {provider}"), provider))


def _load_launchers() -> None:
    _load_entry_points("calcbench.launchers", _register_entry_point)
    registered = LAUNCHERS._entries
    for name, target in BUILTIN_LAUNCHERS.items():
        if name not in registered:  # source checkout without metadata, or plugins disabled
            module, attr = target.split(":")
            cls = _check(getattr(importlib.import_module(module), attr), target)
            LAUNCHERS.add(name, LauncherInfo(name, cls, _builtin_provider(module)))


LAUNCHERS = _Registry("launcher", _load_launchers)


def get_launcher(name: str, options: LaunchOptions) -> Launcher:
    """Instantiate the launcher registered as `name` (UserError with a suggestion if unknown)."""
    return LAUNCHERS.get(name).cls(options)
