"""The format name -> adapter class table (`bench data add --format`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from datasets.real.bindings import FORMATS, Binding
from datasets.real.cases import Adapter


def adapter_class(fmt: str) -> type[Adapter]:
    """The adapter class of a format name (UserError listing the formats otherwise)."""
    if fmt == "folder":
        from datasets.real.folder import FolderAdapter

        return FolderAdapter
    if fmt == "cbis-ddsm":
        from datasets.real.cbis_ddsm import CbisDdsmAdapter

        return CbisDdsmAdapter
    if fmt == "cbis-ddsm-jpeg":
        from datasets.real.cbis_ddsm_jpeg import CbisDdsmJpegAdapter

        return CbisDdsmJpegAdapter
    if fmt == "inbreast":
        from datasets.real.inbreast import InbreastAdapter

        return InbreastAdapter
    raise UserError(f"unknown data format '{fmt}' (expected one of {', '.join(FORMATS)})")


def make_adapter(binding: Binding) -> Adapter:
    """The adapter for a binding; its root must be an existing folder."""
    root = Path(binding.root)
    if not root.is_dir():
        raise UserError(f"data '{binding.name}': root folder '{root}' does not exist")
    options: dict[str, Any] = dict(binding.options)
    return adapter_class(binding.format)(root, options)
