"""Adapters for real mammography data: CBIS-DDSM (DICOM and JPEG), INbreast, folder manifests.

`bench data add NAME --format ... --root ...` binds a name to one of them (bindings.py);
`RealDomain` (domain.py) reads it through its format adapter, preprocesses every image
(preprocess.py) and caches the result as compressed npz (cache.py).
"""

from __future__ import annotations

from datasets.real.bindings import Binding, load_bindings
from datasets.real.domain import RealDomain

__all__ = ["Binding", "RealDomain", "load_bindings"]
