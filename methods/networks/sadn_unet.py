"""SADN's 2-D U-Net with dual BatchNorm (Dual-Normalization's `model/unetdsbn.py`).

Five `ConvD` levels (16-32-64-128-256 channels at n=16) and four `ConvU` levels; every
normalisation is a `MultiBatchNorm2d` (26 layers), convolutions are shared by the branches.
The branch is set by `multinorm.branch(ids)`, not passed as an argument. About 3.19M
parameters at n=16. Hand-written: the layer order (no ReLU after the first BN of a `ConvD`,
nearest x2 upsampling then a 1x1 conv in `ConvU`) is specific to this network and no library
provides it.
"""

from __future__ import annotations

import torch
from torch import nn

from methods.networks.dsbn import MultiBatchNorm2d


class ConvD(nn.Module):
    """Encoder level: [maxpool 2x2] -> conv3x3-BN -> conv3x3-BN-ReLU -> conv3x3-BN-ReLU."""

    def __init__(self, inplanes: int, planes: int, num_domains: int, first: bool = False,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.first = first
        self.pool = nn.Identity() if first else nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=True)
        self.bn1 = MultiBatchNorm2d(planes, num_domains, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
        self.bn2 = MultiBatchNorm2d(planes, num_domains, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
        self.bn3 = MultiBatchNorm2d(planes, num_domains, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(self.pool(x)))  # no ReLU here, as in the released code
        y = self.relu(self.bn2(self.conv2(x)))
        return self.relu(self.bn3(self.conv3(y)))


class ConvU(nn.Module):
    """Decoder level at width p: [conv3x3(2p->p)-BN-ReLU] -> nearest x2 -> conv1x1(p->p/2)-BN-
    ReLU -> concat skip (p channels) -> conv3x3(p->p)-BN-ReLU."""

    def __init__(self, planes: int, num_domains: int, first: bool = False,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.conv1 = nn.Conv2d(2 * planes, planes, 3, 1, 1, bias=True)
            self.bn1 = MultiBatchNorm2d(planes, num_domains, momentum=momentum)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")  # = MyUpsample2
        self.conv2 = nn.Conv2d(planes, planes // 2, 1, 1, 0, bias=True)
        self.bn2 = MultiBatchNorm2d(planes // 2, num_domains, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
        self.bn3 = MultiBatchNorm2d(planes, num_domains, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if not self.first:
            x = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(self.up(x))))
        y = torch.cat([prev, y], 1)
        return self.relu(self.bn3(self.conv3(y)))


class Unet2D(nn.Module):
    """`Unet2D(c=1, n=16, num_classes=2, norm='dsbn', num_domains=2)`: per-class sigmoid maps.

    `forward` returns the sigmoid of the `num_classes` output channels (B, num_classes, H, W),
    as the released network does; the prediction is their argmax. H and W must be divisible
    by 16 (four poolings). Init (as released): convs Kaiming-normal (fan_out, relu), BN gamma 1 /
    beta 0; conv biases keep PyTorch's default init, as in the original.
    """

    def __init__(self, c: int = 1, n: int = 16, num_classes: int = 2, norm: str = "dsbn",
                 num_domains: int = 2, momentum: float = 0.1) -> None:
        super().__init__()
        if norm != "dsbn":
            raise ValueError(f"only norm='dsbn' is implemented (SADN), not '{norm}'")
        k = num_domains
        self.convd1 = ConvD(c, n, k, first=True, momentum=momentum)
        self.convd2 = ConvD(n, 2 * n, k, momentum=momentum)
        self.convd3 = ConvD(2 * n, 4 * n, k, momentum=momentum)
        self.convd4 = ConvD(4 * n, 8 * n, k, momentum=momentum)
        self.convd5 = ConvD(8 * n, 16 * n, k, momentum=momentum)
        self.convu4 = ConvU(16 * n, k, first=True, momentum=momentum)
        self.convu3 = ConvU(8 * n, k, momentum=momentum)
        self.convu2 = ConvU(4 * n, k, momentum=momentum)
        self.convu1 = ConvU(2 * n, k, momentum=momentum)
        self.seg1 = nn.Conv2d(2 * n, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class sigmoid probabilities (B, num_classes, H, W), the released output."""
        return torch.sigmoid(self.logits(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid output (lets a caller apply the sigmoid in float32 under AMP)."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"Unet2D needs H and W divisible by 16, got {tuple(x.shape[-2:])}")
        x1 = self.convd1(x)
        x2 = self.convd2(x1)
        x3 = self.convd3(x2)
        x4 = self.convd4(x3)
        x5 = self.convd5(x4)
        y4 = self.convu4(x5, x4)
        y3 = self.convu3(y4, x3)
        y2 = self.convu2(y3, x2)
        y1 = self.convu1(y2, x1)
        return self.seg1(y1)
