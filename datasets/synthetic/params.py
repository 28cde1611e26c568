"""Parameter schema of a synthetic domain and the strict TOML loader that checks it.

A synthetic domain is data: one TOML file of generator parameters in five sections
(`dataset`, `anatomy`, `acquisition`, `tomosynthesis`, `film`) plus a top-level `name` and
`description`. Every key has a type, a default, an allowed range (or set of choices) and a
one-line meaning in `SCHEMA`; anything else in a file is a `UserError` naming the file and the
full dotted key. `canonical_json()` is what the domain fingerprint hashes.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import UserError, closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 fallback declared in pyproject
    import tomli as tomllib

# Bump when the generator's output changes for the same parameters (the fingerprint also hashes
# the generator's source text, so this is for changes that the source hash would not show).
GENERATOR_VERSION = "1"

VIEW_NAMES = ("L-CC", "R-CC", "L-MLO", "R-MLO", "CC", "MLO")


@dataclass(frozen=True)
class Key:
    """One schema entry: kind ('int', 'float', 'bool', 'str', 'range', 'irange', 'views'),
    default, bounds [lo, hi] or choices, and a one-line meaning."""

    kind: str
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


def _k(kind: str, default: Any, lo: float | None, hi: float | None, doc: str) -> Key:
    """Shorthand for a numeric / range key."""
    return Key(kind, default, doc, lo, hi)


def _c(default: str, choices: tuple[str, ...], doc: str) -> Key:
    """Shorthand for a string key with fixed choices."""
    return Key("str", default, doc, choices=choices)


TOP_LEVEL: dict[str, Key] = {
    "name": Key("str", "", "domain name (defaults to the file's stem)"),
    "description": Key("str", "", "one line shown by `bench data show`"),
}

SCHEMA: dict[str, dict[str, Key]] = {
    "dataset": {
        "n_patients": _k("int", 20, 1, 100000,
                         "simulated patients split by the profile's fractions (train/val/test)"),
        "test_patients": _k("int", 0, 0, 100000,
                            "further patients held out as an official test split; then "
                            "val is carved from the n_patients and the test split is these"),
        "views": Key("views", ["L-CC", "R-CC", "L-MLO", "R-MLO"],
                     "views per patient: L-/R-CC/MLO, or CC/MLO with laterality drawn per patient"),
        "slices_per_view": _k("int", 1, 1, 64,
                              "images per view: 1 for projections, >1 for tomosynthesis slices"),
        "anatomy_seed": _k("int", 0, 0, 2**32 - 1,
                           "seed of the simulated patients (same seed = same patients)"),
        "tile_mm": _k("float", 50.0, 5.0, 400.0, "side of the square field of view of a tile, mm"),
        "pixel_spacing_mm": _k("float", 0.1, 0.02, 1.0,
                               "native detector / digitiser pixel spacing, mm"),
    },
    "anatomy": {
        "compressed_thickness_mm": _k("range", [35.0, 65.0], 10.0, 120.0,
                                      "compressed breast thickness per patient, mm"),
        "glandular_fraction": _k("range", [0.1, 0.55], 0.0, 1.0,
                                 "mean fibroglandular fraction per patient (density)"),
        "texture_beta": _k("range", [2.6, 3.4], 1.0, 5.0,
                           "power-law exponent beta of the 1/f^beta tissue spectrum"),
        "texture_anisotropy": _k("float", 0.3, 0.0, 0.9,
                                 "elongation of tissue structures toward the nipple (0 = none)"),
        "texture_softness": _k("float", 0.5, 0.02, 3.0,
                               "softness of the fat/gland boundary (sigmoid width, field sd)"),
        # 0.3 gives a projected glandular-fraction sd of ~0.14 over a 5 cm tile: a log10
        # exposure range of ~0.6 at 18 keV, the latitude mammography film is made to hold.
        "layer_correlation": _k("float", 0.3, 0.0, 1.0,
                                "correlation of tissue texture between depth layers"),
        "n_layers": _k("int", 8, 1, 64, "depth layers of the tissue model"),
        "texture_grid": _k("int", 256, 32, 2048,
                           "texture samples across the tile (the field is band-limited to 1/4)"),
        "subcutaneous_fat_mm": _k("float", 6.0, 0.0, 50.0,
                                  "fat-only band under the skin, mm"),
        "skin_mm": _k("float", 1.5, 0.0, 5.0, "skin thickness, mm"),
        "edge_fraction": _k("float", 0.35, 0.0, 1.0,
                            "fraction of tiles crossed by the skin line (background outside)"),
        "pectoral_fraction": _k("float", 0.4, 0.0, 1.0,
                                "fraction of MLO tiles that show the pectoral muscle"),
        "negative_fraction": _k("float", 0.1, 0.0, 1.0, "fraction of tiles without a cluster"),
        "max_clusters": _k("int", 3, 1, 10, "most clusters on one tile"),
        "extra_cluster_probability": _k("float", 0.25, 0.0, 1.0,
                                        "probability of each further cluster on a positive tile"),
        "specks_per_cluster": _k("irange", [5, 30], 1, 200,
                                 "microcalcifications per cluster"),
        "speck_diameter_mm": _k("range", [0.1, 1.0], 0.02, 5.0,
                                "microcalcification diameter (log-uniform), mm"),
        "cluster_extent_mm": _k("range", [3.0, 15.0], 0.5, 60.0,
                                "diameter of the region a cluster's specks spread over, mm"),
        "isolated_calcs": _k("irange", [0, 6], 0, 100,
                             "scattered single calcifications per tile (never in the mask)"),
        "mask_margin_mm": _k("float", 1.0, 0.0, 10.0,
                             "cluster mask = convex hull of the specks dilated by this, mm"),
    },
    "acquisition": {
        "receptor": _c("digital", ("digital", "film"),
                       "image receptor: digital detector or screen-film (then digitised)"),
        "geometry": _c("projection", ("projection", "tomosynthesis"),
                       "single projection (FFDM, film) or tomosynthesis slices (DBT)"),
        "mu_fat_per_mm": _k("float", 0.0456, 0.0, 1.0,
                            "linear attenuation of adipose tissue at the effective energy, 1/mm"),
        "mu_gland_per_mm": _k("float", 0.0802, 0.0, 1.0,
                              "linear attenuation of fibroglandular tissue, 1/mm"),
        "mu_muscle_per_mm": _k("float", 0.080, 0.0, 1.0, "linear attenuation of muscle, 1/mm"),
        "mu_skin_per_mm": _k("float", 0.080, 0.0, 1.0, "linear attenuation of skin, 1/mm"),
        "mu_calc_per_mm": _k("float", 1.2, 0.0, 20.0,
                             "effective linear attenuation of microcalcifications, 1/mm"),
        "scatter_to_primary": _k("float", 0.2, 0.0, 3.0,
                                 "scatter-to-primary ratio behind the breast (after any grid)"),
        "scatter_sigma_mm": _k("float", 15.0, 1.0, 200.0, "width of the scatter kernel, mm"),
        "quanta_per_mm2": _k("float", 2.5e5, 100.0, 1e8,
                             "detected x-ray quanta per mm^2 behind the breast (AEC target)"),
        "electronic_noise_quanta": _k("float", 3.0, 0.0, 1000.0,
                                      "additive detector noise per pixel (per projection), quanta"),
        "mtf_sigma_mm": _k("float", 0.05, 0.0, 2.0,
                           "Gaussian detector / screen blur (MTF) sigma, mm"),
        "equalization": _k("float", 0.0, 0.0, 1.0,
                           "peripheral / thickness equalisation strength (vendor processing)"),
        "equalization_sigma_mm": _k("float", 8.0, 0.5, 100.0,
                                    "low-pass width of the thickness equalisation, mm"),
        "unsharp_amount": _k("float", 0.0, 0.0, 5.0, "unsharp-mask gain (vendor processing)"),
        "unsharp_sigma_mm": _k("float", 1.0, 0.05, 20.0, "unsharp-mask blur sigma, mm"),
        "lut": _c("linear", ("none", "linear", "sigmoid", "log", "gamma"),
                  "display LUT after the VOI ('none': VOI output as is; film: digitised values)"),
        "voi_mode": _c("auto", ("auto", "tissue", "volume"),
                       "0..1 before the LUT: 'auto' = breast percentiles of each image, "
                       "'tissue' = fat..gland attenuation (quantitative DBT slices), "
                       "'volume' = breast percentiles of the whole DBT volume"),
        "voi_percentiles": _k("range", [1.0, 99.0], 0.0, 100.0,
                              "breast-region percentiles mapped to 0..1 by the 'auto' VOI"),
        "voi_center": _k("float", 0.5, -2.0, 3.0, "window centre in auto-VOI units"),
        "voi_width": _k("float", 1.0, 0.01, 10.0, "window width in auto-VOI units"),
        "lut_gamma": _k("float", 1.0, 0.1, 10.0, "exponent of the 'gamma' LUT"),
        "lut_log_gain": _k("float", 10.0, 0.1, 1000.0, "gain k of the 'log' LUT log(1+k u)"),
        "photometric": _c("MONOCHROME2", ("MONOCHROME1", "MONOCHROME2"),
                          "stored polarity (MONOCHROME1 is inverted back by the standard rule)"),
        "bit_depth": _k("int", 12, 6, 16, "bits stored"),
        "zero_background": Key("bool", False, "set pixels outside the breast to 0 (vendor mask)"),
    },
    "tomosynthesis": {
        "n_projections": _k("int", 15, 3, 100, "projections of the tube sweep"),
        "sweep_angle_deg": _k("float", 15.0, 1.0, 90.0, "full angular range of the sweep, deg"),
        "motion_axis": _k("int", 0, 0, 1, "image axis of the tube motion (0 rows, 1 columns)"),
        "slice_thickness_mm": _k("float", 1.0, 0.1, 10.0, "reconstructed slice spacing, mm"),
        "slice_step_mm": _k("float", 3.0, 0.1, 30.0,
                            "distance between the stored slices ('centred' sampling), mm"),
        "slice_sampling": _c("centred", ("centred", "random"),
                             "stored slices: 'centred' = slice_step apart about the cluster; "
                             "'random' = drawn across the slices showing the cluster"),
        "reconstruction_noise": _c("white", ("white", "projections"),
                                   "'white' = independent noise per slice; 'projections' = "
                                   "each projection's noise shift-and-added and filtered"),
        "mask_focus_mm": _k("float", 2.0, 0.0, 30.0,
                            "a speck is annotated on a slice within this depth distance, mm"),
        "min_specks_in_focus": _k("int", 3, 1, 100,
                                  "specks in focus needed to annotate a cluster on a slice"),
    },
    "film": {
        "d_min": _k("float", 0.2, 0.0, 2.0, "base + fog optical density"),
        "d_max": _k("float", 3.9, 1.0, 6.0, "maximum optical density of the film"),
        "gamma": _k("float", 3.2, 0.5, 8.0, "film gamma (maximum slope of the H&D curve)"),
        "aec_target_od": _k("float", 1.6, 0.3, 4.0,
                            "optical density the AEC gives the breast's median exposure"),
        "grain_sigma_od": _k("float", 0.03, 0.0, 0.5,
                             "film granularity at OD 1 (Selwyn: sd grows as sqrt(OD))"),
        "dust_per_cm2": _k("float", 0.0, 0.0, 10.0,
                           "dust specks on the intensifying screen per cm^2 (white artefacts)"),
        "digitizer_od_range": _k("range", [0.0, 3.6], 0.0, 6.0,
                                 "optical densities the digitiser maps linearly to bright..dark"),
        "digitizer_noise_od": _k("float", 0.005, 0.0, 0.5, "digitiser noise, OD"),
        "digitizer_sigma_mm": _k("float", 0.03, 0.0, 1.0, "digitiser spot blur sigma, mm"),
    },
}


class Section(Mapping[str, Any]):
    """Read-only values of one schema section with attribute access (`p.acquisition.lut`)."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = dict(values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_values"][key]
        except KeyError:
            raise AttributeError(f"{self.__dict__.get('_name')}.{key}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Section({self._name}, {self._values})"


@dataclass(frozen=True)
class DomainParams:
    """Validated parameters of one synthetic domain (every schema key present)."""

    name: str
    description: str
    sections: dict[str, Section]
    source: str = field(default="", compare=False)

    def __getattr__(self, key: str) -> Section:
        sections = self.__dict__.get("sections", {})
        if key in sections:
            return sections[key]
        raise AttributeError(key)

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dict (name, description and every section), e.g. for JSON."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for sec, values in self.sections.items():
            out[sec] = {k: (list(v) if isinstance(v, list | tuple) else v)
                        for k, v in values.items()}
        return out

    def canonical_json(self) -> str:
        """Sorted, compact JSON of every generator parameter: the input of the fingerprint.

        The description and source path are left out: they do not change a pixel.
        """
        data = self.as_dict()
        data.pop("description")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> DomainParams:
        """A copy with dotted keys replaced (`{'dataset.n_patients': 4}`), validated as a file."""
        raw = self.as_dict()
        for dotted, value in overrides.items():
            sec, _, key = dotted.partition(".")
            if not key:
                raw[sec] = value
            else:
                raw.setdefault(sec, {})[key] = value
        label = f"{Path(self.source).name or self.name} (overrides)"
        return params_from_dict(raw, label, source=self.source, default_name=self.name)

    @property
    def n_all_patients(self) -> int:
        """Every simulated patient: the n_patients, then the official test patients."""
        return int(self.dataset.n_patients) + int(self.dataset.test_patients)

    @property
    def n_images(self) -> int:
        """Images the domain yields: patients x views x slices per view."""
        d = self.dataset
        return self.n_all_patients * len(d.views) * int(d.slices_per_view)


def _type_name(value: Any) -> str:
    """A TOML-ish name of a Python value's type for error messages."""
    return {bool: "bool", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _check_number(label: str, dotted: str, value: Any, key: Key, integer: bool) -> float | int:
    """Check one number's type and range; return it as int or float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        want = "an integer" if integer else "a number"
        raise UserError(f"{label}: {dotted} must be {want}, got {_type_name(value)} {value!r}")
    if integer and not isinstance(value, int):
        raise UserError(f"{label}: {dotted} must be an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{label}: {dotted} = {value!r} is not a finite number")
    if key.lo is not None and key.hi is not None and not key.lo <= value <= key.hi:
        lo, hi = (int(key.lo), int(key.hi)) if integer else (key.lo, key.hi)
        raise UserError(f"{label}: {dotted} = {value!r} is out of range [{lo}, {hi}]")
    return int(value) if integer else float(value)


def _check_value(label: str, dotted: str, value: Any, key: Key) -> Any:
    """Validate one value against its schema key; return the normalised value."""
    if key.kind in ("int", "float"):
        return _check_number(label, dotted, value, key, key.kind == "int")
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{label}: {dotted} must be true or false, got {value!r}")
        return value
    if key.kind == "str":
        if not isinstance(value, str):
            raise UserError(f"{label}: {dotted} must be a string, got {_type_name(value)} "
                            f"{value!r}")
        if key.choices is not None and value not in key.choices:
            raise UserError(f"{label}: {dotted} = {value!r} is not one of "
                            f"{', '.join(key.choices)}{closest(value, key.choices)}")
        return value
    if key.kind in ("range", "irange"):
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise UserError(f"{label}: {dotted} must be a [low, high] pair, got {value!r}")
        integer = key.kind == "irange"
        lo, hi = (_check_number(label, f"{dotted}[{i}]", v, key, integer)
                  for i, v in enumerate(value))
        if lo > hi:
            raise UserError(f"{label}: {dotted} = {list(value)!r} has low > high")
        return [lo, hi]
    if key.kind == "views":
        if not isinstance(value, list | tuple) or not value:
            raise UserError(f"{label}: {dotted} must be a non-empty array of view names")
        for v in value:
            if v not in VIEW_NAMES:
                raise UserError(f"{label}: {dotted} has unknown view {v!r} (choose from "
                                f"{', '.join(VIEW_NAMES)}){closest(str(v), VIEW_NAMES)}")
        if len(set(value)) != len(value):
            raise UserError(f"{label}: {dotted} lists a view twice: {list(value)!r}")
        return list(value)
    raise AssertionError(key.kind)  # pragma: no cover - schema bug


def params_from_dict(raw: Mapping[str, Any], label: str, source: str = "",
                     default_name: str = "") -> DomainParams:
    """Validate a parsed TOML document against `SCHEMA`; `label` prefixes every error."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in SCHEMA}
    for key, value in raw.items():
        if key in TOP_LEVEL:
            top[key] = _check_value(label, key, value, TOP_LEVEL[key])
        elif key in SCHEMA:
            if not isinstance(value, Mapping):
                raise UserError(f"{label}: '{key}' must be a table [{key}]")
            for sub, subvalue in value.items():
                dotted = f"{key}.{sub}"
                if sub not in SCHEMA[key]:
                    raise UserError(f"{label}: unknown key '{dotted}'"
                                    f"{closest(sub, SCHEMA[key])}")
                sections[key][sub] = _check_value(label, dotted, subvalue, SCHEMA[key][sub])
        else:
            raise UserError(f"{label}: unknown key '{key}'"
                            f"{closest(key, [*TOP_LEVEL, *SCHEMA])}")
    for sec, keys in SCHEMA.items():
        for key, spec in keys.items():
            sections[sec].setdefault(key, list(spec.default)
                                     if isinstance(spec.default, list) else spec.default)
    acq, dset = sections["acquisition"], sections["dataset"]
    if acq["geometry"] == "projection" and dset["slices_per_view"] != 1:
        raise UserError(f"{label}: dataset.slices_per_view = {dset['slices_per_view']} needs "
                        "acquisition.geometry = 'tomosynthesis'")
    if acq["geometry"] == "tomosynthesis" and acq["receptor"] == "film":
        raise UserError(f"{label}: acquisition.receptor = 'film' cannot be combined with "
                        "geometry = 'tomosynthesis'")
    if acq["voi_mode"] in ("tissue", "volume") and acq["geometry"] != "tomosynthesis":
        raise UserError(f"{label}: acquisition.voi_mode = '{acq['voi_mode']}' needs geometry = "
                        "'tomosynthesis' (only slices form a volume of attenuation values)")
    if acq["mu_gland_per_mm"] <= acq["mu_fat_per_mm"]:
        raise UserError(f"{label}: acquisition.mu_gland_per_mm must be > mu_fat_per_mm")
    film = sections["film"]
    if film["d_min"] >= film["d_max"]:
        raise UserError(f"{label}: film.d_min must be < film.d_max")
    if not film["d_min"] < film["aec_target_od"] < film["d_max"]:
        raise UserError(f"{label}: film.aec_target_od must lie between d_min and d_max")
    if film["digitizer_od_range"][0] >= film["digitizer_od_range"][1]:
        raise UserError(f"{label}: film.digitizer_od_range must have low < high")
    lo, hi = acq["voi_percentiles"]
    if lo >= hi:
        raise UserError(f"{label}: acquisition.voi_percentiles must have low < high")
    name = top.get("name") or default_name
    if not name:
        raise UserError(f"{label}: missing top-level 'name'")
    return DomainParams(name=name, description=top.get("description", ""),
                        sections={s: Section(s, v) for s, v in sections.items()}, source=source)


def load_domain_toml(path: str | Path) -> DomainParams:
    """Read and validate a synthetic-domain TOML file (errors are one-line `UserError`s)."""
    path = Path(path)
    label = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such synthetic-domain file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = " ".join(str(exc).split())
        raise UserError(f"{label}: TOML syntax error: {msg}") from None
    return params_from_dict(raw, label, source=str(path), default_name=path.stem)


def schema_rows() -> list[tuple[str, str, str, str, str]]:
    """(dotted key, type, default, allowed, meaning) for every key: for docs and `--help`."""
    rows = []
    for sec, keys in {"": TOP_LEVEL, **SCHEMA}.items():
        for key, spec in keys.items():
            dotted = f"{sec}.{key}" if sec else key
            if spec.choices:
                allowed = " | ".join(spec.choices)
            elif spec.lo is not None:
                allowed = f"[{spec.lo:g}, {spec.hi:g}]"
            else:
                allowed = ""
            rows.append((dotted, spec.kind, json.dumps(spec.default), allowed, spec.doc))
    return rows
