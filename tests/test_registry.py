"""Method registry: built-ins, duplicates naming both providers, entry points, suggestions."""

from __future__ import annotations

from importlib import metadata

import pytest

import benchmark.registry as registry
from benchmark.errors import UserError
from methods.base import SingleNetworkMethod


def test_builtin_unet_is_registered() -> None:
    info = registry.get_method("unet")
    assert info.display_name == "Unet" and info.group == "P1"
    assert info.provider.package == "calcbench"


def test_unknown_method_suggests_closest() -> None:
    with pytest.raises(UserError, match="did you mean 'unet'"):
        registry.get_method("unte")


def test_duplicate_name_names_both_providers() -> None:
    registry.METHODS.ensure_loaded()
    with pytest.raises(RuntimeError, match=r"registered twice: by calcbench .* and by calcbench"):
        @registry.register_method("unet", display_name="Other", group="plugin")
        class Other(SingleNetworkMethod):  # pragma: no cover - never instantiated
            pass


def test_bad_group_is_rejected() -> None:
    with pytest.raises(ValueError, match="group must be one of"):
        registry.register_method("x", display_name="X", group="P9")


def test_entry_point_without_decorator_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = metadata.EntryPoint(name="bad", value="collections:OrderedDict",
                             group="calcbench.methods")
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [ep])
    with pytest.raises(RuntimeError, match="not a calcbench method"):
        registry._load_entry_points("calcbench.methods", registry._register_method_entry_point)


def test_plugins_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    monkeypatch.setenv("CALCBENCH_NO_PLUGINS", "1")
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: called.append(group))
    registry._load_entry_points("calcbench.methods", registry._register_method_entry_point)
    assert called == []


def test_foreign_datasets_package_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from benchmark import check_datasets_package

    assert check_datasets_package() is None
    fake = types.ModuleType("datasets")
    fake.__file__ = "/site-packages/datasets/__init__.py"
    monkeypatch.setitem(sys.modules, "datasets", fake)
    message = check_datasets_package()
    assert message is not None and "HuggingFace" in message and "/site-packages" in message


def test_domain_registry_and_stand_in_note() -> None:
    from benchmark.registry import resolve_domain, stand_in_note

    domains = registry.DOMAINS.all()
    assert {"ffdm", "dbt", "cbis-ddsm"} <= set(domains)
    ffdm = resolve_domain("ffdm")
    assert ffdm.synthetic and "SYNTHETIC stand-in" in (stand_in_note("ffdm", ffdm) or "")
    with pytest.raises(UserError, match="did you mean 'dbt'"):
        resolve_domain("dbtt")
