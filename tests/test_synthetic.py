"""Synthetic domains: determinism, value ranges, cache behaviour, schema errors, domain shift."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from benchmark.errors import UserError
from datasets.domain import DomainData
from datasets.report import breast_pixels, contact_sheet, intensity_stats
from datasets.synthetic import BUILTIN_DOMAINS_DIR, SyntheticDomain, load_domain_toml
from datasets.synthetic.params import schema_rows

TINY = """\
name = "tiny"
description = "a tiny test domain"

[dataset]
n_patients = 3
views = ["L-CC", "R-MLO"]
anatomy_seed = 7
tile_mm = 20.0
pixel_spacing_mm = 0.2

[anatomy]
texture_grid = 64
negative_fraction = 0.0
cluster_extent_mm = [3.0, 6.0]
"""

TINY_DBT = """\
name = "tiny-dbt"

[dataset]
n_patients = 3
views = ["L-CC"]
slices_per_view = 3
anatomy_seed = 7
tile_mm = 20.0
pixel_spacing_mm = 0.2

[anatomy]
texture_grid = 64
negative_fraction = 0.0
cluster_extent_mm = [6.0, 10.0]

[acquisition]
geometry = "tomosynthesis"
zero_background = true
"""


class FakeReporter:
    """Records progress tasks and log lines like benchmark.progress.Reporter would show them."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.advanced = 0
        self.tasks: list[tuple[str, int | None]] = []

    def log(self, message: str) -> None:
        """Record a log line."""
        self.logs.append(message)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Any:
        """Count advances of a task."""
        self.tasks.append((description, total))
        reporter = self

        class _Task:
            """A task handle."""
            def advance(self, n: int = 1, **fields: Any) -> None:
                """Count completed items."""
                reporter.advanced += n

        yield _Task()


def _write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    """Write a TOML text into tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny projection domain TOML, written once per module."""
    return _write(tmp_path_factory.mktemp("toml"), TINY)


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> DomainData:
    """The tiny domain generated at 32 px (shared by several tests)."""
    return SyntheticDomain.from_toml(tiny_path).generate(32)


def _builtin(name: str, n_patients: int) -> SyntheticDomain:
    """A built-in domain with fewer patients (keeps the test fast)."""
    dom = SyntheticDomain.from_toml(BUILTIN_DOMAINS_DIR / f"{name}.toml")
    return SyntheticDomain(dom.params.with_overrides({"dataset.n_patients": n_patients,
                                                      "dataset.test_patients": 0}))


def test_values_shapes_and_meta(tiny: DomainData) -> None:
    """Images float32 in [0, 1], masks {0, 1}, spacing = tile / size, views in order."""
    assert len(tiny) == 6
    assert tiny.images.dtype == np.float32 and tiny.images.shape == (6, 32, 32)
    assert tiny.images.min() >= 0.0 and tiny.images.max() <= 1.0
    assert tiny.masks.dtype == np.uint8 and set(np.unique(tiny.masks)) <= {0, 1}
    np.testing.assert_allclose(tiny.spacing_mm, 20.0 / 32)
    assert len(set(tiny.image_ids)) == 6
    assert [m["view"] for m in tiny.meta[:2]] == ["L-CC", "R-MLO"]
    assert tiny.meta[1]["laterality"] == "R"


def test_positive_tiles_have_masks(tiny: DomainData) -> None:
    """Every tile with a cluster has a non-empty mask and says so in meta."""
    for mask, meta in zip(tiny.masks, tiny.meta, strict=True):
        assert meta["n_clusters"] >= 1
        assert meta["has_cluster"] == bool(mask.any())
        assert mask.any()


def test_deterministic_per_seed(tiny_path: Path, tiny: DomainData) -> None:
    """Same parameters give identical arrays; another anatomy seed does not."""
    again = SyntheticDomain.from_toml(tiny_path).generate(32)
    np.testing.assert_array_equal(again.images, tiny.images)
    np.testing.assert_array_equal(again.masks, tiny.masks)
    other = SyntheticDomain(load_domain_toml(tiny_path).with_overrides(
        {"dataset.anatomy_seed": 8})).generate(32)
    assert not np.array_equal(other.images, tiny.images)


def test_same_anatomy_seed_same_patients(tiny_path: Path, tiny: DomainData) -> None:
    """Acquisition changes the pixels, not the patients: same masks and patient draws."""
    params = load_domain_toml(tiny_path).with_overrides(
        {"acquisition.lut": "sigmoid", "acquisition.mu_calc_per_mm": 1.0})
    other = SyntheticDomain(params).generate(32)
    np.testing.assert_array_equal(other.masks, tiny.masks)
    assert [m["density"] for m in other.meta] == [m["density"] for m in tiny.meta]
    assert not np.array_equal(other.images, tiny.images)


def test_monochrome1_storage_is_corrected(tiny_path: Path, tiny: DomainData) -> None:
    """Stored MONOCHROME1 and corrected gives the MONOCHROME2 picture."""
    params = load_domain_toml(tiny_path).with_overrides({"acquisition.photometric": "MONOCHROME1"})
    inverted = SyntheticDomain(params).generate(32)
    np.testing.assert_allclose(inverted.images, tiny.images, atol=1e-6)


def test_cache_hit_regeneration_and_progress(tiny_path: Path, tmp_path: Path) -> None:
    """Second load reads the shard store; a changed parameter or size regenerates."""
    dom = SyntheticDomain.from_toml(tiny_path)
    rep = FakeReporter()
    first = dom.load(32, tmp_path, progress=rep)
    assert dom.generation_count == 1 and rep.advanced == 6 and rep.tasks[0][1] == 6
    path = dom.cache_path(32, tmp_path) / "manifest.json"
    assert path.parent.parent == tmp_path / "shards" / "synthetic" and path.exists()
    mtime = path.stat().st_mtime_ns
    fresh = SyntheticDomain.from_toml(tiny_path)
    t0 = time.perf_counter()
    second = fresh.load(32, tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert fresh.generation_count == 0 and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.images, first.images)
    assert second.meta == first.meta and second.image_ids == first.image_ids
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    assert type(second.images).__name__ == "LazyArray"  # read lazily, not loaded whole
    changed = SyntheticDomain(dom.params.with_overrides({"acquisition.bit_depth": 8}))
    assert changed.fingerprint() != dom.fingerprint()
    changed.load(32, tmp_path)
    assert changed.generation_count == 1
    other_size = SyntheticDomain.from_toml(tiny_path)
    other_size.load(16, tmp_path)
    assert other_size.generation_count == 1


def test_corrupt_cache_is_regenerated(tiny_path: Path, tmp_path: Path) -> None:
    """A truncated shard is logged and regenerated, not a crash."""
    dom = SyntheticDomain.from_toml(tiny_path)
    good = dom.load(32, tmp_path)
    path = dom.cache_path(32, tmp_path) / "shard-00000.images.npy"
    path.write_bytes(path.read_bytes()[:200])  # truncated file
    rep = FakeReporter()
    again = SyntheticDomain.from_toml(tiny_path)
    data = again.load(32, tmp_path, progress=rep)
    assert again.generation_count == 1
    assert any("shard-00000" in line and "rebuilding" in line for line in rep.logs)
    np.testing.assert_array_equal(data.images, good.images)
    assert SyntheticDomain.from_toml(tiny_path).load(32, tmp_path) is not None


@pytest.mark.parametrize(("body", "expected"), [
    ("[acquisition]\nnosie = 3\n", "tiny.toml: unknown key 'acquisition.nosie'"),
    ("[acquisition]\nbit_depth = 40\n", "acquisition.bit_depth = 40 is out of range [6, 16]"),
    ("[dataset]\nn_patients = 'many'\n", "dataset.n_patients must be an integer"),
    ("[acquisition]\nlut = 'sigmoidal'\n", "(did you mean 'sigmoid'?)"),
    ("[anatomy]\nspeck_diameter_mm = [1.0, 0.1]\n", "anatomy.speck_diameter_mm"),
    ("[dataset]\nviews = ['L-CC', 'L-XX']\n", "dataset.views has unknown view 'L-XX'"),
    ("[acquisiton]\nlut = 'linear'\n", "(did you mean 'acquisition'?)"),
    ("[dataset]\nn_patients = = 3\n", "line 3"),
    ("[acquisition]\nvoi_mode = 'tissue'\n", "acquisition.voi_mode = 'tissue' needs"),
    ("[acquisition]\nzero_background = 1\n", "acquisition.zero_background must be true or false"),
    ("[dataset]\nslices_per_view = 3\n", "dataset.slices_per_view = 3 needs"),
])
def test_schema_errors_name_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    """Schema errors are one line naming the file and the dotted key."""
    path = _write(tmp_path, 'name = "tiny"\n' + body)
    with pytest.raises(UserError) as info:
        load_domain_toml(path)
    message = str(info.value)
    assert expected in message and "\n" not in message and message.startswith("tiny.toml:")


def test_schema_rows_cover_every_key() -> None:
    """Every key documents its range and meaning; overrides are validated."""
    rows = {row[0]: row for row in schema_rows()}
    assert rows["acquisition.bit_depth"][3] == "[6, 16]"
    assert "sigmoid" in rows["acquisition.lut"][3] and all(row[4] for row in rows.values())
    with pytest.raises(UserError, match=r"dataset\.n_patients = 0 is out of range"):
        load_domain_toml(BUILTIN_DOMAINS_DIR / "ffdm.toml").with_overrides(
            {"dataset.n_patients": 0})


def test_builtin_domains_describe() -> None:
    """The three built-in TOML files load and describe themselves."""
    names = sorted(p.stem for p in BUILTIN_DOMAINS_DIR.glob("*.toml"))
    assert names == ["cbis-ddsm", "dbt", "ffdm"]
    for name in names:
        info = SyntheticDomain.from_toml(BUILTIN_DOMAINS_DIR / f"{name}.toml").describe()
        assert info["name"] == name and info["kind"] == "synthetic" and info["description"]
        assert info["tile_mm"] == 50.0 and info["images"] >= 100
    assert SyntheticDomain.from_toml(BUILTIN_DOMAINS_DIR / "ffdm.toml", name="x").name == "x"


def test_dbt_slices_and_volumes(tmp_path: Path) -> None:
    """DBT slices carry volume id and sorted slice indices; the centre slice has the cluster."""
    data = SyntheticDomain.from_toml(_write(tmp_path, TINY_DBT)).generate(32)
    assert len(data) == 9
    for v in range(3):
        metas = data.meta[3 * v:3 * v + 3]
        assert len({m["volume_id"] for m in metas}) == 1
        slices = [m["slice"] for m in metas]
        assert slices == sorted(slices) and len(set(slices)) == 3
        assert data.masks[3 * v + 1].any()  # the stack is centred on the cluster


def test_builtin_domains_differ_and_have_views(tmp_path: Path) -> None:
    """Built-in domains differ in intensity distribution; FFDM patients have 4 views."""
    ffdm = _builtin("ffdm", 3).generate(64)
    dbt = _builtin("dbt", 2).generate(64)
    cbis = _builtin("cbis-ddsm", 2).generate(64)
    by_patient: dict[str, set[str]] = {}
    for pid, meta in zip(ffdm.patient_ids, ffdm.meta, strict=True):
        by_patient.setdefault(pid, set()).add(meta["view"])
    assert all(len(views) == 4 for views in by_patient.values()) and len(by_patient) == 3
    a, b, c = (breast_pixels(d) for d in (ffdm, dbt, cbis))
    assert stats.ks_2samp(a, b).statistic > 0.1
    assert stats.ks_2samp(a, c).statistic > 0.1
    summary = [intensity_stats(d) for d in (ffdm, dbt, cbis)]
    assert all(0.0 < s["mean"] < 1.0 and s["cluster_fraction"] > 0.5 for s in summary)
    out = contact_sheet([ffdm, dbt, cbis], tmp_path / "sheet.png", n_per_domain=3)
    assert out.exists() and out.stat().st_size > 1000


def test_atomic_write_leaves_no_temp_on_failure(tiny_path: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed cache write leaves neither the file nor a temp file behind."""
    dom = SyntheticDomain.from_toml(tiny_path)

    def boom(*args: Any, **kwargs: Any) -> None:
        """Simulate a failing os.replace."""
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        dom.load(16, tmp_path)
    left = [f.name for f in dom.cache_path(16, tmp_path).iterdir() if f.name != ".build.lock"]
    assert not left  # no shard, no temp file, no manifest
