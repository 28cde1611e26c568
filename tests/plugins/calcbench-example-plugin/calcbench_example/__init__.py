"""A third-party calcbench method: a 3-layer fully convolutional net (plugin example)."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.config import HParam
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import SingleNetworkMethod
from methods.losses import bce_dice_loss


@register_method("tinyfcn", display_name="TinyFCN", group="plugin",
                 citation="calcbench plugin example")
class TinyFCN(SingleNetworkMethod):
    """Three 3x3 convolutions; exists to show how a package adds a method."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [*super().hparam_space(),
                HParam("width", 8, lambda r: int(r.choice([8, 16])), "channels of each conv",
                       valid=Valid.integer(1, 256))]

    def build_network(self) -> nn.Module:
        w = int(self.hparams["width"])
        return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 1))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
