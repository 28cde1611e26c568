"""DoFE's network: DeepLabv3+ on MobileNetV2 with a domain knowledge pool (docs/methods/dofe.md).

Layout as in emma-sjwang/Dofe (`networks/deeplabv3.py`, `aspp.py`, `decoder.py`,
`encoder.py`): timm MobileNetV2 features at strides 4 and 16 (output stride 16), ASPP
(1x1, three 3x3 atrous convs, image pooling; concat -> 1x1 -> BN -> ReLU -> Dropout 0.5, the
pre-BN map also returned), low-level 1x1 projection, semantic feature h_s = BN(cat(up(ASPP
pre-BN), low)), a domain-code head on the ASPP output, the pool M (K x F, F = ASPP + low-level
width = 304 at the published widths) injected through a tanh gate, and the two-conv head.

Hand-written ASPP and decoder: smp's DeepLabV3Plus uses depthwise-separable ASPP and decoder
convolutions (4.38 M parameters), which is not DoFE's decoder. The pool is stored as K x F
vectors rather than the code's K x F x 64 x 64 maps: those are spatially constant (initialised
and updated with spatial means), so the vectors hold the same values.

Departure [ours]: the last head convolution's bias starts at log(pi / (1 - pi)), pi = 0.025
(about the cluster-mask foreground fraction of our domains), the prior-probability
initialisation of Lin et al. (ICCV 2017). DoFE's code leaves PyTorch's default (bias ~ 0, an
initial p = 0.5 everywhere); with BCE as the only segmentation loss and ~2.5 % foreground the
from-scratch network then spends the whole quick budget learning the background prior (train
BCE falling from 0.69 towards the prior's 0.11 with validation at all-background).
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = 0 if kernel == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling; returns (pre-BN projection, BN-ReLU output). `post`'s
    dropout (index 2) is applied by the caller, so the domain head can be fed before it."""

    def __init__(self, cin: int, channels: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, channels, 1)] +
                                      [_conv_bn_relu(cin, channels, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, channels, 1))
        self.project = nn.Conv2d(channels * (len(rates) + 2), channels, 1, bias=False)
        self.post = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        feats = [b(x) for b in self.branches]
        feats.append(F.interpolate(self.pool(x), size=size, mode="bilinear", align_corners=True))
        pre = self.project(torch.cat(feats, dim=1))
        return pre, self.post[1](self.post[0](pre))


class DofeDeepLab(nn.Module):
    """DeepLabv3+ with DoFE's domain knowledge pool, domain-code attention and tanh gate."""

    def __init__(self, num_domains: int, encoder: str = "mobilenetv2_100",
                 aspp_channels: int = 256, low_channels: int = 48,
                 head_channels: int = 256, prior: float = 0.025,
                 domain_before_dropout: bool = False) -> None:
        super().__init__()
        # False: the reference layout, the domain head reads the ASPP output after Dropout(0.5);
        # True: the pool fix, it reads it before (see methods/dofe.py, "knowledge pool").
        self.domain_before_dropout = domain_before_dropout
        self.encoder = timm.create_model(encoder, features_only=True, pretrained=False,
                                         in_chans=1, out_indices=(1, 4), output_stride=16)
        low_in, high_in = self.encoder.feature_info.channels()
        self.aspp = ASPP(high_in, aspp_channels)
        self.low = _conv_bn_relu(low_in, low_channels, 1)
        self.feature_dim = aspp_channels + low_channels
        self.semantic_bn = nn.BatchNorm2d(self.feature_dim)
        self.domain_code = nn.Sequential(  # EncoderDC
            nn.AdaptiveMaxPool2d(1), nn.BatchNorm2d(aspp_channels), nn.ReLU(inplace=True),
            nn.Conv2d(aspp_channels, num_domains, 1))
        self.gate = nn.Conv2d(self.feature_dim, self.feature_dim, 1, bias=False)
        self.head = nn.Sequential(
            _conv_bn_relu(self.feature_dim, head_channels, 3), nn.Dropout(0.5),
            _conv_bn_relu(head_channels, head_channels, 3), nn.Dropout(0.1),
            nn.Conv2d(head_channels, 1, 1))
        # Prior-probability bias init (Lin et al. 2017, focal loss section 3.3): BCE alone on
        # ~2.5 % foreground otherwise spends the quick budget walking the bias down from 0.
        nn.init.constant_(self.head[-1].bias, math.log(prior / (1.0 - prior)))
        self.register_buffer("memory", torch.zeros(num_domains, self.feature_dim))

    def forward(self, x: torch.Tensor, inject: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B,1,H,W) in [0,1] -> (logits (B,1,H,W), domain logits (B,K), pooled h_s
        (B,F)); `inject=False` is the plain DeepLabv3+ of the pre-training stage."""
        low, high = self.encoder(x * 2.0 - 1.0)  # DoFE normalises to [-1, 1]
        pre, act = self.aspp(high)
        up = F.interpolate(pre, size=low.shape[-2:], mode="bilinear", align_corners=True)
        h_s = self.semantic_bn(torch.cat([up, self.low(low)], dim=1))
        domain_in = act if self.domain_before_dropout else self.aspp.post[2](act)
        domain_logits = self.domain_code(domain_in).flatten(1)
        h = h_s
        if inject:
            attention = torch.softmax(domain_logits, dim=1)
            h_agg = (attention @ self.memory.detach())[:, :, None, None]
            h = h_s + torch.tanh(self.gate(h_s)) * h_agg
        logits = F.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear",
                               align_corners=True)
        return logits, domain_logits, h_s.mean(dim=(-2, -1))

    @torch.no_grad()
    def update_memory(self, pooled: torch.Tensor, domains: torch.Tensor,
                      momentum: float = 0.9) -> None:
        """M_k <- momentum M_k + (1 - momentum) mean(pooled h_s of batch items of domain k);
        a no-op outside training mode (the released code also updates in eval mode)."""
        if not self.training:
            return
        for k in torch.unique(domains).tolist():
            mean = pooled[domains == k].detach().mean(0)
            self.memory[k] = momentum * self.memory[k] + (1.0 - momentum) * mean


class DofePlain(nn.Module):
    """The plain DeepLabv3+ of DoFE's first stage: `net` without injection, logits only. What
    `bench pretrain` trains and what formula weights are named after (the pool stays zero)."""

    def __init__(self, net: DofeDeepLab) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, inject=False)[0]
