"""`mnet` ("M-net", P1): M-Net of Fu et al. (IEEE TMI 2018) with its published multi-output loss.

Page: docs/methods/mnet.md; reference HzFu/MNet_DeepCDR (`Model_MNet.py`,
`mnet_utils.py`, `Step_2_MNet_train.py`). Kept from the reference: the multi-scale input
pyramid, the four side outputs and the fused output (the mean of the side probabilities), the
Dice loss (2*sum(yp)+1)/(sum(y)+sum(p)+1) over the whole batch on each of the five outputs with
Keras `loss_weights` 0.1 x4 (sides) and 0.6 (fused), Glorot init, prediction from the fused
output. One label, so the two-class (disc/cup) Dice average reduces to one Dice.

Dropped or changed, with reasons:
- No polar transform: it maps a disc-centred fundus ROI to polar coordinates so the round
  disc/cup become layered bands; microcalcification clusters have no centre or radial prior,
  so the transform is meaningless for mammograms. Nor the fundus post-processing (largest
  connected component, ellipse fit): an image may hold several clusters.
- BatchNorm after every conv (the reference has none; `batchnorm=False` restores it). Measured
  on a GPU with toy speck images (600 Adam steps): the BN-free reference never left its initial
  Dice loss (0.988 at 128 px, 0.999 at 512 px; toy DSC ~0), because the Dice-only loss gives
  almost no gradient when clusters cover <1% of the image; with BN it reached toy DSC 0.83 at
  128 px. The departure is reported in docs/methods/mnet.md.
- Optimiser: the reference script *fine-tunes* a pre-trained model with SGD lr 1e-4 (momentum
  0.9, batch 1); the from-scratch recipe is not published, so M-net uses the shared protocol
  of MLN-net 4.1.3 (Adam, weight decay 1e-3, the harness batch) like every other baseline.
- The loss is reported as 1 - Dice (the reference minimises -Dice; same gradients).
- Widths: `paper` uses the reference widths (base 32: 32..512; 8.54M parameters at one input
  channel and one class without BN, 8.54M with); `quick` uses base 16 (2.14M): measured on
  2 CPU threads at 128 px, batch 8, a step costs 0.91x the quick U-Net's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import CHANNELS_RANGE, SingleNetworkMethod, require_divisible
from methods.networks.mnet import MNet

SIDE_WEIGHT = 0.1  # Keras loss_weights of side outputs 6..9 in Step_2_MNet_train.py
FUSED_WEIGHT = 0.6  # ... and of the fused output out10


def batch_dice(probs: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """The reference `dice_coef`: one soft Dice over the flattened batch, smoothed by 1."""
    p, y = probs.flatten(), masks.flatten()
    return (2.0 * (p * y).sum() + smooth) / (y.sum() + p.sum() + smooth)


def mnet_loss(side_logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted Dice losses of the four side outputs (0.1 each) and the fused output (0.6)."""
    probs = torch.sigmoid(side_logits)  # (B,4,H,W): one channel per side output
    terms: dict[str, torch.Tensor] = {}
    total = side_logits.new_zeros(())
    for k in range(probs.shape[1]):
        terms[f"side{6 + k}"] = 1.0 - batch_dice(probs[:, k:k + 1], masks)
        total = total + SIDE_WEIGHT * terms[f"side{6 + k}"]
    terms["fused"] = 1.0 - batch_dice(probs.mean(1, keepdim=True), masks)
    terms["loss"] = total + FUSED_WEIGHT * terms["fused"]
    return terms


@register_method("mnet", display_name="M-net", group="P1",
                 citation="Fu, Cheng, Xu, Wong, Liu, Cao. Joint optic disc and cup segmentation "
                          "based on multi-label deep network and polar transformation. "
                          "IEEE TMI 2018")
class MnetMethod(SingleNetworkMethod):
    """M-Net trained with the weighted multi-output Dice; predicts the fused output."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("base_channels", {"smoke": 4, "quick": 16, "paper": 32},
                   lambda r: int(r.choice([12, 16, 32])), "width of the first M-Net level",
                   valid=CHANNELS_RANGE),
            HParam("batchnorm", True, None,
                   "BatchNorm after every conv (not in the reference, which has none)",
                   valid=Valid.flag()),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """M-Net pools four times: the input side must be a multiple of 16."""
        require_divisible(cls.name, profile.image_size, 16, "M-Net pools four times")

    def build_network(self) -> nn.Module:
        return MNet(in_channels=1, out_channels=1, base=int(self.hparams["base_channels"]),
                    batchnorm=bool(self.hparams["batchnorm"]))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return mnet_loss(logits, masks)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.network.eval()
        with self.autocast():
            side_logits = self.network(images)
        return self.network.fuse(side_logits.float())
