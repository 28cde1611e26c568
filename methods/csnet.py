"""`csnet` ("CS-net", P2): the context-sensitive local + context network of Wang & Yang (2018).

Page: docs/methods/csnet.md (no public code; the original is an MC detector, so this is
our fully convolutional dual-branch form: local branch at full resolution, ~9 px
receptive field; context branch on a coarser view; fused by 1x1 convolutions). The MLN-net
paper (4.2.2) fed CS-net 512x512 and 1024x1024 inputs, i.e. a context view covering twice the
local patch's side. The embedded synthetic domains provide no larger field of view, so the
context branch sees the same image average-pooled by `context_scale` = 2 (the paper's 1024/512
ratio; 4 is available via the hparam); its receptive field is then
32 px on the pooled grid, 64 px at full resolution, against 9 px for the local branch. With real
data that offers a larger field of view, `CSNet.forward(x, context, context_fov)` is where it
plugs in: pass the centred context image and its field-of-view ratio (e.g. 2.0).

No recipe is published for our task, so it uses the shared protocol (BCE + soft Dice, Adam with
weight decay 1e-3, the harness's flips and rot90). Widths: `paper` uses the full widths
(local 32-32-64-64, context 32-64-128, head 64: 0.36M parameters); `quick` scales every width by
`width_scale` = 0.5 because the full-resolution local branch dominates the CPU cost: measured on
2 CPU threads at 128 px, batch 8, a step then costs 1.13x the quick U-Net's (3.5x at full width).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.errors import UserError
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import SingleNetworkMethod
from methods.losses import bce_dice_loss
from methods.networks.csnet import CSNet

LOCAL_WIDTHS = (32, 32, 64, 64)
CONTEXT_WIDTHS = (32, 64, 128)
HEAD_WIDTH = 64


def check_csnet(scale: float, context_scale: int, image_size: int) -> None:
    """UserError unless the widths are positive and image_size fits the context branch."""
    if scale <= 0 or context_scale < 1:
        raise UserError(f"csnet: width_scale must be > 0 and context_scale >= 1, got "
                        f"{scale} and {context_scale}")
    need = context_scale * 4  # two max-pools inside the context branch
    if image_size % need:
        raise UserError(f"csnet: image_size {image_size} must be divisible by {need} "
                        f"(context_scale {context_scale} x two 2x2 pools)")


@register_method("csnet", display_name="CS-net", group="P2",
                 citation="Wang, Yang. A context-sensitive deep learning approach for "
                          "microcalcification detection in mammograms. Pattern Recognition 2018")
class CsnetMethod(SingleNetworkMethod):
    """Dual-branch CS-net with BCE + soft Dice."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("width_scale", {"smoke": 0.25, "quick": 0.5, "paper": 1.0},
                   lambda r: float(r.choice([0.5, 1.0])),
                   "multiplier on the full widths (local 32-32-64-64, context 32-64-128)",
                   valid=Valid.number(0.0, 16.0, low_open=True)),
            HParam("context_scale", 2, lambda r: int(r.choice([2, 4])),
                   "down-sampling of the image seen by the context branch",
                   valid=Valid.integer(1, 64)),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The context branch pools the context_scale-downsampled image twice."""
        check_csnet(hparams["width_scale"], hparams["context_scale"], profile.image_size)

    def build_network(self) -> nn.Module:
        scale = float(self.hparams["width_scale"])
        context_scale = int(self.hparams["context_scale"])
        check_csnet(scale, context_scale, self.image_size)

        def widths(ws: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(1, round(w * scale)) for w in ws)

        return CSNet(widths(LOCAL_WIDTHS), widths(CONTEXT_WIDTHS),
                     max(1, round(HEAD_WIDTH * scale)), context_scale=context_scale)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
