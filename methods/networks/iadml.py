"""Iadml's shallow network (Wichakam et al. 2018) as a 2D fully convolutional segmenter.

See docs/methods/iadml.md. The original is a 4-conv-layer 3D ConvNet classifying DBT
volumes; its widths are not published. We keep the four 3x3 convolutions (conv-BN-ReLU, widths
w, 2w, 4w, 8w with a 2x2 max-pool between them), add a 1x1 conv to one logit and bilinear x8
up-sampling back to the input size: about 0.39M parameters at w = 32. There is no decoder, as
in the original, so stride-8 features lose the smallest calcifications (a property of the
baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3x3 same-padding convolution, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class IadmlNet(nn.Module):
    """Four conv layers (w, 2w, 4w, 8w), three max-pools, 1x1 logit head, bilinear x8."""

    def __init__(self, in_channels: int = 1, base: int = 32) -> None:
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(conv_bn_relu(cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"IadmlNet input size {tuple(x.shape[-2:])} must be divisible by 8")
        logits = self.head(self.features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
