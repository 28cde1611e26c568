"""Local Laplacian filtering (Paris, Hasinoff, Kautz 2011) for Musn's image enhancement.

Hand-written in torch: no maintained Python package offers it (the PyPI hits, e.g. gopt,
localaplace, torchood, are 0.0.x one-offs; OpenCV has none). Two forms share one Burt-Adelson
pyramid code:

* `local_laplacian_reference`: the definition (Paris et al. 2011, Alg. 1), every output
  coefficient L_l[O](x, y) = L_l[r_g(I)](x, y) with g = G_l[I](x, y), remapping the whole image
  (not a cropped sub-window) - exact but O(pixels^2), for tests on tiny images;
* `local_laplacian_filter`: the sampled form (Paris et al. 2011, section 5 "accelerating",
  analysed by Aubry et al. 2014): remap with K evenly spaced g values, build their pyramids and
  interpolate each coefficient linearly between the two samples around G_l[I](x, y). It is
  vectorised over the batch and O(K x pixels), which keeps enhancement inside training steps.

The remapping function is that of the authors' MATLAB code (`remapping_function` + `fd` with
the noise-level smooth step that stops alpha < 1 from amplifying tiny noise differences).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)  # Burt-Adelson 5-tap generating kernel, / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1 4 6 4 1]/16 filter of (N,1,H,W) with replicated borders."""
    k = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device) / 16.0
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))


def _down(x: torch.Tensor) -> torch.Tensor:
    """Blur then keep every second row and column (sizes round up)."""
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion up-sampling to `size` followed by 4x the blur (the pyramid EXPAND)."""
    out = x.new_zeros(*x.shape[:-2], *size)
    out[..., ::2, ::2] = x
    return 4.0 * _blur(out)


def default_levels(height: int, width: int, smallest: int = 4) -> int:
    """Pyramid levels so that the coarsest level is still >= `smallest` pixels wide."""
    return max(1, math.floor(math.log2(max(1, min(height, width)) / smallest)) + 1)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[G_0 = x, G_1, ..., G_{levels-1}] of (N,1,H,W) images."""
    pyr = [x]
    for _ in range(levels - 1):
        pyr.append(_down(pyr[-1]))
    return pyr


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[L_0, ..., L_{levels-2}, G_{levels-1}]: band-pass levels plus the low-pass residual."""
    g = gaussian_pyramid(x, levels)
    bands = [g[i] - _up(g[i + 1], tuple(g[i].shape[-2:])) for i in range(levels - 1)]
    return [*bands, g[-1]]


def collapse(pyr: list[torch.Tensor]) -> torch.Tensor:
    """Invert `laplacian_pyramid` (exact up to float rounding)."""
    x = pyr[-1]
    for band in reversed(pyr[:-1]):
        x = band + _up(x, tuple(band.shape[-2:]))
    return x


def _smooth_step(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    """0 below `lo`, 1 above `hi`, C1-smooth in between (as in the authors' code)."""
    y = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return y**2 * (y - 2.0) ** 2


def remap(i: torch.Tensor, g: torch.Tensor | float, sigma_r: float, alpha: float,
          beta: float, noise_level: float = 0.01) -> torch.Tensor:
    """The point-wise remapping r_g(i): details |i - g| <= sigma_r get d^alpha (alpha < 1
    boosts them), edges beyond sigma_r are scaled by beta (1 keeps their amplitude)."""
    d = (i - g).abs()
    sign = torch.sign(i - g)
    dn = d / sigma_r
    fd = dn.clamp(min=0.0) ** alpha
    if alpha < 1.0:  # no boost of differences at the noise level
        tau = _smooth_step(noise_level, 2.0 * noise_level, dn * sigma_r)
        fd = tau * fd + (1.0 - tau) * dn
    detail = g + sign * sigma_r * fd
    edge = g + sign * ((d - sigma_r) * beta + sigma_r)
    return torch.where(d > sigma_r, edge, detail)


def local_laplacian_filter(x: torch.Tensor, sigma_r: float = 0.2, alpha: float = 0.5,
                           beta: float = 1.0, samples: int = 16,
                           levels: int | None = None) -> torch.Tensor:
    """Sampled local Laplacian filter of images (B,1,H,W) in [0, 1] (same shape out).

    The remapped images r_{g_k}(I) for g_k = k / (samples - 1) are processed one at a time, so
    memory does not grow with `samples`; each output coefficient mixes the two samples around
    G_l[I](x, y) with linear (hat-function) weights.
    """
    if samples < 2:
        raise ValueError("local_laplacian_filter needs at least 2 intensity samples")
    n = levels or default_levels(*x.shape[-2:])
    gpyr = gaussian_pyramid(x, n)
    positions = [g.clamp(0.0, 1.0) * (samples - 1) for g in gpyr[:-1]]
    out = [torch.zeros_like(g) for g in gpyr[:-1]]
    for k in range(samples):
        lp = laplacian_pyramid(remap(x, k / (samples - 1), sigma_r, alpha, beta), n)
        for level, pos in enumerate(positions):
            weight = (1.0 - (pos - k).abs()).clamp(min=0.0)
            out[level] = out[level] + weight * lp[level]
    return collapse([*out, gpyr[-1]])


def local_laplacian_reference(x: torch.Tensor, sigma_r: float = 0.2, alpha: float = 0.5,
                              beta: float = 1.0, levels: int | None = None) -> torch.Tensor:
    """The exact definition for one tiny image (1,1,H,W): one full remap-and-decompose per
    output coefficient. Test oracle for `local_laplacian_filter`."""
    if x.shape[0] != 1:
        raise ValueError("local_laplacian_reference takes one image")
    n = levels or default_levels(*x.shape[-2:])
    gpyr = gaussian_pyramid(x, n)
    out = []
    for level, g in enumerate(gpyr[:-1]):
        gv = g.flatten()  # one remapped copy of the image per coefficient of this level
        copies = remap(x.expand(len(gv), -1, -1, -1), gv.view(-1, 1, 1, 1), sigma_r, alpha, beta)
        band = laplacian_pyramid(copies, n)[level]  # (P,1,h,w)
        idx = torch.arange(len(gv))
        out.append(band.flatten(1)[idx, idx].view_as(g))
    return collapse([*out, gpyr[-1]])
