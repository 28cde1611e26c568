"""Source-domain augmentations: Bezier curves against the released code's values, inversion,
pseudo-domain batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.augment import (
    BezierCurve,
    Inversion,
    PseudoDomain,
    bezier_curves,
    identity,
    similar_dissimilar,
)

X = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])

# MLN-net's released Bezier script (100,000 samples): its sampled curve at these x
REFERENCE = {
    ((0.9, 0.1), (0.1, 0.9)): [0.0153, 0.0609, 0.5, 0.9391, 0.9847],
    ((0.3, 0.7), (0.7, 0.3)): [0.1904, 0.3610, 0.5, 0.6390, 0.8096],
    ((0.35, 0.65), (0.65, 0.35)): [0.1633, 0.3349, 0.5, 0.6651, 0.8367],
}


def _released_code_curve(p1: tuple, p2: tuple, x: np.ndarray) -> np.ndarray:
    """The MLN repo's method: 100,000 samples, reversed Bernstein basis, sort, interp."""
    pts = np.array([[0, 0], p1, p2, [1, 1]], dtype=float)
    t = np.linspace(0.0, 1.0, 100000)
    coeff = [1, 3, 3, 1]
    bern = np.array([coeff[i] * t ** (3 - i) * (1 - t) ** i for i in range(4)])  # reversed basis
    xs, ys = np.sort(pts[:, 0] @ bern), np.sort(pts[:, 1] @ bern)
    return np.interp(x, xs, ys)


@pytest.mark.parametrize("points", list(REFERENCE))
def test_bezier_matches_reference_values(points: tuple) -> None:
    got = BezierCurve(*points)(X).numpy()
    np.testing.assert_allclose(got, REFERENCE[points], atol=6e-5)  # table has 4 decimals
    # ...and the released code's sampled curve to 1e-5 everywhere
    grid = np.linspace(0, 1, 1001)
    exact = BezierCurve(*points)(torch.from_numpy(grid)).numpy()
    np.testing.assert_allclose(exact, _released_code_curve(*points, grid), atol=1e-5)


def test_bezier_is_monotone_fixes_ends_and_mirror_swaps() -> None:
    curve = BezierCurve((0.3, 0.7), (0.7, 0.3))
    grid = torch.linspace(0, 1, 501, dtype=torch.float64)
    y = curve(grid)
    assert float(y[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(y[-1]) == pytest.approx(1.0, abs=1e-12)
    assert bool((y[1:] >= y[:-1] - 1e-12).all())
    # the mirror is the contrast-increasing S: below the diagonal at 0.25, above at 0.75
    m = curve.mirror()(torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert float(m[0]) < 0.25 < 0.75 < float(m[1])
    # values outside [0, 1] are clamped, dtype kept
    out = curve(torch.tensor([-0.5, 1.5], dtype=torch.float32))
    assert out.dtype == torch.float32 and out.tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_bezier_rejects_points_outside_the_unit_square() -> None:
    with pytest.raises(ValueError, match="control point"):
        BezierCurve((1.2, 0.3), (0.3, 0.7))


def test_curve_sets_paper_mean_random() -> None:
    paper = bezier_curves()
    assert [(c.p1, c.p2) for c in paper] == [((0.3, 0.7), (0.7, 0.3)), ((0.7, 0.3), (0.3, 0.7))]
    mean = bezier_curves(3, "mean")
    assert [round(c.p1[0], 6) for c in mean[::2]] == [round(0.5 * n / 3, 6) for n in (1, 2, 3)]
    r1, r2 = bezier_curves(2, "random", seed=5), bezier_curves(2, "random", seed=5)
    assert [c.p1 for c in r1] == [c.p1 for c in r2] and len(r1) == 4
    assert all(0 <= c.p1[0] <= 0.5 for c in r1[::2])
    with pytest.raises(ValueError):
        bezier_curves(2, "paper")


def test_inversion_modes() -> None:
    img = torch.tensor([[[0.0, 0.2], [0.5, 0.8]]])
    assert Inversion()(img).flatten().tolist() == pytest.approx([1.0, 0.8, 0.5, 0.2])
    by_image = Inversion(peak="image")(img).flatten().tolist()
    assert by_image == pytest.approx([0.8, 0.6, 0.3, 0.0])
    kept = Inversion(background="keep")(img).flatten().tolist()
    assert kept == pytest.approx([0.0, 0.8, 0.5, 0.2])  # background stays dark (SADN)
    with pytest.raises(ValueError):
        Inversion(peak="max")


def test_pseudo_domains_are_homogeneous_and_seeded() -> None:
    groups = similar_dissimilar(bezier_curves(), Inversion())
    assert [g.name for g in groups] == ["similar", "dissimilar"]
    assert len(groups[0].transforms) == 3 and groups[0].transforms[0] is identity
    images = torch.rand(6, 1, 8, 8)
    batch = {"image": images, "mask": (images > 0.5).float()}
    a = groups[1].apply(batch, torch.Generator().manual_seed(3))
    b = groups[1].apply(batch, torch.Generator().manual_seed(3))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], batch["mask"])
    # every dissimilar sample is the inversion of a source-similar copy of itself
    for i in range(6):
        candidates = [1 - f(images[i]) for f in groups[0].transforms]
        assert any(torch.allclose(a["image"][i], c, atol=1e-6) for c in candidates)
    single = PseudoDomain("inv", (Inversion(),)).apply(batch, torch.Generator())
    assert torch.allclose(single["image"], 1 - images)
