"""BigAug's nine stacked transformations (Zhang et al., TMI 2020) in 2D, drawn from a generator.

Order and ranges follow the BigAug paper (docs/methods/bigaug.md; the same numbers as the unofficial
kari-jg/BigAug_torchio port): image quality (blur, sharpen, noise), image appearance
(brightness, contrast, intensity perturbation), spatial (rotation, scaling, elastic), each
applied with probability p = 0.5.

Library choice: torchvision.transforms.v2.functional (already a dependency) provides the
operations whose definitions match the paper - `gaussian_blur` (Gaussian of std sigma),
`adjust_gamma` (x^gamma on [0, 1]), `affine` (rotation + isotropic scaling in one resample) and
`elastic` (resampling along a given displacement field). Its functional API takes explicit
parameters, so every random number is drawn here from the harness generator; torchio, MONAI and
kornia draw from their own global RNGs (and MONAI/torchio are not installed). The rest is one
line of tensor arithmetic each and written by hand: sharpening (torchvision's
`adjust_sharpness` is PIL's fixed 3x3 kernel, not the paper's unsharp mask), additive noise,
brightness and the x*(1+a)+b perturbation.

Choices where the paper is silent or does not fit 2D [ours]:
- Intensity ranges are defined on z-scored images (the paper z-normalises first). Our images
  stay in [0, 1] for the network, so transforms 1-6 run on z = (x - mean) / std of the image and
  the result is mapped back with the same mean and std (no clipping, as in the original).
- Gamma is drawn uniformly in [0.5, 4.5] (the paper's interval; the torchio port draws
  log-uniformly) and applied to min-max normalised z, then rescaled back.
- Scaling is isotropic (one factor in [0.4, 1.6]); the torchio port scales each axis alone.
  Rotation is in-plane. Out-of-field pixels of rotation, zoom-in and elastic deformation are
  filled with 0 (the black background); zooming out reflects the tile (below).
- Elastic: torchio's RandomElasticDeformation with 7 control points and locked borders = 2
  leaves a 3x3 grid of free knots inside an image-spanning 5x5 grid; we draw those displacements
  uniformly in +-`elastic_max_displacement` (a fraction of the image side, torchio's 7.5 at
  512 px) and interpolate bicubically to a dense field instead of evaluating SimpleITK's cubic
  B-spline (interpolating, not approximating: a smoothness difference only).
- Gaussian kernels are truncated at 4 sigma (scipy's default, which torchio uses).
- Zooming out (scale factor f < 1) [ours], `zoom_out`: (a) anti-aliased, a Gaussian of sigma
  (1/f - 1) / 2 px (skimage.transform.rescale's default) before the bilinear resample. The
  paper's volumes shrink organs tens of voxels wide, where point sampling loses nothing; our
  1-3 px specks shrunk to 0.4 are sub-pixel and bilinear point sampling at 0.4 skips about
  84 % of the pixels, so a speck survives or vanishes by where the grid falls (imaging the
  shrunk breast on the same detector integrates each pixel's area instead). (b) The field
  the shrunk tile no longer covers is filled by reflecting the tile, not with black: the
  paper's CT/MRI volumes are surrounded by air, so a zoomed-out volume really is framed by
  background, but our 50 mm tiles are cut out of a larger breast, and a black frame around a
  tissue island is an image no test domain contains. The mask is reflected alike (mirrored
  clusters stay labelled). Zoom-out is applied before the rotation (rotation and isotropic
  scaling about the centre commute; the rotation's corners are still filled with 0).
  Measured with the image-quality ranges per acquisition pixel: the stacked transforms
  without scaling reached val DSC 0.28 after 6 epochs (none: 0.32), with black-filled
  point-sampled scaling 0.08; with anti-aliasing only, the 12-epoch run first left
  all-background at epoch 11 (test DSC 35.8 %).
- Image-quality ranges at the acquisition's pixel (`quality_scale`) [ours]. The paper draws
  blur / sharpening sigmas in voxels and i.i.d. noise per voxel of volumes at about the
  scanners' own resolution (~1 mm CT/MRI voxels): they model scanner-quality variation at the
  native sampling. Our images are resampled: the synthetic detectors have 0.1 mm pixels (the
  `paper` profile's 512 px grid, 50 mm / 512), while `quick` trains at 128 px, 0.39 mm, where
  one pixel is 4 x 4 acquisition pixels. Applying the ranges per 0.39 mm pixel would blur over
  up to 6 mm (1.5 px there) and add noise per 16 detector pixels at the full std, i.e. far
  beyond the published quality change; measured on quick ffdm, noise alone (std 0.1-1 z) drops
  the median speck contrast-to-texture ratio from 6.0 to 2.5 and sharpening (alpha 10-30 on
  pixel-scale detail) spreads the z range to [-8, 14]; either transform alone kept a 6-epoch
  U-Net at all-background (val DSC 0.08 against 0.32 with none, blur alone 0.36). So the ranges
  are taken at the acquisition pixel and carried to the training grid: sigmas (blur, sharpen)
  are multiplied by s = acquisition pixel / grid pixel, and the noise std by s too (i.i.d.
  noise of std sd per acquisition pixel, averaged over the 1/s x 1/s acquisition pixels of one
  grid pixel, has std sd * s). s = image_size / 512 for the synthetic domains (1 at `paper`,
  0.25 at `quick`); the published values themselves are unchanged.
Even at the acquisition pixel, blur up to 1.5 px and strong noise can wipe out the smallest
calcifications; the published ranges are kept anyway (that is the method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

STEPS: tuple[str, ...] = ("blur", "sharpen", "noise", "brightness", "contrast", "perturb",
                          "rotate", "scale", "elastic")
"""The nine transformations in the paper's order."""


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of std `sigma` px (kernel truncated at 4 sigma, reflect padding)."""
    radius = max(1, math.ceil(4.0 * sigma))
    radius = min(radius, min(x.shape[-2:]) - 1)
    k = 2 * radius + 1
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def sharpen(x: torch.Tensor, sigma1: float, sigma2: float, alpha: float) -> torch.Tensor:
    """Unsharp mask of the paper: b1 = G_s1(x), b2 = G_s2(b1), x' = b1 + alpha (b1 - b2)."""
    b1 = gaussian_blur(x, sigma1)
    b2 = gaussian_blur(b1, sigma2)
    return b1 + alpha * (b1 - b2)


def contrast(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Gamma on min-max normalised intensities, rescaled back to the original range."""
    lo, hi = x.amin(), x.amax()
    span = (hi - lo).clamp(min=1e-12)
    return TF.adjust_gamma((x - lo) / span, gamma) * span + lo


def elastic_field(knots: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Dense displacement (1,H,W,2) in torchvision's normalised units from free knots (2,3,3)
    in pixels: a 5x5 image-spanning grid with its border locked to 0, bicubic in between."""
    grid = F.pad(knots.unsqueeze(0), (1, 1, 1, 1))  # (1,2,5,5), border knots locked
    dense = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0]
    scale = torch.tensor([2.0 / width, 2.0 / height]).view(2, 1, 1)
    return (dense * scale).permute(1, 2, 0).unsqueeze(0)  # (x, y) last, as grid_sample wants


def zoom_out(x: torch.Tensor, m: torch.Tensor, factor: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink image and mask (1,H,W) about the centre by `factor` < 1 on the same grid: the tile
    is extended by reflection to H / factor, the image Gaussian-filtered with sigma
    (1/factor - 1)/2 px (skimage.transform.rescale's anti-aliasing), then both resampled
    (bilinear / nearest) back to H x W."""
    h, w = x.shape[-2:]
    ph, pw = round((h / factor - h) / 2), round((w / factor - w) / 2)
    ph, pw = min(ph, h - 1), min(pw, w - 1)  # one reflection at most (factor >= 1/3)
    xp = F.pad(x.unsqueeze(0), (pw, pw, ph, ph), mode="reflect")[0]
    mp = F.pad(m.unsqueeze(0), (pw, pw, ph, ph), mode="reflect")
    xp = gaussian_blur(xp, 0.5 * (1.0 / factor - 1.0)).unsqueeze(0)
    xs = F.interpolate(xp, size=(h, w), mode="bilinear", align_corners=False)[0]
    ms = F.interpolate(mp, size=(h, w), mode="nearest")[0]
    return xs, ms


@dataclass(frozen=True)
class BigAugConfig:
    """Probability and ranges of the nine transformations (defaults: the published values)."""

    p: float = 0.5
    blur_sigma: tuple[float, float] = (0.25, 1.5)
    sharpen_sigma: tuple[float, float] = (0.25, 1.5)
    sharpen_alpha: tuple[float, float] = (10.0, 30.0)
    noise_std: tuple[float, float] = (0.1, 1.0)
    brightness: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.5, 4.5)
    perturb_scale: tuple[float, float] = (-0.1, 0.1)
    perturb_shift: tuple[float, float] = (-0.1, 0.1)
    rotation_deg: tuple[float, float] = (-20.0, 20.0)
    scale: tuple[float, float] = (0.4, 1.6)
    elastic_max_displacement: float = 7.5 / 512  # fraction of the image side
    quality_scale: float = 1.0  # acquisition pixel / grid pixel (module docstring)


def _uniform(gen: torch.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64))


def sample_params(cfg: BigAugConfig, gen: torch.Generator, height: int,
                  width: int) -> dict[str, dict[str, Any] | None]:
    """Per step, None (skipped, probability 1 - p) or its parameters, all drawn from `gen`."""
    out: dict[str, dict[str, Any] | None] = {}
    for step in STEPS:
        if float(torch.rand((), generator=gen)) >= cfg.p:
            out[step] = None
            continue
        if step == "blur":
            out[step] = {"sigma": _uniform(gen, cfg.blur_sigma) * cfg.quality_scale}
        elif step == "sharpen":
            out[step] = {"sigma1": _uniform(gen, cfg.sharpen_sigma) * cfg.quality_scale,
                         "sigma2": _uniform(gen, cfg.sharpen_sigma) * cfg.quality_scale,
                         "alpha": _uniform(gen, cfg.sharpen_alpha)}
        elif step == "noise":
            out[step] = {"std": _uniform(gen, cfg.noise_std) * cfg.quality_scale,
                         "field": torch.randn((1, height, width), generator=gen)}
        elif step == "brightness":
            out[step] = {"shift": _uniform(gen, cfg.brightness)}
        elif step == "contrast":
            out[step] = {"gamma": _uniform(gen, cfg.gamma)}
        elif step == "perturb":
            out[step] = {"a": _uniform(gen, cfg.perturb_scale),
                         "b": _uniform(gen, cfg.perturb_shift)}
        elif step == "rotate":
            out[step] = {"angle": _uniform(gen, cfg.rotation_deg)}
        elif step == "scale":
            out[step] = {"factor": _uniform(gen, cfg.scale)}
        else:  # elastic
            m = cfg.elastic_max_displacement
            knots = (torch.rand((2, 3, 3), generator=gen) * 2.0 - 1.0) * m
            knots = knots * torch.tensor([width, height], dtype=torch.float32).view(2, 1, 1)
            out[step] = {"knots": knots}
    return out


def _intensity(z: torch.Tensor, params: dict[str, dict[str, Any] | None]) -> torch.Tensor:
    """Transforms 1-6 on a z-scored image (1,H,W)."""
    if (p := params["blur"]) is not None:
        z = gaussian_blur(z, p["sigma"])
    if (p := params["sharpen"]) is not None:
        z = sharpen(z, p["sigma1"], p["sigma2"], p["alpha"])
    if (p := params["noise"]) is not None:
        z = z + p["std"] * p["field"].to(z)
    if (p := params["brightness"]) is not None:
        z = z + p["shift"]
    if (p := params["contrast"]) is not None:
        z = contrast(z, p["gamma"])
    if (p := params["perturb"]) is not None:
        z = z * (1.0 + p["a"]) + p["b"]
    return z


def apply_params(image: torch.Tensor, mask: torch.Tensor,
                 params: dict[str, dict[str, Any] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply drawn parameters to one image (1,H,W) in [0,1] and its mask (1,H,W) {0,1}."""
    x = image.float()
    mean, std = x.mean(), x.std().clamp(min=1e-6)
    x = _intensity((x - mean) / std, params) * std + mean
    m = mask.float()
    angle = params["rotate"]["angle"] if params["rotate"] is not None else 0.0
    factor = params["scale"]["factor"] if params["scale"] is not None else 1.0
    if factor < 1.0:  # zoom out: reflect-extend the tile, anti-alias, resample (docstring)
        x, m = zoom_out(x, m, factor)
        factor = 1.0
    if params["rotate"] is not None or factor != 1.0:
        affine = {"angle": angle, "translate": [0, 0], "scale": factor, "shear": [0.0, 0.0]}
        x = TF.affine(x, **affine, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
        m = TF.affine(m, **affine, interpolation=InterpolationMode.NEAREST, fill=[0.0])
    if (p := params["elastic"]) is not None:
        field = elastic_field(p["knots"], x.shape[-2], x.shape[-1])
        x = TF.elastic(x, field, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
        m = TF.elastic(m, field, interpolation=InterpolationMode.NEAREST, fill=[0.0])
    return x.to(image.dtype), (m > 0.5).to(mask.dtype)


def bigaug(images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator,
           cfg: BigAugConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked transformation of a batch (B,1,H,W), fresh parameters per image."""
    cfg = cfg or BigAugConfig()
    out_x, out_m = [], []
    for img, msk in zip(images, masks, strict=True):
        params = sample_params(cfg, gen, img.shape[-2], img.shape[-1])
        x, m = apply_params(img.cpu(), msk.cpu(), params)
        out_x.append(x)
        out_m.append(m)
    return (torch.stack(out_x).to(images.device), torch.stack(out_m).to(masks.device))
