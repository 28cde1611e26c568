"""DBT stand-in realism: per-volume window, projection noise, random slices; official test
patients of the synthetic domains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.splits import make_split
from datasets.synthetic import SyntheticDomain, acquisition
from datasets.synthetic.acquisition import _slice_noise, acquire
from datasets.synthetic.anatomy import resolve_views, simulate_case
from datasets.synthetic.params import params_from_dict

DBT = {
    "name": "t-dbt",
    "dataset": {"n_patients": 4, "views": ["L-CC"], "slices_per_view": 4, "anatomy_seed": 11,
                "tile_mm": 20.0, "pixel_spacing_mm": 0.2},
    "anatomy": {"texture_grid": 64, "negative_fraction": 0.0, "cluster_extent_mm": [6.0, 10.0]},
    "acquisition": {"geometry": "tomosynthesis", "zero_background": True, "lut": "linear",
                    "voi_mode": "volume", "voi_percentiles": [1.0, 99.0], "voi_center": 0.5,
                    "voi_width": 1.0, "bit_depth": 16},
    "tomosynthesis": {"slice_sampling": "random", "reconstruction_noise": "projections"},
}


def _params(**changes: dict) -> object:
    """The test DBT parameters with some sections' keys replaced."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DBT.items()}
    for sec, values in changes.items():
        raw[sec].update(values)
    return params_from_dict(raw, "test")


def test_volume_window_is_shared_by_the_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """With voi_mode = volume every slice is shown through one window, and the 1st/99th
    breast percentiles of the whole volume land on 0 and 1 (about 1 % clip at each end)."""
    p = _params()
    case = simulate_case(p, 0, resolve_views(p, 0)[0])
    windows = []
    display = acquisition._display

    def spy(*args: object) -> np.ndarray:
        """Record the window each slice is shown through."""
        windows.append(args[3])
        return display(*args)

    monkeypatch.setattr(acquisition, "_display", spy)
    shots = acquire(case, p)
    assert len(windows) == 4 and windows[0] is not None and len(set(windows)) == 1
    breast = case.maps(shots[0].image.shape[0]).breast
    pooled = np.concatenate([s.image[breast] for s in shots])
    assert 0.003 < np.mean(pooled <= 0.0) < 0.03 and 0.003 < np.mean(pooled >= 1.0) < 0.03


def test_random_slices_are_distinct_and_show_the_cluster() -> None:
    """'random' sampling draws distinct 1-mm slices, deterministically; with a cluster thick
    enough, every drawn slice is annotated."""
    p = _params()
    for patient in range(4):
        case = simulate_case(p, patient, "L-CC")
        a, b = acquire(case, p), acquire(case, p)
        slices = [s.meta["slice"] for s in a]
        assert slices == sorted(slices) and len(set(slices)) == 4
        assert slices == [s.meta["slice"] for s in b]
        assert all(0 <= k < a[0].meta["n_slices"] for k in slices)
    centred = _params(tomosynthesis={"slice_sampling": "centred"})
    steps = [s.meta["slice"] for s in acquire(simulate_case(centred, 0, "L-CC"), centred)]
    assert np.all(np.diff(steps) == 3)  # slice_step_mm = 3 about the cluster


def test_projection_noise_is_correlated_and_high_pass() -> None:
    """Slices reconstructed from the same projections share noise (correlated), and the
    reconstruction filter leaves less noise power at low motion-axis frequencies."""
    rng = np.random.default_rng(0)
    k, n = 15, 128
    noise = rng.standard_normal((k, n, n)).astype(np.float32)
    tan = np.tan(np.deg2rad(np.linspace(-7.5, 7.5, k)))
    f = np.fft.fftfreq(n)[:, None]  # motion axis 0
    # a ramp-like filter: low motion-axis frequencies damped, high ones passed
    w = np.where(np.abs(f) < 0.125, 0.1, 1.0) * np.ones((1, n // 2 + 1))
    a = _slice_noise(noise, 10.0 * tan, 0, w.astype(np.float32))
    b = _slice_noise(noise, 11.0 * tan, 0, w.astype(np.float32))
    other = _slice_noise(rng.standard_normal((k, n, n)).astype(np.float32), 10.0 * tan, 0,
                         w.astype(np.float32))
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > 0.5 and abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 0.05
    power = np.abs(np.fft.fft(a, axis=0)) ** 2
    assert power[1:4].mean() < 0.3 * power[n // 4:n // 2].mean()
    # the white-noise level at high frequency is the mean of k fields: sd 1/sqrt(k)
    assert abs(power[n // 4:n // 2].mean() / n - 1 / k) < 0.2 / k


def test_official_test_patients_split(tmp_path: Path) -> None:
    """test_patients are simulated after the n_patients and form the test split; val is
    carved from the n_patients; the earlier patients are unchanged."""
    base = _params(dataset={"n_patients": 6, "slices_per_view": 1},
                   acquisition={"geometry": "projection", "voi_mode": "auto",
                                "zero_background": False},
                   tomosynthesis={"slice_sampling": "centred", "reconstruction_noise": "white"})
    plain = SyntheticDomain(base).generate(32)
    more = SyntheticDomain(base.with_overrides({"dataset.test_patients": 3}))
    data = more.generate(32)
    assert len(data) == len(plain) + 3 and plain.official_split is None
    np.testing.assert_array_equal(np.asarray(data.images[:len(plain)]),
                                  np.asarray(plain.images))
    split = make_split(data, more.fingerprint(), (0.7, 0.1, 0.2), 0, tmp_path)
    test_patients = {data.patient_ids[i] for i in split["test"]}
    assert test_patients == {"t-dbt-P0006", "t-dbt-P0007", "t-dbt-P0008"}
    assert len({data.patient_ids[i] for i in split["val"]}) == 1  # round(0.1 x 6)
    assert len(split["train"]) == 5
    assert more.describe()["patients"] == 9
