"""`iadml` ("Iadml", P2): a shallow 4-conv network with inversion augmentation.

Wichakam, Chayakulkheeree & Vateekul (ICDIP 2018); page: docs/methods/iadml.md. The
original classifies DBT volumes with a 4-layer 3D ConvNet; we use a 2D fully
convolutional form (`methods.networks.iadml.IadmlNet`, 0.39M parameters at width 32), one
sigmoid output with BCE + soft Dice, Adam: the shared fair protocol, since no recipe for this
task was published.

Inversion augmentation (choice where the paper is silent: offline doubling or on-the-fly): each
training image is replaced by its grayscale inversion 1 - x (`methods.augment.Inversion`, the
same transform as MLN-net's 255 - x) with probability `invert_prob` = 0.5, drawn per image from
the harness generator passed to `make_view`, so runs repeat exactly. In expectation this is the
offline doubled set (every image and its inversion equally often) without doubling the epoch
length, which keeps the training budget equal to the other methods'. Prediction never inverts.
The published width (32) is kept in every profile but smoke: the network is far cheaper than the
U-Net, so the quick profile needs no narrowing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.augment import Inversion
from methods.base import CHANNELS_RANGE, Batch, SingleNetworkMethod, require_divisible
from methods.losses import bce_dice_loss
from methods.networks.iadml import IadmlNet


@register_method("iadml", display_name="Iadml", group="P2",
                 citation="Wichakam, Chayakulkheeree, Vateekul. Deep multi-label 3D ConvNet for "
                          "breast cancer diagnosis in DBT with inversion augmentation. ICDIP 2018")
class IadmlMethod(SingleNetworkMethod):
    """Shallow FCN trained on a mix of original and intensity-inverted images."""

    inversion = Inversion(peak="range", background="invert")

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("base_channels", {"smoke": 8, "quick": 32, "paper": 32},
                   lambda r: int(r.choice([16, 32, 64])), "width of the first of the 4 convs",
                   valid=CHANNELS_RANGE),
            HParam("invert_prob", 0.5, lambda r: float(r.uniform(0.25, 0.75)),
                   "probability that a training image is replaced by its inversion 1 - x",
                   valid=Valid.number(0.0, 1.0)),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The network pools three times: the input side must be a multiple of 8."""
        require_divisible(cls.name, profile.image_size, 8, "the network pools three times")

    def build_network(self) -> nn.Module:
        return IadmlNet(in_channels=1, base=int(self.hparams["base_channels"]))

    def make_view(self, group: str, batch: Batch, gen: torch.Generator) -> Batch:
        """Invert a random subset of the batch (each image with probability invert_prob)."""
        images = batch["image"]
        flip = torch.rand(images.shape[0], generator=gen) < float(self.hparams["invert_prob"])
        flip = flip.to(images.device).view(-1, 1, 1, 1)
        return {**batch, "image": torch.where(flip, self.inversion(images), images)}

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
