"""Musn's "modified U-Net" (Hossain 2022) (docs/methods/musn.md).

The paper's modifications are not published in detail; our form is the project's
same-padding BatchNorm U-Net (`methods.networks.unet.UNet`) at 32 base filters with dropout 0.5
after the bottleneck (about 7.8M parameters). Reusing the U-Net keeps the two comparable.
"""

from __future__ import annotations

from torch import nn

from methods.networks.unet import UNet


class MusnUNet(UNet):
    """U-Net (BN, same convs, transposed-conv up-sampling) with dropout on the bottleneck."""

    def __init__(self, in_channels: int = 1, base: int = 32, dropout: float = 0.5) -> None:
        super().__init__(in_channels=in_channels, out_channels=1, base=base)
        self.bottleneck = nn.Sequential(self.bottleneck, nn.Dropout(dropout))
