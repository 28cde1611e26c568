"""User bindings of a domain name to real data, kept in a small TOML file.

The file is $CALCBENCH_CONFIG, else ~/.config/calcbench/data.toml, one table per name:
`[data.NAME]` with `format`, `root` (absolute), and `[data.NAME.options]`. Writes are atomic
(temp file + rename, benchmark.io) under a folder lock, so two `bench data add` never lose one
another's entry. The TOML writer is hand-written because the file holds only strings, numbers
and booleans and tomllib (stdlib) reads but does not write.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.io import atomic_write_text, folder_lock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

FORMATS = ("cbis-ddsm", "cbis-ddsm-jpeg", "inbreast", "folder")


@dataclass
class Binding:
    """A name bound to a dataset on disk: format, root folder and format options."""

    name: str
    format: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)


def config_path() -> Path:
    """$CALCBENCH_CONFIG, else ~/.config/calcbench/data.toml."""
    env = os.environ.get("CALCBENCH_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "calcbench" / "data.toml"


def load_bindings(path: Path | None = None) -> dict[str, Binding]:
    """Every binding in the config file (empty when the file does not exist)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"data config '{path}' is not valid TOML: {exc}") from None
    out = {}
    for name, table in (doc.get("data") or {}).items():
        if not isinstance(table, dict) or "format" not in table or "root" not in table:
            raise UserError(f"data config '{path}': [data.{name}] needs 'format' and 'root'")
        out[name] = Binding(name, str(table["format"]), str(table["root"]),
                            dict(table.get("options") or {}))
    return out


def lookup(name: str) -> Binding | None:
    """The binding for `name`, if the user registered one."""
    return load_bindings().get(name)


def _value(v: Any) -> str:
    """A TOML literal for a str / bool / int / float (JSON string escapes are valid TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def render(bindings: dict[str, Binding]) -> str:
    """The config file text for `bindings`."""
    lines = ["# calcbench data bindings: written by `bench data add`, read by every command", ""]
    for name in sorted(bindings):
        b = bindings[name]
        key = json.dumps(name)
        lines += [f"[data.{key}]", f"format = {_value(b.format)}", f"root = {_value(b.root)}"]
        if b.options:
            lines.append(f"[data.{key}.options]")
            lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in sorted(b.options.items())]
        lines.append("")
    return "\n".join(lines)


def save_binding(binding: Binding) -> Path:
    """Add or replace one binding, atomically; returns the config path."""
    path = config_path()
    with folder_lock(path.parent):
        current = load_bindings(path)
        current[binding.name] = binding
        atomic_write_text(path, render(current))
    return path


def remove_binding(name: str) -> Path:
    """Remove one binding (UserError when it does not exist)."""
    path = config_path()
    with folder_lock(path.parent):
        current = load_bindings(path)
        if name not in current:
            raise UserError(f"no data named '{name}' in '{path}'")
        del current[name]
        atomic_write_text(path, render(current))
    return path
