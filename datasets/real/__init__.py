"""Adapters for real mammography data: CBIS-DDSM (DICOM and JPEG), INbreast, folder manifests.

`bench data add NAME --format ... --root ...` binds a name to one of them (bindings.py);
`RealDomain` (domain.py) reads it through its format adapter, preprocesses every image
(preprocess.py) and caches the result as compressed npz (cache.py). Imports are lazy so that
resolving a synthetic domain never pays for pydicom / scikit-image.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Binding", "RealDomain", "load_bindings"]


def __getattr__(name: str) -> Any:
    """Import RealDomain / Binding / load_bindings on first use."""
    if name == "RealDomain":
        from datasets.real.domain import RealDomain

        return RealDomain
    if name in ("Binding", "load_bindings"):
        from datasets.real import bindings

        return getattr(bindings, name)
    raise AttributeError(f"module 'datasets.real' has no attribute '{name}'")
