"""The U-Net of Ronneberger et al. (2015), adapted as in docs/methods/unet.md.

Adaptations (the paper's own choices do not fit 512x512 cluster masks): same-padding 3x3
convolutions so output size = input size, BatchNorm after every convolution, 2x2 transposed
convolutions for up-sampling, one output logit. With base width 64 it has 31.04M parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


class DoubleConv(nn.Sequential):
    """(3x3 conv, norm, ReLU) x 2, same padding; the norm is BatchNorm unless replaced."""

    def __init__(self, cin: int, cout: int, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Four down-sampling levels, a bottleneck of 16x base channels, skip concatenation.

    `norm` builds every normalisation layer (BatchNorm2d; multi-branch norms for Unet-R/E/*).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 64,
                 depth: int = 4, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(DoubleConv(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], norm)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_hi, w_lo in zip(reversed(widths[1:]), reversed(widths[:-1]), strict=True):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.up_conv.append(DoubleConv(2 * w_lo, w_lo, norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet input size {tuple(x.shape[-2:])} must be divisible by {factor}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)
