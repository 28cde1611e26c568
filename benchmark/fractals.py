"""FractalDB-style classification pretext: one class per iterated function system (IFS).

The encoder-only counterpart of benchmark/formula.py's segmentation pretexts, after FractalDB
(Kataoka et al., ACCV 2020): a network's *encoder* learns to tell fractal categories apart,
and nothing else of the network is trained. Every image and label comes from a formula and a
seed; no real image and none of the benchmark's domains is used, and nothing models a
microcalcification. The formulas (docs/guide/pretraining.md lists them too):

- **Category c** of K (seed s) is an IFS of N ~ U{2..4} affine maps x -> A_j x + b_j whose
  six parameters are drawn from U(-1, 1), as in FractalDB. Each A_j is scaled so that its
  largest singular value is at most 0.95 (a contraction, so the attractor exists), and map j
  is picked with probability proportional to |det A_j| (FractalDB's rule; a floor of 0.02 keeps
  degenerate maps alive). A system is kept when its attractor covers at least 12 % of a
  32 x 32 render (FractalDB's "filling rate" test, which rejects dust and lines); otherwise the
  next draw of the same category's stream is tried.
- **Instance i** draws its category uniformly, then varies it as FractalDB's intra-category
  augmentation does: one map's matrix is multiplied by U(0.85, 1.15) (and rescaled to stay a
  contraction). The attractor is rendered by the chaos game (256 walkers x 48 iterations, the
  first 8 dropped: 10,240 points), rotated by U(0, 2 pi), mirrored in half the images, scaled
  so that its extent fills U(0.5, 0.95) of the image and centred with a jitter of up to 10 %.
- **Image.** Points are splatted bilinearly into a density map, d = min(1, density / q) with q
  the map's 90th percentile of non-zero values, and the image is a random fractal background
  (formula.background: 1/f noise and a ramp) plus +-(U(0.1, 0.5) + sigma) * d (70 % brighter,
  30 % darker), Gaussian noise of sigma U(0, 0.03), rescaled into [0, 1] and inverted in 20 %
  of the images.

Image i of stream k under seed s comes from PCG64 seeded with (GENERATOR_VERSION, s, k, i,
"fractals"), the categories from (GENERATOR_VERSION, s, category, c): the same on any machine
and in any order, so a resumed pretraining sees the batches an uninterrupted one sees.
Hand-written: no maintained package renders FractalDB categories (the reference code is a
one-off script), and the chaos game is a few lines of numpy.
"""

from __future__ import annotations

import functools

import numpy as np

from benchmark.formula import GENERATOR_VERSION, TRAIN_STREAM, background

#: Seed-tuple tags that keep this pretext's draws apart from formula.py's.
_IMAGE_TAG = 4
_CATEGORY_TAG = 104
MAX_SINGULAR = 0.95
MIN_FILL = 0.12
WALKERS, ITERATIONS, BURN_IN = 256, 48, 8


def _contract(a: np.ndarray) -> np.ndarray:
    """`a` scaled so that its largest singular value is at most MAX_SINGULAR."""
    top = float(np.linalg.svd(a, compute_uv=False)[0])
    return a * (MAX_SINGULAR / top) if top > MAX_SINGULAR else a


def _chaos_game(rng: np.random.Generator, mats: np.ndarray, offs: np.ndarray,
                probs: np.ndarray) -> np.ndarray:
    """Points (M, 2) on the attractor of the IFS (mats (N,2,2), offs (N,2), probs (N,))."""
    x = rng.uniform(-1.0, 1.0, (WALKERS, 2))
    picks = rng.choice(len(probs), size=(ITERATIONS, WALKERS), p=probs)
    out = []
    for it in range(ITERATIONS):
        j = picks[it]
        x = np.einsum("wij,wj->wi", mats[j], x) + offs[j]
        if it >= BURN_IN:
            out.append(x)
    return np.concatenate(out)


def _fill_rate(points: np.ndarray, grid: int = 32) -> float:
    """The fraction of a grid x grid render of `points` (fitted to its extent) that is hit."""
    lo, hi = points.min(0), points.max(0)
    span = float(max((hi - lo).max(), 1e-9))
    cells = np.clip(((points - lo) / span * (grid - 1)).round().astype(int), 0, grid - 1)
    return len(np.unique(cells[:, 0] * grid + cells[:, 1])) / grid**2


@functools.lru_cache(maxsize=4096)
def category(seed: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrices (N,2,2), offsets (N,2), probabilities (N,)) of category `c` under `seed`."""
    rng = np.random.default_rng([GENERATOR_VERSION, int(seed), _CATEGORY_TAG, int(c)])
    best: tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    for _ in range(200):
        n = int(rng.integers(2, 5))
        params = rng.uniform(-1.0, 1.0, (n, 6))
        mats = np.stack([_contract(p[:4].reshape(2, 2)) for p in params])
        offs = params[:, 4:]
        dets = np.maximum(np.abs(np.linalg.det(mats)), 0.02)
        probs = dets / dets.sum()
        fill = _fill_rate(_chaos_game(rng, mats, offs, probs))
        if best is None or fill > best[0]:
            best = (fill, (mats, offs, probs))
        if fill >= MIN_FILL:
            break
    assert best is not None
    return best[1]


def sample(seed: int, index: int, size: int, classes: int,
           stream: int = TRAIN_STREAM) -> tuple[np.ndarray, int]:
    """Image (size, size) float32 in [0, 1] and its category in [0, classes)."""
    rng = np.random.default_rng([GENERATOR_VERSION, int(seed), int(stream), int(index),
                                 _IMAGE_TAG])
    c = int(rng.integers(0, classes))
    mats, offs, probs = category(seed, c)
    mats = mats.copy()
    j = int(rng.integers(0, len(mats)))
    mats[j] = _contract(mats[j] * rng.uniform(0.85, 1.15))
    pts = _chaos_game(rng, mats, offs, probs)
    angle = rng.uniform(0.0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    if rng.random() < 0.5:
        pts[:, 1] = -pts[:, 1]
    lo, hi = pts.min(0), pts.max(0)
    extent = rng.uniform(0.5, 0.95) * (size - 1)
    pts = (pts - (lo + hi) / 2) / float(max((hi - lo).max(), 1e-9)) * extent
    pts += (size - 1) / 2 + rng.uniform(-0.1, 0.1, 2) * size
    density = _splat(pts, size)
    nz = density[density > 0]
    d = np.minimum(1.0, density / float(np.quantile(nz, 0.9))) if nz.size else density
    image, sigma = background(rng, size)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    image = image + sign * (rng.uniform(0.1, 0.5) + sigma) * d
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape)
    lo_v, hi_v = float(image.min()), float(image.max())
    if lo_v < 0.0 or hi_v > 1.0:
        image = (image - min(lo_v, 0.0)) / (max(hi_v, 1.0) - min(lo_v, 0.0))
    if rng.random() < 0.2:
        image = 1.0 - image
    return np.clip(image, 0.0, 1.0).astype(np.float32), c


def _splat(points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear point density (size, size): each point spreads over its four pixels."""
    r, col = points[:, 0], points[:, 1]
    r0, c0 = np.floor(r).astype(int), np.floor(col).astype(int)
    fr, fc = r - r0, col - c0
    out = np.zeros(size * size)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)),
                      (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        out += np.bincount(rr[ok] * size + cc[ok], weights=w[ok], minlength=size * size)
    return out.reshape(size, size)


def batch(seed: int, start: int, count: int, size: int, classes: int,
          stream: int = TRAIN_STREAM) -> tuple[np.ndarray, np.ndarray]:
    """Images (count, 1, size, size) float32 and labels (count,) int64, indices start.."""
    pairs = [sample(seed, start + i, size, classes, stream) for i in range(count)]
    return (np.stack([p[0] for p in pairs])[:, None],
            np.array([p[1] for p in pairs], dtype=np.int64))
