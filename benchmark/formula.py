"""Formula-driven pretext images: generic shapes on fractal backgrounds, with their masks.

A data-free segmentation pretext (in the spirit of FractalDB, SegRCDB and PrimGeoSeg): every
image and mask is computed from a formula and a seed, so pretraining needs no real image and
none of the benchmark's domains. The shapes are generic (ellipses, star polygons, Bézier
strokes, groups of dots) at every scale from one pixel to a third of the image, brighter or
darker than a random background; nothing here models a microcalcification. The formulas
(docs/guide/pretraining.md lists them with their ranges):

- **Background.** A fractal noise field: white Gaussian noise filtered in the Fourier domain by
  |f|^(-beta/2), beta ~ U(1, 3) (beta = 2 is the spectrum of natural images), scaled to unit
  variance; then a linear ramp of random direction and slope (a large-scale gradient). The
  image is mu + sigma * field + ramp with mu ~ U(0.2, 0.8), sigma log-uniform in [0.02, 0.2].
- **Shapes.** n ~ U{0..24}; each is an ellipse (30 %), a star polygon (20 %), a cubic Bézier
  stroke (25 %) or a group of dots (25 %), of size s log-uniform in [1, image/3] pixels, at a
  uniform position. Ellipse: axes s and s * U(0.3, 1), any angle. Star polygon: 3-10 vertices
  at sorted random angles and radii s/2 * U(0.4, 1). Stroke: four control points in an s-box,
  width U(1, 5) px. Dots: 1-12 discs of radius U(0.5, 2.5) px, normally scattered with spread
  s/2 around the centre.
- **Contrast.** Each shape adds a = +-(U(0.05, 0.4) + sigma) (70 % brighter, 30 % darker; the
  background's sigma is added so that no shape drowns in its texture) times its
  anti-aliased coverage (4 x 4 supersampling), blurred by a Gaussian of sigma U(0, 1) px in
  half of the shapes.
- **Acquisition.** Gaussian noise of sigma U(0, 0.03); the whole image is inverted in 20 % of
  the images (the mask stays); clipped to [0, 1] (`regions`: rescaled linearly into [0, 1]
  when it leaves that range, so that no saturated object vanishes).
- **Target.** The union of the shapes' footprints: pixels with coverage >= 0.5, and for a shape
  too small to cover half of any pixel, its pixel of largest coverage (so that every visible
  shape has a target). About 5 % of the pixels are foreground on average.

The `regions` pretext replaces the free groups of dots by regions defined by their texture
alone (`textured_region`): half of its 0-12 objects are such regions, whose target is the whole
region rather than the texture's parts, and half are the ellipses, polygons and strokes above,
at least 4 px in size (a lone speck is never a target there: small discs occur only as a
texture, so the target is always a region, whatever fills it).

The `textures` pretext asks to tell texture from intensity: 0-6 textured regions are the
targets, drawn over 0-16 plain shapes (ellipses, polygons and strokes of 2 px to a third of the
image, either polarity, half of them blurred by up to 2 px) that are not targets; rescaled
into [0, 1] like `regions`.

Image i of stream k under seed s is drawn from numpy's PCG64 seeded with
(GENERATOR_VERSION, s, k, i) (plus the pretext's index for `regions`): the same tuple gives the
same image on any machine and in any order, so a resumed pretraining sees exactly the batches
an uninterrupted one would.
Hand-written rather than a library: no maintained package generates segmentation pretext
images; the rasterisers come from scikit-image and scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

#: Bumped whenever a formula or a range changes: weights record it, and a rebuild checks it.
GENERATOR_VERSION = 1
#: Streams of the generator: training batches and the held-out validation images.
TRAIN_STREAM, VAL_STREAM = 0, 1
SUPERSAMPLE = 4
SHAPE_KINDS = ("ellipse", "polygon", "stroke", "dots")
SHAPE_WEIGHTS = (0.30, 0.20, 0.25, 0.25)
MAX_SHAPES = 24
#: The pretexts: `shapes` (objects defined by their intensity) and `regions` (half of the
#: objects are regions defined by their texture alone; see `textured_region`).
PRETEXTS = ("shapes", "regions", "textures")
TEXTURES = ("speckle", "grain", "grating")
MAX_OBJECTS_REGIONS = 12
#: `textures`: up to this many textured regions (the targets) among up to MAX_DISTRACTORS
#: plain shapes (not targets)
MAX_TEXTURED, MAX_DISTRACTORS = 6, 16


def sample(seed: int, index: int, size: int, stream: int = TRAIN_STREAM,
           pretext: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """Image (size, size) float32 in [0, 1] and mask (size, size) uint8 for one formula draw."""
    if pretext not in PRETEXTS:
        raise ValueError(f"pretext must be one of {', '.join(PRETEXTS)}, not {pretext!r}")
    entropy = [GENERATOR_VERSION, int(seed), int(stream), int(index)]
    if pretext != "shapes":  # `shapes` keeps the seeds it was published with
        entropy.append(PRETEXTS.index(pretext))
    rng = np.random.default_rng(entropy)
    image, sigma = background(rng, size)
    mask = np.zeros((size, size), dtype=bool)
    if pretext == "textures":
        return _textures(rng, image, sigma, mask, size)
    regions = pretext == "regions"
    count = MAX_OBJECTS_REGIONS if regions else MAX_SHAPES
    for _ in range(int(rng.integers(0, count + 1))):
        if regions and rng.random() < 0.5:
            placed_region = textured_region(rng, size, sigma)
            if placed_region is not None:
                layer, foot, (r0, r1, c0, c1) = placed_region
                image[r0:r1, c0:c1] += layer
                mask[r0:r1, c0:c1] |= foot
            continue
        kinds = SHAPE_KINDS[:3] if regions else SHAPE_KINDS  # regions: dots only as texture
        weights = np.array(SHAPE_WEIGHTS[:len(kinds)])
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        smallest = 4.0 if regions else 1.0  # regions: a lone speck is no target, only texture
        s = float(np.exp(rng.uniform(np.log(smallest), np.log(max(size / 3.0, smallest)))))
        drawn = _plain_shape(rng, image, kind, s, rng.uniform(0, size, 2), sigma, 0.7, 1.0)
        if drawn is None:
            continue
        cov, (r0, r1, c0, c1) = drawn
        foot = cov >= 0.5
        if not foot.any():  # a sub-pixel shape: its best-covered pixel
            foot.flat[int(np.argmax(cov))] = True
        mask[r0:r1, c0:c1] |= foot
    image = _acquire(rng, image, rescale=regions)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask.astype(np.uint8)


def _plain_shape(rng: np.random.Generator, image: np.ndarray, kind: str, s: float,
                 centre: np.ndarray, sigma: float, p_bright: float, max_blur: float,
                 ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Add one intensity-defined shape to `image` (in place): +-(U(0.05, 0.4) + sigma) times
    its coverage (brighter with probability `p_bright`), blurred by U(0, max_blur) px in half
    of the shapes. Returns (coverage, box) for the caller to mark, or None if outside."""
    placed = _place(*_coverage(rng, kind, s, centre), image.shape[0])
    if placed is None:
        return None
    cov, box = placed
    amplitude = (rng.uniform(0.05, 0.4) + sigma) * (1.0 if rng.random() < p_bright else -1.0)
    layer = cov * amplitude
    if rng.random() < 0.5:
        layer = ndimage.gaussian_filter(layer, rng.uniform(0.0, max_blur), mode="constant")
    r0, r1, c0, c1 = box
    image[r0:r1, c0:c1] += layer
    return cov, box


def _acquire(rng: np.random.Generator, image: np.ndarray, rescale: bool) -> np.ndarray:
    """Gaussian noise of sigma U(0, 0.03); optionally a linear rescale into [0, 1] (instead of
    the final clip, so that no saturated object vanishes); inversion in 20 % of the images."""
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape)
    if rescale:
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            image = (image - min(lo, 0.0)) / (max(hi, 1.0) - min(lo, 0.0))
    if rng.random() < 0.2:
        image = 1.0 - image
    return image


def _textures(rng: np.random.Generator, image: np.ndarray, sigma: float, mask: np.ndarray,
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """The `textures` pretext: textured regions are the targets, plain shapes are not."""
    for _ in range(int(rng.integers(0, MAX_DISTRACTORS + 1))):  # drawn first, under the regions
        kind = SHAPE_KINDS[int(rng.integers(0, 3))]
        s = float(np.exp(rng.uniform(np.log(2.0), np.log(max(size / 3.0, 2.0)))))
        _plain_shape(rng, image, kind, s, rng.uniform(0, size, 2), sigma, 0.5, 2.0)
    for _ in range(int(rng.integers(0, MAX_TEXTURED + 1))):
        placed_region = textured_region(rng, size, sigma)
        if placed_region is not None:
            layer, foot, (r0, r1, c0, c1) = placed_region
            image[r0:r1, c0:c1] += layer
            mask[r0:r1, c0:c1] |= foot
    return _acquire(rng, image, rescale=True).astype(np.float32), mask.astype(np.uint8)


def batch(seed: int, start: int, count: int, size: int, stream: int = TRAIN_STREAM,
          pretext: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """Images (count, 1, size, size) float32 and masks of the same shape, indices start.."""
    pairs = [sample(seed, start + i, size, stream, pretext) for i in range(count)]
    images = np.stack([p[0] for p in pairs])[:, None]
    masks = np.stack([p[1] for p in pairs])[:, None].astype(np.float32)
    return images, masks


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """mu + sigma * (1/f^(beta/2)-filtered white noise, unit variance) + a linear ramp; and
    sigma (the shapes' contrast is added to it, so no shape drowns in its background)."""
    beta = rng.uniform(1.0, 3.0)
    noise = rng.normal(0.0, 1.0, (size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0 / size  # the mean: as the lowest non-zero frequency, then removed below
    field = np.fft.irfft2(np.fft.rfft2(noise) * freq ** (-beta / 2.0), s=(size, size))
    field -= field.mean()
    field /= max(float(field.std()), 1e-8)
    mu = rng.uniform(0.2, 0.8)
    sigma = float(np.exp(rng.uniform(np.log(0.02), np.log(0.2))))
    angle = rng.uniform(0.0, 2 * np.pi)
    slope = rng.uniform(0.0, 0.3)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ramp = slope * (np.cos(angle) * xx + np.sin(angle) * yy)
    return mu + sigma * field + ramp, sigma


def textured_region(rng: np.random.Generator, size: int, sigma: float
                    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]] | None:
    """A region told from its surroundings by texture alone: (intensity layer, footprint,
    (r0, r1, c0, c1)), or None when it falls outside the image.

    The region is an ellipse or star polygon of size log-uniform in [4, image/3] px; inside it,
    one texture of amplitude a = +-(U(0.05, 0.4) + sigma): `speckle` (discs of radius
    U(0.5, 2) px at a density log-uniform in [0.004, 0.04] per px^2, at least 2), `grain`
    (white noise smoothed by a Gaussian of sigma U(0.5, 2) px, unit variance, times a) or
    `grating` (a * sin of period U(3, 12) px in any direction); plus a mean shift of
    U(-0.3, 0.3) * a. The target is the whole region (coverage >= 0.5), not the texture's parts.
    """
    s = float(np.exp(rng.uniform(np.log(4.0), np.log(max(size / 3.0, 4.0)))))
    centre = rng.uniform(0, size, 2)
    cover, origin = _coverage(rng, "ellipse" if rng.random() < 0.6 else "polygon", s, centre)
    placed = _place(cover, origin, size)
    if placed is None:
        return None
    cov, (r0, r1, c0, c1) = placed
    h, w = cov.shape
    amplitude = (rng.uniform(0.05, 0.4) + sigma) * (1.0 if rng.random() < 0.7 else -1.0)
    texture = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
    if texture == "speckle":
        density = float(np.exp(rng.uniform(np.log(0.004), np.log(0.04))))
        inside = np.argwhere(cov >= 0.5)
        n = max(2, int(rng.poisson(density * max(len(inside), 1))))
        radii = rng.uniform(0.5, 2.0, n)
        picks = inside[rng.integers(0, len(inside), n)] if len(inside) else np.zeros((n, 2))
        centres = picks + rng.uniform(0.0, 1.0, (n, 2))
        pattern = np.zeros((h, w))
        for (cr, cc), r in zip(centres, radii, strict=True):  # each disc in its own box
            rows, cols, at = _grid(np.array([cr - r, cc - r]), np.array([cr + r, cc + r]))
            disc = _pool((rows - cr) ** 2 + (cols - cc) ** 2 <= r * r)
            rr0, cc0 = max(at[0], 0), max(at[1], 0)
            rr1, cc1 = min(at[0] + disc.shape[0], h), min(at[1] + disc.shape[1], w)
            if rr0 < rr1 and cc0 < cc1:
                box = pattern[rr0:rr1, cc0:cc1]
                np.maximum(box, disc[rr0 - at[0]:rr1 - at[0], cc0 - at[1]:cc1 - at[1]], out=box)
    elif texture == "grain":
        grain = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), rng.uniform(0.5, 2.0))
        pattern = grain / max(float(grain.std()), 1e-8)
    else:
        period, angle = rng.uniform(3.0, 12.0), rng.uniform(0.0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        phase = rng.uniform(0.0, 2 * np.pi)
        pattern = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    shift = rng.uniform(-0.3, 0.3)
    layer = amplitude * (pattern + shift) * cov
    foot = cov >= 0.5
    if not foot.any():
        return None
    return layer, foot, (r0, r1, c0, c1)


def _grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel sample centres (rows, cols) covering the pixels [lo, hi) and the pixel origin."""
    origin = np.floor(lo).astype(int)
    extent = np.ceil(hi).astype(int) - origin
    extent = np.maximum(extent, 1)
    step = 1.0 / SUPERSAMPLE
    rows = origin[0] + (np.arange(extent[0] * SUPERSAMPLE) + 0.5) * step
    cols = origin[1] + (np.arange(extent[1] * SUPERSAMPLE) + 0.5) * step
    return rows[:, None], cols[None, :], origin


def _pool(inside: np.ndarray) -> np.ndarray:
    """Coverage per pixel: the mean of its SUPERSAMPLE x SUPERSAMPLE sub-samples."""
    h, w = inside.shape[0] // SUPERSAMPLE, inside.shape[1] // SUPERSAMPLE
    return inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def _coverage(rng: np.random.Generator, kind: str, s: float, centre: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """A shape's coverage in its bounding box, and the box's top-left pixel (row, col).

    Pixel (r, c) spans [r, r+1) x [c, c+1); its centre is (r + 0.5, c + 0.5).
    """
    if kind == "ellipse":
        a = s / 2.0
        b = a * rng.uniform(0.3, 1.0)
        theta = rng.uniform(0.0, np.pi)
        rows, cols, origin = _grid(centre - a - 1, centre + a + 1)
        dy, dx = rows - centre[0], cols - centre[1]
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        return _pool((u / a) ** 2 + (v / b) ** 2 <= 1.0), origin
    if kind == "polygon":
        k = int(rng.integers(3, 11))
        angles = np.sort(rng.uniform(0.0, 2 * np.pi, k))
        radii = s / 2.0 * rng.uniform(0.4, 1.0, k)
        pr = centre[0] + radii * np.sin(angles)
        pc = centre[1] + radii * np.cos(angles)
        return _raster_polygon(pr, pc)
    if kind == "stroke":
        ctrl = centre + rng.uniform(-s / 2.0, s / 2.0, (4, 2))
        width = rng.uniform(1.0, 5.0)
        return _raster_stroke(ctrl, width)
    # dots
    m = int(rng.integers(1, 13))
    radii = rng.uniform(0.5, 2.5, m)
    centres = centre + rng.normal(0.0, s / 2.0, (m, 2))
    lo = (centres - radii[:, None]).min(axis=0) - 1
    hi = (centres + radii[:, None]).max(axis=0) + 1
    rows, cols, origin = _grid(lo, hi)
    inside = np.zeros((rows.shape[0], cols.shape[1]), dtype=bool)
    for (cr, cc), r in zip(centres, radii, strict=True):
        inside |= (rows - cr) ** 2 + (cols - cc) ** 2 <= r * r
    return _pool(inside), origin


def _raster_polygon(pr: np.ndarray, pc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the polygon with vertices (pr, pc) (skimage's even-odd fill, supersampled)."""
    lo = np.array([pr.min(), pc.min()]) - 1
    hi = np.array([pr.max(), pc.max()]) + 1
    rows, cols, origin = _grid(lo, hi)
    shape = (rows.shape[0], cols.shape[1])
    # sub-sample (i, j) has centre origin + (i + 0.5) / S; skimage fills integer centres
    rr, cc = draw_polygon((pr - origin[0]) * SUPERSAMPLE - 0.5,
                          (pc - origin[1]) * SUPERSAMPLE - 0.5, shape)
    inside = np.zeros(shape, dtype=bool)
    inside[rr, cc] = True
    return _pool(inside), origin


def _raster_stroke(ctrl: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of a cubic Bézier curve (control points ctrl (4, 2)) drawn `width` px wide."""
    length = float(np.linalg.norm(np.diff(ctrl, axis=0), axis=1).sum())
    t = np.linspace(0.0, 1.0, max(int(length * SUPERSAMPLE * 2), 2))[:, None]
    curve = ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1]
             + 3 * (1 - t) * t ** 2 * ctrl[2] + t ** 3 * ctrl[3])
    half = width / 2.0
    rows, cols, origin = _grid(curve.min(axis=0) - half - 1, curve.max(axis=0) + half + 1)
    shape = (rows.shape[0], cols.shape[1])
    seeds = np.ones(shape, dtype=bool)
    idx = np.clip(((curve - origin) * SUPERSAMPLE).astype(int), 0, np.array(shape) - 1)
    seeds[idx[:, 0], idx[:, 1]] = False
    dist = ndimage.distance_transform_edt(seeds) / SUPERSAMPLE
    return _pool(dist <= half), origin


def _place(cover: np.ndarray, origin: np.ndarray, size: int
           ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Clip a box's coverage to the image; None when it lies wholly outside or is empty."""
    r0, c0 = int(origin[0]), int(origin[1])
    r1, c1 = r0 + cover.shape[0], c0 + cover.shape[1]
    rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, size), min(c1, size)
    if rr0 >= rr1 or cc0 >= cc1:
        return None
    cov = cover[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0]
    if not (cov > 0).any():
        return None
    return cov, (rr0, rr1, cc0, cc1)
