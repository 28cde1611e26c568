"""Simulated anatomy of one case (patient x view): breast outline, tissue texture, calcifications.

Everything here is in millimetres on the square tile of side `tile_mm` and independent of how
the case is imaged: a domain's acquisition model (acquisition.py) turns these maps into a stored
image. A case's random numbers come from `SeedSequence(anatomy_seed, spawn_key=...)` keyed by
the patient and the canonical view index, so two domains with the same anatomy seed show the
same patients (and the same patient whatever the number of patients in the file).

Modelling choices, with their sources:
* Compressed breast: thickness H per patient, flat in the interior and a half-circle of radius
  H/2 at the skin line (the compressed edge), skin of fixed thickness all around; tiles that
  cross the skin line are background (air) outside it. MLO tiles at the chest wall may show the
  pectoral muscle, a region bounded by a straight edge that thickens away from that edge.
* Fibroglandular tissue: `n_layers` depth layers, each a Gaussian random field with a power-law
  spectrum 1/f^beta (beta 2.5-3.5 in mammograms: Burgess et al., Med Phys 2001; Heine &
  Velthuizen 2002), stretched toward the nipple, correlated between layers and
  soft-thresholded into a glandular fraction whose mean is about the patient's density; a
  fat-only band under the skin. The field is band-limited (a quarter of `texture_grid` cycles
  per tile) and defined by integer frequencies of the tile, so it is the same function of
  position at any pixel spacing.
* Microcalcification clusters: 5-30 specks of 0.1-1 mm (log-uniform: small ones are commoner),
  each an irregular union of 1-3 ellipsoids, spread uniformly over an elliptical region of
  3-15 mm and over depth. The segmentation target is the CLUSTER REGION: the convex hull of the
  specks (their centres and outlines) dilated by `mask_margin_mm`, which is how cluster ROIs are
  drawn in CBIS-DDSM and INbreast (an outline around the group, not the individual specks).
* Scattered benign calcifications (0-6 per tile, on negative tiles too): single specks at
  least 5 mm from any cluster speck; they are in the image but never in the mask (isolated
  specks are not a cluster), so a model must learn grouping, not just bright dots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from scipy import special
from scipy.spatial import ConvexHull, QhullError

from datasets.synthetic.params import DomainParams, Section

CANONICAL_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
INTERIOR_DISTANCE_MM = 1.0e3  # skin distance used for tiles that do not reach the skin line


@dataclass(frozen=True)
class Speck:
    """One microcalcification: centre (row, col, depth) in mm and its sub-ellipsoids.

    `cluster` is the index of its cluster, or -1 for a scattered (isolated) calcification,
    which is never part of a mask.

    `blobs` rows are (d_row, d_col, semi_axis_a, semi_axis_b, angle) in mm / radians; the
    thickness (x-ray path length) of a blob is that of an ellipsoid whose depth semi-axis is
    the mean of a and b.
    """

    row_mm: float
    col_mm: float
    depth_mm: float
    diameter_mm: float
    blobs: np.ndarray
    cluster: int


@dataclass(frozen=True)
class Geometry:
    """Breast outline and pectoral muscle of one tile, as signed distances in mm."""

    kind: str  # 'interior' | 'edge' | 'pectoral'
    edge_center: tuple[float, float] = (0.0, 0.0)
    edge_radius: float = 0.0
    muscle_point: tuple[float, float] = (0.0, 0.0)
    muscle_normal: tuple[float, float] = (0.0, 0.0)
    muscle_fraction: float = 0.0

    def skin_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distance inside the skin line, mm (negative = background outside the breast)."""
        if self.kind != "edge":
            return np.full(np.broadcast(rows, cols).shape, INTERIOR_DISTANCE_MM, np.float32)
        cr, cc = self.edge_center
        return (self.edge_radius - np.hypot(rows - cr, cols - cc)).astype(np.float32)

    def muscle_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Signed distance into the pectoral muscle, mm (negative = not muscle)."""
        if self.kind != "pectoral":
            return np.full(np.broadcast(rows, cols).shape, -INTERIOR_DISTANCE_MM, np.float32)
        pr, pc = self.muscle_point
        nr, nc = self.muscle_normal
        return ((rows - pr) * nr + (cols - pc) * nc).astype(np.float32)


@dataclass
class Maps:
    """Anatomy maps of a case on one native pixel grid (all float32, N x N)."""

    skin_distance: np.ndarray  # mm, > 0 inside the breast
    thickness: np.ndarray  # mm of tissue along the ray (0 outside the breast)
    skin_path: np.ndarray  # mm of skin along the ray
    fat_band: np.ndarray  # 0 in the subcutaneous fat band .. 1 deeper in
    muscle: np.ndarray  # fraction of the thickness that is pectoral muscle

    @property
    def breast(self) -> np.ndarray:
        """Boolean breast region (what a vendor's breast segmentation would find)."""
        return self.skin_distance > 0


@dataclass
class Case:
    """One simulated case (patient x view): draws and lazily computed maps."""

    patient: int
    view: str  # canonical, e.g. 'L-CC'
    tile_mm: float
    thickness_mm: float
    glandular_fraction: float
    texture_beta: float
    geometry: Geometry
    specks: list[Speck]
    n_clusters: int
    texture_seed: np.random.SeedSequence
    params: DomainParams = field(repr=False)

    @property
    def laterality(self) -> str:
        """'L' or 'R'."""
        return self.view[0]

    @property
    def position(self) -> str:
        """'CC' or 'MLO'."""
        return self.view[2:]

    @property
    def has_cluster(self) -> bool:
        """Whether any cluster was placed on this tile."""
        return self.n_clusters > 0

    def maps(self, n: int) -> Maps:
        """Geometry maps on an n x n grid over the tile."""
        return _maps(self, n)

    @cached_property
    def texture_layers(self) -> np.ndarray:
        """Glandular fraction per depth layer, (n_layers, M, M) float32 on the texture grid."""
        return _texture_layers(self)

    def speck_patches(self, n: int) -> list[tuple[int, int, np.ndarray]]:
        """Per speck (row0, col0, thickness patch in mm) on an n x n grid (3x supersampled)."""
        spacing = self.tile_mm / n
        return [speck_patch(s, spacing) for s in self.specks]


def view_index(view: str) -> int:
    """Canonical index of a view (L-CC 0, R-CC 1, L-MLO 2, R-MLO 3): part of the case seed."""
    return CANONICAL_VIEWS.index(view)


def resolve_views(params: DomainParams, patient: int) -> list[str]:
    """The canonical views of a patient; 'CC'/'MLO' get a laterality drawn per patient."""
    rng = np.random.default_rng(_seed(params, 0, patient, 1))
    side = "L" if rng.random() < 0.5 else "R"
    return [v if "-" in v else f"{side}-{v}" for v in params.dataset.views]


def _seed(params: DomainParams, *key: int) -> np.random.SeedSequence:
    """SeedSequence of the anatomy seed with a spawn key (tag first, so streams never collide)."""
    return np.random.SeedSequence(int(params.dataset.anatomy_seed), spawn_key=tuple(key))


def simulate_case(params: DomainParams, patient: int, view: str) -> Case:
    """Draw one case: patient-level body habitus, then this view's tile, texture seed, clusters."""
    a = params.anatomy
    tile = float(params.dataset.tile_mm)
    prng = np.random.default_rng(_seed(params, 0, patient, 0))
    thickness = prng.uniform(*a.compressed_thickness_mm)
    density = prng.uniform(*a.glandular_fraction)
    beta = prng.uniform(*a.texture_beta)

    geo_ss, cl_ss, tex_ss, iso_ss = _seed(params, 1, patient, view_index(view)).spawn(4)
    grng = np.random.default_rng(geo_ss)
    # CC and MLO of one breast differ a little in compression (MLO includes the axilla).
    thickness *= grng.uniform(0.95, 1.05) * (1.05 if view.endswith("MLO") else 1.0)
    geometry = _draw_geometry(grng, view, tile, a)

    crng = np.random.default_rng(cl_ss)
    specks: list[Speck] = []
    n_clusters = 0
    if crng.random() >= a.negative_fraction:
        n_clusters = 1
        while n_clusters < a.max_clusters and crng.random() < a.extra_cluster_probability:
            n_clusters += 1
        for ci in range(n_clusters):
            specks.extend(_draw_cluster(crng, ci, geometry, tile, thickness, a))
    specks.extend(_draw_isolated(np.random.default_rng(iso_ss), specks, geometry, tile,
                                 thickness, a))
    return Case(patient=patient, view=view, tile_mm=tile, thickness_mm=float(thickness),
                glandular_fraction=float(density), texture_beta=float(beta), geometry=geometry,
                specks=specks, n_clusters=n_clusters,
                texture_seed=tex_ss, params=params)


def _draw_geometry(rng: np.random.Generator, view: str, tile: float, a: Section) -> Geometry:
    """Tile kind and outline: the nipple side is +col for L views and -col for R views."""
    nipple = 1.0 if view[0] == "L" else -1.0
    u = rng.random()
    is_mlo = view.endswith("MLO")
    if u < a.edge_fraction:
        # Skin line: an arc of a breast outline of radius 60-110 mm whose outward normal points
        # to the nipple side (within +-70 deg), crossing the tile so 35-85 % of it is breast.
        radius = rng.uniform(60.0, 110.0)
        phi = np.deg2rad(rng.uniform(-70.0, 70.0))
        normal = np.array([np.sin(phi), nipple * np.cos(phi)])
        offset = rng.uniform(-0.15, 0.3) * tile
        edge_point = np.array([tile / 2, tile / 2]) + normal * offset
        centre = edge_point - normal * radius
        return Geometry("edge", edge_center=(float(centre[0]), float(centre[1])),
                        edge_radius=float(radius))
    if is_mlo and rng.random() < a.pectoral_fraction:
        # Pectoral muscle: the upper corner on the chest-wall side (opposite the nipple side),
        # cut off by a line through the top and the chest-wall edges.
        chest_col = 0.0 if nipple > 0 else tile
        top = rng.uniform(0.2, 0.7) * tile  # where the muscle edge meets the top edge
        side = rng.uniform(0.3, 0.9) * tile  # where it meets the chest-wall edge
        p1 = np.array([0.0, chest_col + nipple * top])
        p2 = np.array([side, chest_col])
        d = p2 - p1
        normal = np.array([-d[1], d[0]]) / np.hypot(*d)
        corner = np.array([0.0, chest_col])
        side_of = float(corner[0] - p1[0]) * normal[0] + float(corner[1] - p1[1]) * normal[1]
        if side_of < 0:  # written out, not np.dot: BLAS may fuse the sum, differently per CPU
            normal = -normal
        return Geometry("pectoral", muscle_point=(float(p1[0]), float(p1[1])),
                        muscle_normal=(float(normal[0]), float(normal[1])),
                        muscle_fraction=float(rng.uniform(0.3, 0.7)))
    return Geometry("interior")


def _draw_cluster(rng: np.random.Generator, ci: int, geometry: Geometry, tile: float,
                  thickness: float, a: Section) -> list[Speck]:
    """One cluster: extent, elliptical footprint inside the breast, depth, then its specks."""
    extent = rng.uniform(*a.cluster_extent_mm)
    aspect = rng.uniform(0.5, 1.0)
    angle = rng.uniform(0.0, np.pi)
    n_specks = int(rng.integers(a.specks_per_cluster[0],
                                a.specks_per_cluster[1] + 1))
    margin = min(extent / 2 + 1.0, tile / 2 - 0.5)
    best, best_score = None, -np.inf
    for _ in range(100):
        c = rng.uniform(margin, tile - margin, size=2)
        skin = float(geometry.skin_distance(np.array(c[0]), np.array(c[1])))
        muscle = float(geometry.muscle_distance(np.array(c[0]), np.array(c[1])))
        score = min(skin - (extent / 2 + 3.0), -muscle - extent / 2)
        if score > best_score:
            best, best_score = c, score
        if score >= 0:
            break
    assert best is not None
    depth_c = rng.uniform(0.25, 0.75) * thickness
    skin = a.skin_mm
    d_lo, d_hi = np.log(a.speck_diameter_mm)
    specks = []
    cos, sin = np.cos(angle), np.sin(angle)
    for _ in range(n_specks):
        r = np.sqrt(rng.random()) * extent / 2
        t = rng.uniform(0, 2 * np.pi)
        x, y = r * np.cos(t), r * np.sin(t) * aspect
        row = float(np.clip(best[0] + cos * x - sin * y, 0.0, tile))
        col = float(np.clip(best[1] + sin * x + cos * y, 0.0, tile))
        depth = float(np.clip(depth_c + rng.normal(0.0, extent / 4),
                              skin + 1.0, thickness - skin - 1.0))
        diameter, blobs = _speck_shape(rng, d_lo, d_hi)
        specks.append(Speck(row, col, depth, diameter, blobs, ci))
    return specks


def _speck_shape(rng: np.random.Generator, d_lo: float, d_hi: float
                 ) -> tuple[float, np.ndarray]:
    """A log-uniform diameter and 1-3 overlapping ellipsoids making an irregular speck."""
    diameter = float(np.exp(rng.uniform(d_lo, d_hi)))
    n_blobs = int(rng.integers(1, 4))
    blobs = np.empty((n_blobs, 5))
    for b in range(n_blobs):
        semi_a = diameter / 2 * (1.0 if b == 0 else rng.uniform(0.4, 0.8))
        blobs[b] = (0.0 if b == 0 else rng.normal(0, 0.25 * diameter),
                    0.0 if b == 0 else rng.normal(0, 0.25 * diameter),
                    semi_a, semi_a * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi))
    return diameter, blobs


def _draw_isolated(rng: np.random.Generator, specks: list[Speck], geometry: Geometry,
                   tile: float, thickness: float, a: Section) -> list[Speck]:
    """Scattered benign calcifications: single specks >= 5 mm from any cluster, not in a mask."""
    n = int(rng.integers(a.isolated_calcs[0], a.isolated_calcs[1] + 1))
    cluster_pts = np.array([[s.row_mm, s.col_mm] for s in specks]).reshape(-1, 2)
    d_lo, d_hi = np.log(a.speck_diameter_mm)
    out = []
    for _ in range(n):
        for _try in range(30):
            r, c = rng.uniform(0.0, tile, size=2)
            if (geometry.skin_distance(np.array(r), np.array(c)) > 2.0
                    and geometry.muscle_distance(np.array(r), np.array(c)) < 0.0
                    and (not len(cluster_pts)
                         or np.min(np.hypot(*(cluster_pts - (r, c)).T)) >= 5.0)):
                break
        else:
            continue
        depth = float(rng.uniform(a.skin_mm + 1.0, max(thickness - a.skin_mm - 1.0,
                                                        a.skin_mm + 1.5)))
        diameter, blobs = _speck_shape(rng, d_lo, d_hi)
        out.append(Speck(float(r), float(c), depth, diameter, blobs, -1))
    return out


def _grid_mm(n: int, tile: float) -> np.ndarray:
    """Pixel-centre coordinates of an n-pixel axis over the tile, mm."""
    return ((np.arange(n, dtype=np.float32) + 0.5) * (tile / n)).astype(np.float32)


def _maps(case: Case, n: int) -> Maps:
    """Compute the geometry maps of a case on an n x n grid."""
    a = case.params.anatomy
    x = _grid_mm(n, case.tile_mm)
    rows, cols = x[:, None], x[None, :]
    d = case.geometry.skin_distance(rows, cols)
    if d.shape != (n, n):
        d = np.broadcast_to(d, (n, n)).copy()
    r = case.thickness_mm / 2
    s = min(float(a.skin_mm), r * 0.9)
    # Chord lengths through the rounded (half-circle) compressed edge: outer and inner surfaces.
    depth = np.clip(r - d, -r, r)
    outer = np.where(d >= r, 2 * r, 2 * np.sqrt(np.maximum(r * r - depth * depth, 0.0)))
    inner = np.where(d >= r, 2 * r - 2 * s,
                     2 * np.sqrt(np.maximum((r - s) ** 2 - depth * depth, 0.0)))
    outer = np.where(d > 0, outer, 0.0).astype(np.float32)
    inner = np.minimum(inner, outer).astype(np.float32)
    band = float(a.subcutaneous_fat_mm)
    if band > 0:
        t = np.clip((d - s) / band, 0.0, 1.0)
        fat_band = (t * t * (3 - 2 * t)).astype(np.float32)
    else:
        fat_band = (d > s).astype(np.float32)
    md = case.geometry.muscle_distance(rows, cols)
    if case.geometry.kind == "pectoral":
        muscle = case.geometry.muscle_fraction * (1 - np.exp(-np.maximum(md, 0.0) / 5.0))
        muscle = np.where(md > 0, muscle, 0.0).astype(np.float32)
    else:
        muscle = np.zeros((n, n), np.float32)
    return Maps(skin_distance=d.astype(np.float32), thickness=outer, skin_path=outer - inner,
                fat_band=fat_band, muscle=muscle)


def _texture_layers(case: Case) -> np.ndarray:
    """Power-law tissue texture per layer, soft-thresholded to a glandular fraction in [0, 1]."""
    a = case.params.anatomy
    m = int(a.texture_grid)
    n_layers = int(a.n_layers)
    rng = np.random.default_rng(case.texture_seed)
    # White noise on a half-resolution grid, moved onto the texture grid: the Gaussian field is
    # band-limited to m/4 cycles per tile (>99 % of a 1/f^3 field's variance), the soft threshold
    # below then runs at full texture resolution.
    white = rng.standard_normal((n_layers + 1, m // 2, m // 2), dtype=np.float32)
    noise = spectral_resize(sfft.rfft2(white, norm="forward"), m)
    fr = sfft.fftfreq(m, d=1.0 / m).astype(np.float32)  # cycles per tile
    fc = sfft.rfftfreq(m, d=1.0 / m).astype(np.float32)
    # Structures run from the chest wall toward the nipple (along the columns): less variation
    # along the columns, i.e. column frequencies count more.
    stretch = 1.0 / (1.0 - float(a.texture_anisotropy))
    f2 = fr[:, None] ** 2 + (stretch * fc[None, :]) ** 2
    amp = (f2 + 1.0) ** (-case.texture_beta / 4.0)  # |F| ~ f^(-beta/2), rolled off below 1/tile
    amp[0, 0] = 0.0
    noise *= amp
    fields = sfft.irfft2(noise, s=(m, m), norm="forward").astype(np.float32, copy=False)
    scale = 1.0 / (fields.std(axis=(1, 2)) + 1e-12)
    # Layer k = sqrt(rho) * common + sqrt(1 - rho) * own field (unit variance, correlation rho),
    # then a soft threshold at the density quantile: x / (1 + |x|) is a cheap sigmoid.
    rho = float(a.layer_correlation)
    theta = float(special.ndtri(1.0 - np.clip(case.glandular_fraction, 1e-3, 1 - 1e-3)))
    inv_soft = 1.0 / float(a.texture_softness)
    layers = fields[1:]
    layers *= (np.sqrt(1.0 - rho) * inv_soft * scale[1:])[:, None, None]
    layers += (np.sqrt(rho) * inv_soft * scale[0]) * fields[0] - theta * inv_soft
    den = np.abs(layers)
    den += 1.0
    layers /= den
    layers += 1.0
    layers *= 0.5
    return layers


def spectral_resize(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Move a half-spectrum (..., M, M//2+1; norm='forward') onto an n x n grid's half-spectrum.

    Integer frequencies (cycles per tile) keep their coefficients, the rest are zero: exact
    band-limited interpolation of a periodic field, independent of the target spacing.
    """
    m = spectrum.shape[-2]
    h = min(m, n) // 2
    out = np.zeros((*spectrum.shape[:-2], n, n // 2 + 1), dtype=spectrum.dtype)
    out[..., :h, :h] = spectrum[..., :h, :h]
    if h > 1:
        out[..., n - h + 1:, :h] = spectrum[..., m - h + 1:, :h]
    return out


def speck_patch(speck: Speck, spacing: float, supersample: int = 3, flat: bool = False
                 ) -> tuple[int, int, np.ndarray]:
    """Thickness (mm) of one speck on the pixel grid around it, area-averaged over subpixels
    (`flat`: the covered area fraction instead, for opaque particles)."""
    reach = float(np.max(np.hypot(speck.blobs[:, 0], speck.blobs[:, 1]) + speck.blobs[:, 2]))
    r0 = int(np.floor((speck.row_mm - reach) / spacing)) - 1
    c0 = int(np.floor((speck.col_mm - reach) / spacing)) - 1
    size = int(np.ceil(2 * reach / spacing)) + 3
    sub = (np.arange(size * supersample) + 0.5) / supersample * spacing
    rows = (r0 * spacing + sub)[:, None] - speck.row_mm
    cols = (c0 * spacing + sub)[None, :] - speck.col_mm
    thick = np.zeros((size * supersample, size * supersample))
    for dr, dc, sa, sb, ang in speck.blobs:
        y, x = rows - dr, cols - dc
        u = x * np.cos(ang) + y * np.sin(ang)
        v = -x * np.sin(ang) + y * np.cos(ang)
        q = (u / sa) ** 2 + (v / sb) ** 2
        inside = (q < 1.0).astype(float) if flat else (sa + sb) * np.sqrt(np.maximum(1.0 - q, 0.0))
        thick = np.maximum(thick, inside)
    patch = thick.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return r0, c0, patch.astype(np.float32)


def stamp(canvas: np.ndarray, r0: int, c0: int, patch: np.ndarray, weight: float = 1.0,
          combine: str = "add") -> None:
    """Add (or max) a patch into a canvas at (r0, c0), clipped to the canvas."""
    h, w = patch.shape
    n0, n1 = canvas.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + h, n0), min(c0 + w, n1)
    if rs >= re or cs >= ce:
        return
    piece = patch[rs - r0:re - r0, cs - c0:ce - c0]
    if combine == "max":
        np.maximum(canvas[rs:re, cs:ce], piece * weight, out=canvas[rs:re, cs:ce])
    else:
        canvas[rs:re, cs:ce] += piece * weight


def calc_thickness(case: Case, n: int,
                   patches: list[tuple[int, int, np.ndarray]] | None = None) -> np.ndarray:
    """Total microcalcification path length (mm) per pixel of an n x n grid."""
    canvas = np.zeros((n, n), np.float32)
    for r0, c0, patch in patches if patches is not None else case.speck_patches(n):
        stamp(canvas, r0, c0, patch)
    return canvas


def cluster_mask(case: Case, n: int, depth_mm: float | None = None,
                 focus_mm: float = np.inf, min_specks: int = 1,
                 patches: list[tuple[int, int, np.ndarray]] | None = None) -> np.ndarray:
    """Cluster-region mask (uint8, n x n): convex hull of each cluster's specks, dilated.

    With `depth_mm` (a tomosynthesis slice), only specks within `focus_mm` of that depth count,
    and a cluster is drawn only if at least `min_specks` of its specks are in focus.
    """
    spacing = case.tile_mm / n
    margin = float(case.params.anatomy.mask_margin_mm)
    mask = np.zeros((n, n), np.uint8)
    if not case.specks:
        return mask
    if patches is None:
        patches = case.speck_patches(n)
    for ci in range(case.n_clusters):
        idx = [i for i, s in enumerate(case.specks) if s.cluster == ci
               and (depth_mm is None or abs(s.depth_mm - depth_mm) <= focus_mm)]
        if len(idx) < min_specks or not idx:
            continue
        pad = int(np.ceil(margin / spacing)) + 2
        r_lo = min(patches[i][0] for i in idx) - pad
        c_lo = min(patches[i][1] for i in idx) - pad
        r_hi = max(patches[i][0] + patches[i][2].shape[0] for i in idx) + pad
        c_hi = max(patches[i][1] + patches[i][2].shape[1] for i in idx) + pad
        r_lo, c_lo = max(r_lo, 0), max(c_lo, 0)
        r_hi, c_hi = min(r_hi, n), min(c_hi, n)
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        seed = np.zeros((r_hi - r_lo, c_hi - c_lo), np.float32)
        for i in idx:
            r0, c0, patch = patches[i]
            stamp(seed, r0 - r_lo, c0 - c_lo, patch, combine="max")
        seed_b = seed > 0
        pts = np.array([[case.specks[i].row_mm, case.specks[i].col_mm] for i in idx])
        rows = (np.arange(r_lo, r_hi) + 0.5)[:, None] * spacing
        cols = (np.arange(c_lo, c_hi) + 0.5)[None, :] * spacing
        seed_b |= _hull_region(pts, rows, cols, spacing)
        if margin > 0:
            region = ndi.distance_transform_edt(~seed_b, sampling=spacing) <= margin
        else:
            region = seed_b
        mask[r_lo:r_hi, c_lo:c_hi] |= region.astype(np.uint8)
    return mask


def _hull_region(pts: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 spacing: float) -> np.ndarray:
    """Pixels inside the convex hull of points (a segment's pixels if the hull is degenerate)."""
    shape = (rows.shape[0], cols.shape[1])
    if len(pts) >= 3:
        try:
            hull = ConvexHull(pts)
        except QhullError:
            hull = None
        if hull is not None:
            inside = np.ones(shape, bool)
            for nr, nc, off in hull.equations:
                inside &= rows * nr + cols * nc + off <= spacing / 2
            return inside
    if len(pts) >= 2:  # collinear or two points: the segment between the farthest pair
        dist = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        i, j = np.unravel_index(np.argmax(dist), dist.shape)
        p, q = pts[i], pts[j]
        d = q - p
        length2 = float(d[0]) ** 2 + float(d[1]) ** 2  # not d @ d: BLAS may fuse the sum
        t = np.clip(((rows - p[0]) * d[0] + (cols - p[1]) * d[1]) / max(length2, 1e-12), 0, 1)
        return np.hypot(rows - p[0] - t * d[0], cols - p[1] - t * d[1]) <= spacing
    return np.zeros(shape, bool)
