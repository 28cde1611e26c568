"""`unet` ("Unet", P1): the U-Net baseline of the MLN-net paper's Table 1.

Page: docs/methods/unet.md. Paper silent on the PyTorch variant, so we use the
same-padding BatchNorm U-Net (31.04M parameters at base 64) trained with BCE + soft Dice and
Adam (MLN-net paper 4.1.3). The touching-cell weight map and SGD momentum 0.99 of the original
are dropped: the former is meaningless for cluster masks, the latter is rarely reproducible at
batch > 1. The `quick` profile narrows the base width to 16 so a CPU run fits in minutes;
`paper` uses 64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.registry import register_method
from methods.base import CHANNELS_RANGE, SingleNetworkMethod, require_divisible
from methods.losses import bce_dice_loss
from methods.networks.unet import UNet


@register_method("unet", display_name="Unet", group="P1",
                 citation="Ronneberger, Fischer, Brox. U-Net. MICCAI 2015")
class UnetMethod(SingleNetworkMethod):
    """U-Net with BCE + soft Dice."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("base_channels", {"smoke": 4, "quick": 16, "paper": 64},
                   lambda r: int(r.choice([16, 32, 64])), "width of the first U-Net level",
                   valid=CHANNELS_RANGE),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The U-Net pools four times: the input side must be a multiple of 16."""
        require_divisible(cls.name, profile.image_size, 16, "the U-Net pools four times")

    def build_network(self) -> nn.Module:
        return UNet(in_channels=1, out_channels=1, base=int(self.hparams["base_channels"]))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
