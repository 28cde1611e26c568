"""The embedded default data: synthetic mammography domains defined as TOML parameter files.

`SyntheticDomain.from_toml(path)` reads one; the built-in `ffdm`, `dbt` and `cbis-ddsm` live in
`BUILTIN_DOMAINS_DIR`. Anatomy is simulated per case (anatomy.py), acquisition per domain
(acquisition.py); the parameter schema with every key's range and meaning is in params.py.
"""

from __future__ import annotations

from pathlib import Path

from datasets.synthetic.domain import SyntheticDomain
from datasets.synthetic.params import GENERATOR_VERSION, DomainParams, load_domain_toml

BUILTIN_DOMAINS_DIR = Path(__file__).resolve().parent / "domains"

__all__ = [
    "BUILTIN_DOMAINS_DIR",
    "GENERATOR_VERSION",
    "DomainParams",
    "SyntheticDomain",
    "load_domain_toml",
]
