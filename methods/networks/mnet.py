"""M-Net of Fu et al. (IEEE TMI 2018), as in HzFu/MNet_DeepCDR `Model_MNet.py`, single-channel.

A U-Net whose encoder also receives a multi-scale input pyramid (2x2 average pooling to 1/2,
1/4, 1/8, each through a 3x3 conv + ReLU and concatenated with the pooled encoder feature) and
whose decoder has four deep-supervised side outputs. At base 32 with one input channel and one
class it has 8.54M parameters (docs/methods/mnet.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, batchnorm: bool) -> list[nn.Module]:
    """3x3 same conv + ReLU (the reference), optionally with BatchNorm before the ReLU."""
    if batchnorm:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


def double_conv(cin: int, cout: int, batchnorm: bool) -> nn.Sequential:
    """Two 3x3 conv + ReLU layers: one encoder or decoder block of the reference."""
    return nn.Sequential(*_conv(cin, cout, batchnorm), *_conv(cout, cout, batchnorm))


class MNet(nn.Module):
    """Multi-scale-input U-Net with side outputs; `forward` returns the four side logits.

    Output (B, 4*out_channels, H, W): side outputs of decoder stages 6, 7, 8, 9 (coarse to
    fine). The reference's fused output is the mean of the four side *probabilities*; the
    caller computes it with `fuse` so the loss can weigh every output separately.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 32,
                 batchnorm: bool = False) -> None:
        super().__init__()
        w = [base * 2**i for i in range(5)]  # 32, 64, 128, 256, 512 at base 32
        self.out_channels = out_channels
        self.enc = nn.ModuleList([double_conv(in_channels, w[0], batchnorm)])
        # Input pyramid: one conv on the 1/2^i scaled image, width = that level's width.
        self.pyramid = nn.ModuleList()
        for i in range(1, 4):
            self.pyramid.append(nn.Sequential(*_conv(in_channels, w[i], batchnorm)))
            self.enc.append(double_conv(w[i] + w[i - 1], w[i], batchnorm))
        self.bottleneck = double_conv(w[3], w[4], batchnorm)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        self.side = nn.ModuleList()
        for i in range(3, -1, -1):  # decoder stages 6..9 at widths 256, 128, 64, 32
            self.up.append(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2))
            self.dec.append(double_conv(2 * w[i], w[i], batchnorm))
            self.side.append(nn.Conv2d(w[i], out_channels, 1))
        self._init_like_keras()

    def _init_like_keras(self) -> None:
        """Glorot-uniform weights and zero biases: the Keras defaults the reference trained with."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"MNet input size {tuple(x.shape[-2:])} must be divisible by 16")
        skips = [self.enc[0](x)]
        scaled = x
        for level in range(1, 4):
            scaled = F.avg_pool2d(scaled, 2)
            merged = torch.cat([self.pyramid[level - 1](scaled), F.max_pool2d(skips[-1], 2)], 1)
            skips.append(self.enc[level](merged))
        h = self.bottleneck(F.max_pool2d(skips[-1], 2))
        sides = []
        for up, dec, side, skip in zip(self.up, self.dec, self.side, reversed(skips),
                                       strict=True):
            h = dec(torch.cat([up(h), skip], 1))
            # A 1x1 conv commutes with nearest up-sampling, so convolving first is exact
            # (the reference up-samples first) and 64x cheaper for the coarsest side output.
            scale = x.shape[-1] // h.shape[-1]
            sides.append(F.interpolate(side(h), scale_factor=scale, mode="nearest")
                         if scale > 1 else side(h))
        return torch.cat(sides, 1)

    def fuse(self, side_logits: torch.Tensor) -> torch.Tensor:
        """The reference's fused output `out10`: the mean of the side probabilities."""
        b, _, h, w = side_logits.shape
        probs = torch.sigmoid(side_logits).view(b, 4, self.out_channels, h, w)
        return probs.mean(1)
