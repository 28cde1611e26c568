"""CS-net (Wang & Yang, Pattern Recognition 2018) recast as a fully convolutional dual branch.

The original is a candidate classifier with a local sub-network on the micro-calcification and a
context sub-network on the surrounding tissue, fused into one decision. Here both branches are
fully convolutional (docs/methods/csnet.md): a local branch at full resolution with a
~9 px receptive field (one MC), a context branch on a coarser view with a large receptive field
(the tissue background), concatenated and fused by 1x1 convolutions into one logit per pixel.
At the paper-profile widths (local 32-32-64-64, context 32-64-128, head 64) it has 0.37M parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    """Same-padded conv + BatchNorm + ReLU (bias is redundant before BN)."""
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def local_branch(widths: Sequence[int]) -> nn.Sequential:
    """3x3 conv-BN-ReLU layers at full resolution, no pooling: receptive field 2*len+1 px."""
    layers: list[nn.Module] = []
    cin = 1
    for w in widths:
        layers += conv_bn_relu(cin, w)
        cin = w
    return nn.Sequential(*layers)


def context_branch(widths: Sequence[int]) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU per width with a 2x2 max-pool between widths (VGG-style)."""
    layers: list[nn.Module] = []
    cin = 1
    for i, w in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += conv_bn_relu(cin, w) + conv_bn_relu(w, w)
        cin = w
    return nn.Sequential(*layers)


class CSNet(nn.Module):
    """Local + context branches fused per pixel; `forward(x, context)` returns logits.

    `context_scale` is the down-sampling (average pooling) of the context branch's input when
    it is built from the image itself. `forward` also accepts a separate context image that
    covers `context_fov` times the local patch's side, centred on it (the paper's larger field
    of view): its features are cropped to the patch's footprint before fusion.
    """

    def __init__(self, local_widths: Sequence[int] = (32, 32, 64, 64),
                 context_widths: Sequence[int] = (32, 64, 128), head_width: int = 64,
                 context_scale: int = 2) -> None:
        super().__init__()
        if context_scale < 1:
            raise ValueError(f"context_scale must be >= 1, got {context_scale}")
        self.context_scale = context_scale
        self.context_stride = 2 ** (len(context_widths) - 1)
        self.local = local_branch(local_widths)
        self.context = context_branch(context_widths)
        self.head = nn.Sequential(
            *conv_bn_relu(local_widths[-1] + context_widths[-1], head_width, kernel=1),
            nn.Conv2d(head_width, 1, 1),
        )

    def context_view(self, x: torch.Tensor) -> torch.Tensor:
        """The context branch's input built from the image itself: x average-pooled."""
        if self.context_scale == 1:
            return x
        return F.avg_pool2d(x, self.context_scale)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_fov: float = 1.0) -> torch.Tensor:
        if context is None:
            context, context_fov = self.context_view(x), 1.0
        need = self.context_stride
        if context.shape[-1] % need or context.shape[-2] % need:
            raise ValueError(f"CSNet context input {tuple(context.shape[-2:])} must be "
                             f"divisible by {need}")
        feats = self.context(context)
        if context_fov > 1.0:  # keep the central 1/fov of the map: the local patch's footprint
            h, w = feats.shape[-2:]
            ch, cw = max(1, round(h / context_fov)), max(1, round(w / context_fov))
            top, left = (h - ch) // 2, (w - cw) // 2
            feats = feats[..., top:top + ch, left:left + cw]
        feats = F.interpolate(feats, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([self.local(x), feats], 1))
