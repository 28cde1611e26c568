"""Acquisition models: a simulated case (anatomy.py) -> the stored images of one domain.

All domains share the physics of the x-ray projection: line integral of attenuation at the
domain's effective energy, scatter (a wide blur of the primary, scatter-to-primary ratio SPR),
automatic exposure control (AEC: the median detector signal under the breast is the domain's
`quanta_per_mm2`), signal-dependent quantum noise in the log domain
(sd = sqrt(E + e^2) / E for E quanta and electronic noise e) and a Gaussian detector MTF. They
differ in what happens next, which is where the pixel mapping differences come from:

* digital projection (FFDM): log signal -> vendor processing (peripheral / thickness
  equalisation, unsharp masking) -> automatic VOI from breast percentiles -> display LUT
  (linear / sigmoid / log / gamma) -> bits stored -> polarity.
* tomosynthesis (DBT): the slice at depth z is the shift-and-add of the projections (a layer
  at height dz above the slice is replicated along the tube-motion axis at dz * tan(angle) for
  every projection angle, which blurs out-of-plane tissue and turns out-of-focus
  calcifications into the directional ripple / "slinky" artefact), then a ramp-like filter along
  the motion axis suppresses low frequencies (less tissue-overlap contrast, dark undershoots
  beside bright calcifications), then a linear VOI window.
* scanned film (CBIS-DDSM): log exposure (+ screen dust) -> H&D characteristic curve (D_min,
  D_max, gamma; AEC sets the breast's median exposure to a target optical density) -> film
  grain (Selwyn: sd ~ sqrt(D)) -> digitiser (spot blur, noise, optical densities mapped
  linearly to values, dense = bright).

Polarity: a MONOCHROME1 domain stores max - value and is corrected by the standard rule
(out = lo + hi - stored over the stored range [0, 2^bits - 1]), so images are always
bright = dense. Output images are float32 in [0, 1] on the native grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from datasets.resize import Taps, separable, taps_of
from datasets.synthetic.anatomy import (
    Case,
    Speck,
    calc_thickness,
    cluster_mask,
    speck_patch,
    spectral_resize,
    stamp,
    view_index,
)
from datasets.synthetic.params import DomainParams


@dataclass
class Shot:
    """One stored image of a case: native-grid image, mask, and per-image metadata."""

    image: np.ndarray  # float32 n x n in [0, 1], bright = dense
    mask: np.ndarray  # uint8 n x n cluster region
    meta: dict[str, Any] = field(default_factory=dict)


def native_size(params: DomainParams) -> int:
    """Pixels across a tile at the domain's native spacing."""
    d = params.dataset
    return max(8, round(d.tile_mm / d.pixel_spacing_mm))


def acquire(case: Case, params: DomainParams) -> list[Shot]:
    """All stored images of a case in this domain (one, or one per tomosynthesis slice)."""
    n = native_size(params)
    if params.acquisition.geometry == "tomosynthesis":
        return _tomosynthesis(case, params, n)
    return [_projection(case, params, n)]


def _noise_rng(case: Case, params: DomainParams, image: int) -> np.random.Generator:
    """Acquisition noise stream of one stored image (independent of the anatomy streams)."""
    ss = np.random.SeedSequence(int(params.dataset.anatomy_seed),
                                spawn_key=(2, case.patient, view_index(case.view), image))
    return np.random.default_rng(ss)


def smooth(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a block-averaged copy and are interpolated back."""
    if sigma_px <= 0:
        return img
    if sigma_px < 6:
        return ndi.gaussian_filter(img, sigma_px, mode="nearest")
    f = int(sigma_px // 3)
    n0, n1 = img.shape
    p0, p1 = -n0 % f, -n1 % f
    padded = np.pad(img, ((0, p0), (0, p1)), mode="edge") if p0 or p1 else img
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, sigma_px / f, mode="nearest")
    big = separable(small, _upsampler(padded.shape[0], f), _upsampler(padded.shape[1], f))
    return big[:n0, :n1].astype(img.dtype, copy=False)


@lru_cache(maxsize=32)
def _upsampler(n: int, f: int) -> Taps:
    """Taps of the (n, n // f) linear interpolation from block centres to pixel centres."""
    ns = n // f
    pos = np.clip((np.arange(n) + 0.5) / f - 0.5, 0.0, ns - 1.0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, ns - 1)
    w = np.zeros((n, ns), np.float32)
    np.add.at(w, (np.arange(n), lo), 1.0 - (pos - lo))
    np.add.at(w, (np.arange(n), hi), pos - lo)
    return taps_of(w)


def _resized_texture(layers: np.ndarray, n: int) -> np.ndarray:
    """Band-limited interpolation of (stacked) texture-grid fields onto an n x n grid."""
    spec = sfft.rfft2(layers, norm="forward")
    return sfft.irfft2(spectral_resize(spec, n), s=(n, n), norm="forward").astype(np.float32)


def _tissue_mu(params: DomainParams, gland: np.ndarray, fat_band: np.ndarray,
               muscle: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/mm) of the tissue mix: fat, gland (none in the fat band), muscle."""
    q = params.acquisition
    g = gland * fat_band * (1.0 - muscle)
    return (q.mu_fat_per_mm + (q.mu_gland_per_mm - q.mu_fat_per_mm) * g
            + (q.mu_muscle_per_mm - q.mu_fat_per_mm) * muscle).astype(np.float32)


def _breast_values(img: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Breast-region values on a 2x subsample (enough for percentiles, 4x cheaper)."""
    vals = img[::2, ::2][breast[::2, ::2]]
    return vals if vals.size else img.ravel()


def _measure(a_true: np.ndarray, breast: np.ndarray, params: DomainParams, n: int,
             rng: np.random.Generator) -> np.ndarray:
    """Scatter, AEC, quantum + electronic noise and MTF: line integral -> measured -log(t)."""
    q = params.acquisition
    spacing = params.dataset.tile_mm / n
    primary = np.exp(-a_true)
    spr = float(q.scatter_to_primary)
    total = (primary + spr * smooth(primary, q.scatter_sigma_mm / spacing)) / (1.0 + spr)
    quanta = float(q.quanta_per_mm2) * spacing * spacing
    e0 = quanta / max(float(np.median(_breast_values(total, breast))), 1e-6)
    e = e0 * total
    sd = np.sqrt(e + float(q.electronic_noise_quanta) ** 2) / e
    measured = -np.log(total) + sd * rng.standard_normal((n, n), dtype=np.float32)
    return smooth(measured.astype(np.float32), q.mtf_sigma_mm / spacing)


def _projection(case: Case, params: DomainParams, n: int) -> Shot:
    """FFDM or scanned film: one projection of the whole breast thickness."""
    q = params.acquisition
    maps = case.maps(n)
    gland = _resized_texture(case.texture_layers.mean(axis=0), n)
    mu = _tissue_mu(params, np.clip(gland, 0.0, 1.0), maps.fat_band, maps.muscle)
    patches = case.speck_patches(n)
    calc = calc_thickness(case, n, patches)
    a_true = (mu * (maps.thickness - maps.skin_path) + q.mu_skin_per_mm * maps.skin_path
              + (q.mu_calc_per_mm - q.mu_gland_per_mm) * calc)
    rng = _noise_rng(case, params, 0)
    breast = maps.breast
    measured = _measure(a_true, breast, params, n, rng)
    if q.receptor == "film":
        value = _film(measured, breast, params, n, rng)
        if q.lut != "none":  # a display mapping applied to the digitised film (e.g. an export)
            value = _display(value, breast, params)
    else:
        value = _display(_vendor_processing(measured, breast, params, n), breast, params)
    if q.zero_background:
        value = np.where(breast, value, 0.0)
    mask = cluster_mask(case, n, patches=patches)
    return Shot(_store(value, params), mask, {"receptor": q.receptor})


def _vendor_processing(p: np.ndarray, breast: np.ndarray, params: DomainParams,
                       n: int) -> np.ndarray:
    """FFDM 'for presentation' processing: thickness equalisation, then unsharp masking."""
    q = params.acquisition
    spacing = params.dataset.tile_mm / n
    if q.equalization > 0 and breast.any():
        w = breast.astype(np.float32)
        sigma = q.equalization_sigma_mm / spacing
        low = smooth(p * w, sigma) / np.maximum(smooth(w, sigma), 1e-3)
        ref = float(np.percentile(_breast_values(low, breast), 90))
        p = p + q.equalization * np.maximum(ref - low, 0.0) * w
    if q.unsharp_amount > 0:
        p = p + q.unsharp_amount * (p - smooth(p, q.unsharp_sigma_mm / spacing))
    return p


def _display(p: np.ndarray, breast: np.ndarray, params: DomainParams,
             window: tuple[float, float] | None = None) -> np.ndarray:
    """VOI (breast percentiles, tissue attenuation or a given (lo, hi) window -> 0..1), then
    the display LUT."""
    q = params.acquisition
    if window is not None:  # e.g. the volume's own window, shared by all its slices
        lo, hi = window
    elif q.voi_mode == "tissue":  # quantitative values: 0 = fat, 1 = fibroglandular tissue
        lo, hi = q.mu_fat_per_mm, q.mu_gland_per_mm
    else:
        lo, hi = np.percentile(_breast_values(p, breast), q.voi_percentiles)
    u = (p - lo) / max(float(hi - lo), 1e-6)
    c, w = float(q.voi_center), float(q.voi_width)
    if q.lut == "none":
        return np.clip(u, 0.0, 1.0)
    if q.lut == "sigmoid":  # DICOM PS3.3 C.11.2.1.3.1 SIGMOID
        return 1.0 / (1.0 + np.exp(-4.0 * (u - c) / w))
    x = np.clip((u - c) / w + 0.5, 0.0, 1.0)  # DICOM LINEAR window, continuous form
    if q.lut == "log":
        return np.log1p(q.lut_log_gain * x) / np.log1p(q.lut_log_gain)
    if q.lut == "gamma":
        return x ** q.lut_gamma
    return x


def _film(measured: np.ndarray, breast: np.ndarray, params: DomainParams, n: int,
          rng: np.random.Generator) -> np.ndarray:
    """Screen-film + digitiser: log exposure -> H&D curve -> grain -> digitised OD."""
    f = params.film
    spacing = params.dataset.tile_mm / n
    log_e = -measured / np.log(10.0)  # log10 of relative exposure
    if f.dust_per_cm2 > 0:
        log_e = log_e + _screen_dust(n, spacing, f.dust_per_cm2, rng)
    k = 4.0 * f.gamma / (f.d_max - f.d_min)  # logistic slope giving max gradient = gamma
    median = float(np.median(_breast_values(log_e, breast)))
    speed = median + np.log((f.d_max - f.d_min) / (f.aec_target_od - f.d_min) - 1.0) / k
    density = f.d_min + (f.d_max - f.d_min) / (1.0 + np.exp(-k * (log_e - speed)))
    # Grain (Selwyn: variance ~ D) and digitiser noise, both white at this pixel size, drawn
    # as one field and seen through the digitiser's spot.
    sd = np.sqrt(f.grain_sigma_od**2 * np.maximum(density, 0.0) + f.digitizer_noise_od**2)
    density = density + sd * rng.standard_normal((n, n), dtype=np.float32)
    density = smooth(density.astype(np.float32), f.digitizer_sigma_mm / spacing)
    od_lo, od_hi = f.digitizer_od_range
    return np.clip((od_hi - density) / (od_hi - od_lo), 0.0, 1.0)


def _screen_dust(n: int, spacing: float, per_cm2: float, rng: np.random.Generator
                 ) -> np.ndarray:
    """log10 exposure change from dust on the intensifying screen: opaque specks of 0.05-0.3 mm
    block the screen's light, so the film stays clear there and shows a sharp white speck
    (a classic screen-film artefact that mimics microcalcifications)."""
    tile = n * spacing
    out = np.zeros((n, n), np.float32)
    for _ in range(int(rng.poisson(per_cm2 * (tile / 10.0) ** 2))):
        r, c = rng.uniform(0.0, tile, size=2)
        d = float(np.exp(rng.uniform(np.log(0.05), np.log(0.3))))
        blob = np.array([[0.0, 0.0, d / 2, d / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)]])
        r0, c0, cover = speck_patch(Speck(r, c, 0.0, d, blob, -1), spacing, flat=True)
        opacity = rng.uniform(0.5, 0.95)
        stamp(out, r0, c0, np.log10(1.0 - opacity * cover).astype(np.float32))
    return out


def _store(value: np.ndarray, params: DomainParams) -> np.ndarray:
    """Quantise to the bits stored, store with the domain's polarity, apply the standard
    MONOCHROME1 correction, and return float32 in [0, 1] (bright = dense)."""
    q = params.acquisition
    top = float(2 ** int(q.bit_depth) - 1)
    stored = np.rint(np.clip(value, 0.0, 1.0) * top)
    if q.photometric == "MONOCHROME1":
        stored = top - stored  # what the file holds: dense = dark
        stored = (0.0 + top) - stored  # reader's rule: out = lo + hi - stored
    return (stored / top).astype(np.float32)


def _tomosynthesis(case: Case, params: DomainParams, n: int) -> list[Shot]:
    """DBT: several slices of one view; values are attenuation coefficients (1/mm).

    Slice at depth z = W(f) * sum_k SAA_k(mu_k): every depth layer k is shift-and-added (one
    replica per projection at (z_k - z) * tan(angle) along the motion axis: in Fourier space a
    transfer function H_k(f) of the motion-axis frequency f), and the reconstruction filter
    W(f) = 1 / max(1, sum_k H_k(f)) normalises the depth response, so a structure that fills
    the whole depth keeps its attenuation. At f = 0 every layer counts 1/L (depth average:
    structures long along the sweep are not resolved in depth), at high f only the in-focus
    layer passes. This lowers tissue-overlap contrast, turns out-of-focus calcifications into
    rows of faint replicas along the motion axis, and gives in-focus ones dark undershoots.
    """
    q, t, d = params.acquisition, params.tomosynthesis, params.dataset
    tile = float(d.tile_mm)
    spacing = tile / n
    thick = case.thickness_mm
    maps = case.maps(n)
    layers = case.texture_layers
    n_layers, m = layers.shape[0], layers.shape[-1]
    slab = thick / n_layers
    small = case.maps(m)  # modulation maps on the texture grid
    mu = _tissue_mu(params, layers, small.fat_band[None], small.muscle[None])
    layer_spec = sfft.rfft2(mu, norm="forward")
    layer_depth = (np.arange(n_layers) + 0.5) * slab
    angles = np.deg2rad(np.linspace(-t.sweep_angle_deg / 2, t.sweep_angle_deg / 2,
                                    int(t.n_projections)))
    tan = np.tan(angles)
    axis = int(t.motion_axis)

    def motion_freq(size: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """Frequencies (cycles/mm) along the motion axis of a half-spectrum, and its shape."""
        if axis == 0:
            return sfft.fftfreq(size, d=1.0 / size) / tile, (size, 1)
        return sfft.rfftfreq(size, d=1.0 / size) / tile, (1, size // 2 + 1)

    def transfer(size: int, depth: float) -> np.ndarray:
        """H_k(f) for every layer: (n_layers, len(f)) shift-and-add response (real: the sweep
        is symmetric)."""
        f, _ = motion_freq(size)
        dz = layer_depth - depth
        return np.cos(2 * np.pi * f[None, None, :] * dz[:, None, None]
                      * tan[None, :, None]).mean(axis=1)

    def recon_filter(h: np.ndarray, size: int) -> np.ndarray:
        """W(f) = 1 / max(1, sum_k H_k(f)), shaped to broadcast over a half-spectrum."""
        _, shape = motion_freq(size)
        return (1.0 / np.maximum(h.sum(axis=0), 1.0)).reshape(shape).astype(np.float32)

    _, fshape = motion_freq(m)
    patches = case.speck_patches(n)
    # A speck of path length c replaces tissue in one slab: excess attenuation c/slab, spread
    # over one replica per projection.
    calc_weight = (q.mu_calc_per_mm - q.mu_gland_per_mm) / slab / len(tan)
    quanta = float(q.quanta_per_mm2) * spacing * spacing  # AEC: detector quanta per pixel
    per_proj = quanta / len(tan)
    noise_line = np.sqrt(per_proj + q.electronic_noise_quanta**2) * np.sqrt(len(tan)) / quanta
    noise_mu = noise_line / slab  # line-integral noise of the shift-and-add, per slab
    breast = maps.breast
    soft_breast = np.clip(maps.skin_distance / spacing + 0.5, 0.0, 1.0).astype(np.float32)

    n_slices = max(1, round(thick / t.slice_thickness_mm))
    depths = _slice_depths(case, params, n_slices)
    projection_noise = _projection_noise(case, params, n, len(tan), per_proj)
    recons = []
    for si, depth in enumerate(depths):
        # Tissue: shift-and-add of every layer, as a transfer function along the motion axis.
        h_m = transfer(m, depth)
        spec = (layer_spec * h_m.reshape(n_layers, *fshape)).sum(axis=0)
        spec = spectral_resize((spec * recon_filter(h_m, m)).astype(np.complex64), n)
        # Calcifications: one replica per projection, at the speck's height times tan(angle).
        w_n = recon_filter(transfer(n, depth), n)
        calc = np.zeros((n, n), np.float32)
        for speck, (r0, c0, patch) in zip(case.specks, patches, strict=True):
            for shift in np.rint((speck.depth_mm - depth) * tan / spacing).astype(int):
                dr, dc = (shift, 0) if axis == 0 else (0, shift)
                stamp(calc, r0 + dr, c0 + dc, patch, calc_weight)
        if case.specks:
            spec = spec + sfft.rfft2(calc, norm="forward") * w_n
        recon = sfft.irfft2(spec, s=(n, n), norm="forward").astype(np.float32)
        # Scatter (no grid in DBT) lowers every contrast about the mean by 1 / (1 + SPR).
        mean = float(np.mean(_breast_values(recon, breast)))
        recon = mean + (recon - mean) / (1.0 + q.scatter_to_primary)
        if projection_noise is None:  # one independent white field per slice (uncorrelated)
            rng = _noise_rng(case, params, si)
            recon += noise_mu * rng.standard_normal((n, n), dtype=np.float32)
        else:  # the projections' noise, shift-and-added and filtered like the signal
            recon += _slice_noise(projection_noise, depth * tan / spacing, axis, w_n) / slab
        recons.append(smooth(recon * soft_breast, q.mtf_sigma_mm / spacing))
    window = None
    if q.voi_mode == "volume":  # one window for the whole volume, from all its slices
        values = np.concatenate([_breast_values(r, breast) for r in recons])
        window = tuple(float(v) for v in np.percentile(values, q.voi_percentiles))
    shots = []
    for depth, recon in zip(depths, recons, strict=True):
        value = _display(recon, breast, params, window)
        if q.zero_background:
            value = np.where(breast, value, 0.0)
        mask = cluster_mask(case, n, depth_mm=depth, focus_mm=t.mask_focus_mm,
                            min_specks=int(t.min_specks_in_focus), patches=patches)
        # the number of the reconstructed slice ('centred' keeps its historical rounding, so
        # stand-ins that use it reproduce bit for bit)
        index = (round(depth / t.slice_thickness_mm) if t.slice_sampling == "centred"
                 else min(int(depth / t.slice_thickness_mm), n_slices - 1))
        meta = {"receptor": q.receptor, "slice": index,
                "slice_depth_mm": round(depth, 3), "n_slices": n_slices,
                "volume_id": f"P{case.patient:04d}-{case.view}"}
        shots.append(Shot(_store(value, params), mask, meta))
    return shots


def _slice_depths(case: Case, params: DomainParams, n_slices: int) -> list[float]:
    """Depths (mm) of the stored slices of one volume, in increasing order.

    'centred': `slices_per_view` slices `slice_step_mm` apart about the mean depth of the
    first cluster. 'random': drawn without replacement (from the case's own random stream)
    among the volume's reconstructed slices on which that cluster is annotated (at least
    `min_specks_in_focus` specks within `mask_focus_mm`), then, if too few, among the other
    slices of the volume; a volume without a cluster draws from all its slices.
    """
    t, count = params.tomosynthesis, int(params.dataset.slices_per_view)
    thick, step = case.thickness_mm, float(t.slice_thickness_mm)
    focus = [s for s in case.specks if s.cluster == 0]
    if t.slice_sampling == "centred":
        centre = float(np.mean([s.depth_mm for s in focus])) if focus else thick / 2
        return [float(np.clip(centre + (si - (count - 1) / 2) * t.slice_step_mm, step,
                              thick - step)) for si in range(count)]
    centres = (np.arange(n_slices) + 0.5) * step
    depth = np.array([s.depth_mm for s in focus], np.float64)
    in_focus = (np.abs(depth[None, :] - centres[:, None]) <= t.mask_focus_mm).sum(axis=1)
    shown = np.flatnonzero(in_focus >= int(t.min_specks_in_focus)) if focus else np.arange(0)
    rest = np.setdiff1d(np.arange(n_slices), shown)
    rng = np.random.default_rng(np.random.SeedSequence(
        int(params.dataset.anatomy_seed), spawn_key=(case.patient, _view_key(case.view), 7)))
    picked = list(rng.permutation(shown)[:count])
    picked += list(rng.permutation(rest)[:count - len(picked)])
    return sorted(float(centres[i]) for i in picked)


def _view_key(view: str) -> int:
    """A stable small integer for a view name (a random-stream key)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(view))


def _projection_noise(case: Case, params: DomainParams, n: int, k: int, per_proj: float
                      ) -> np.ndarray | None:
    """The quantum + electronic noise of each of the `k` projections (k, n, n), in line-integral
    units; None for tomosynthesis.reconstruction_noise = 'white' (one independent field per
    slice, the older model)."""
    q = params.acquisition
    if params.tomosynthesis.reconstruction_noise == "white":
        return None
    sd = float(np.sqrt(per_proj + q.electronic_noise_quanta ** 2) / per_proj)
    rng = _noise_rng(case, params, 0)
    return sd * rng.standard_normal((k, n, n), dtype=np.float32)


def _slice_noise(noise: np.ndarray, shifts: np.ndarray, axis: int, w: np.ndarray
                 ) -> np.ndarray:
    """Noise of one reconstructed slice: the mean of the projections' noise, each shifted by
    its replica offset (pixels) for this depth, then the reconstruction filter `w`. Slices of
    one volume share the projections, so their noise is correlated, and the filter makes it
    high-pass along the motion axis, the anisotropic noise of DBT."""
    summed = np.zeros(noise.shape[1:], np.float32)
    for one, shift in zip(noise, np.rint(shifts).astype(int), strict=True):
        summed += np.roll(one, int(shift), axis=axis)
    summed /= len(noise)
    spec = sfft.rfft2(summed, norm="forward") * w
    return sfft.irfft2(spec, s=summed.shape, norm="forward").astype(np.float32)
