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
from benchmark.valid import Valid
from methods.base import CHANNELS_RANGE, SingleNetworkMethod, require_divisible
from methods.losses import bce_dice_loss
from methods.networks.formula_weights import (
    FORMULA,
    init_formula,
    rebuild_command,
    weights_for_config,
)
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
            # the U-Net paper trains from scratch; formula weights are for the fairness row
            # (what the data-free pretraining alone does to a CNN)
            HParam("pretrained", "none", None,
                   "initialisation: none (from scratch, as the U-Net paper) | formula (bench "
                   "pretrain's data-free weights) | the path of a formula weights file",
                   valid=Valid.choice_or_path("", "none", FORMULA)),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The U-Net pools four times: the input side must be a multiple of 16; formula weights
        must exist before any data is made."""
        require_divisible(cls.name, profile.image_size, 16, "the U-Net pools four times")
        if str(hparams.get("pretrained") or "").strip().lower() == FORMULA:
            weights_for_config(cls, hparams, profile.image_size,
                               rebuild_command(cls.name, profile.image_size))

    @classmethod
    def formula_network(cls, hparams: dict[str, Any], image_size: int) -> nn.Module:
        """The U-Net these hparams describe, at random init: what `bench pretrain` trains."""
        return UNet(in_channels=1, out_channels=1, base=int(hparams["base_channels"]))

    def build_network(self) -> nn.Module:
        net = self.formula_network(self.hparams, self.image_size)
        pretrained = str(self.hparams.get("pretrained") or "none")
        if pretrained.strip().lower() not in ("", "none"):
            self.init = init_formula(net, pretrained, self.image_size, type(self).name)
        return net

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
