"""CA-net (Zheng et al. 2020) as a segmenter: a shared 2D intra-slice encoder, anisotropic 3D
inter-slice fusion at every scale, and a 2D U-Net decoder (docs/methods/canet.md).

The original is a DBT false-positive-reduction classifier whose widths and VOI are not
published; we follow the project's form: per-slice encoder of 4 stages (2x conv-BN-ReLU, widths
w, 2w, 4w, 8w, max-pool between), then per scale Conv3d (3,1,1) across slices and Conv3d
(1,3,3) within slices (each BN3d + ReLU) and the mean over the D slices, feeding skip
connections of a transposed-conv decoder. About 2.96M parameters at w = 32 for any D (the
inter-slice kernels have depth 3; D only changes compute).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.networks.unet import DoubleConv


class InterSliceFusion(nn.Sequential):
    """Anisotropic 3D fusion of (B,C,D,h,w): Conv3d (3,1,1) then (1,3,3), BN3d + ReLU each."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(channels), nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(channels), nn.ReLU(inplace=True),
        )


class CANet(nn.Module):
    """(B,D,H,W) slice stack (centre slice in the middle) -> logits (B,1,H,W)."""

    def __init__(self, base: int = 32, stages: int = 4) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(stages)]
        self.encoder = nn.ModuleList()
        cin = 1
        for w in widths:
            self.encoder.append(DoubleConv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.fusion = nn.ModuleList(InterSliceFusion(w) for w in widths)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w_hi, w_lo in zip(reversed(widths[1:]), reversed(widths[:-1]), strict=True):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.decoder.append(DoubleConv(2 * w_lo, w_lo))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.factor = 2 ** (stages - 1)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        b, d, h, w = slices.shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"CANet input size {(h, w)} must be divisible by {self.factor}")
        x = slices.reshape(b * d, 1, h, w)
        fused = []
        for i, (block, fuse) in enumerate(zip(self.encoder, self.fusion, strict=True)):
            x = block(self.pool(x) if i else x)  # the shared 2D intra-slice branch
            vol = x.view(b, d, *x.shape[1:]).transpose(1, 2)  # (B,C,D,h,w)
            fused.append(fuse(vol).mean(2))  # inter-slice fusion, then average over D
        y = fused[-1]
        for up, conv, skip in zip(self.up, self.decoder, reversed(fused[:-1]), strict=True):
            y = conv(torch.cat([up(y), skip], dim=1))
        return self.head(y)
