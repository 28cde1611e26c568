"""FedDG's continuous frequency-space interpolation and per-client amplitude banks.

Paper (Liu et al., CVPR 2021, Eq. 1-2 as corrected by the author in FedDG-ELCFS issue #2):
A' = A_k (1 - M) + ((1 - lam) A_k + lam A_n) M, with M a centred low-frequency square of
half-width floor(min(H, W) * L) and lam ~ U(0, 1); x' = real(IFFT(A' e^{i phi_k})), clipped to
the image range ([0, 1] here; the code clips to [0, 255]). The released code
(`source_to_target_freq` with L = 0) swaps only the DC term, fully: `dc_swap` reproduces that.
Only the low band of an amplitude spectrum is ever used, so a bank stores just that box
(a few hundred numbers per image), which keeps checkpoints small. Hand-written on torch.fft:
no maintained library implements this interpolation.
"""

from __future__ import annotations

import math

import torch


def band_half_width(height: int, width: int, ratio: float) -> int:
    """b = floor(min(H, W) * L), the code's `low_freq_mutate_np` box half-width."""
    return math.floor(min(height, width) * ratio)


def band_slices(height: int, width: int, ratio: float) -> tuple[slice, slice]:
    """Rows and columns of the centred (fftshift-ed) low-frequency square of side 2b + 1."""
    b = band_half_width(height, width, ratio)
    ch, cw = height // 2, width // 2
    return slice(ch - b, ch + b + 1), slice(cw - b, cw + b + 1)


def amplitude_phase(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred amplitude and phase spectra of images (..., H, W) (float64 for exactness)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.double()), dim=(-2, -1))
    return spectrum.abs(), spectrum.angle()


def low_band(images: torch.Tensor, ratio: float) -> torch.Tensor:
    """The low-frequency amplitude box (..., 2b+1, 2b+1) of each image: what a bank stores."""
    rows, cols = band_slices(images.shape[-2], images.shape[-1], ratio)
    return amplitude_phase(images)[0][..., rows, cols].float()


def interpolate_amplitude(images: torch.Tensor, target_band: torch.Tensor, lam: torch.Tensor,
                          ratio: float, clip: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """x' for images (B,1,H,W): their low-band amplitude moved a fraction `lam` (B,) toward
    `target_band` (B,1,2b+1,2b+1); phase and the rest of the spectrum are kept."""
    amp, phase = amplitude_phase(images)
    rows, cols = band_slices(images.shape[-2], images.shape[-1], ratio)
    lam64 = lam.double().view(-1, *([1] * (images.dim() - 1)))
    mixed = amp.clone()
    mixed[..., rows, cols] = (1.0 - lam64) * amp[..., rows, cols] + lam64 * target_band.double()
    spectrum = torch.polar(mixed, phase)
    out = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    return out.clamp(*clip).to(images.dtype)


class AmplitudeBank:
    """A client's first-in-first-out store of low-band amplitude boxes of its own images."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("amplitude bank capacity must be >= 1")
        self.capacity = capacity
        self.bands: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.bands is None else int(self.bands.shape[0])

    def add(self, bands: torch.Tensor) -> None:
        """Append boxes (N,1,h,w), dropping the oldest beyond capacity."""
        bands = bands.detach().cpu().float()
        merged = bands if self.bands is None else torch.cat([self.bands, bands])
        self.bands = merged[-self.capacity:].clone()

    def sample(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """n boxes drawn uniformly with replacement."""
        if self.bands is None:
            raise RuntimeError("sampling from an empty amplitude bank")
        return self.bands[torch.randint(0, len(self), (n,), generator=gen)]
