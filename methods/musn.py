"""`musn` ("Musn", P2): local Laplacian enhancement, FCM suspicious regions, modified U-Net.

Hossain (J. King Saud Univ. CIS 2022); page: docs/methods/musn.md; MLN-net paper
4.2.2 ("augments FFDM data via a local Laplacian filter and C-means clustering algorithm to
select the region of interest, followed by a modified Unet"). Pipeline, all inside the method
on the harness's [0, 1] images:

1. Enhancement: the local Laplacian filter (`methods.local_laplacian`, Paris et al. 2011,
   sampled form) with sigma_r = 0.2 (within 0.1-0.3: calcification contrast is below
   it and is boosted, the breast/background edge is above it and kept), detail exponent
   alpha = 0.5 (< 1 enhances detail), beta = 1 (tone range kept). The enhanced image is what
   the network sees, in training and at test time. The fast form samples the remapping at
   `llf_samples` intensities: 16 at paper, 8 at quick (half the cost; at 8 samples the largest
   deviation from the exact filter on a 16-px test image is about 0.05, at 128 below 0.005).
2. Suspicious regions: fuzzy C-means (`methods.fcm`, c = 4, m = 2, error 1e-5) on the enhanced
   intensities; the brightest cluster, dilated, is the candidate mask. c = 4 rather than 3
   (3-4 usual) so that the brightest cluster isolates bright specks rather than all dense tissue.
3. Positive patches: the paper trains only on FCM-selected patches that contain MCCs. Each
   training image yields one `patch_size` crop centred on a random candidate pixel inside the
   lesion mask (any lesion pixel if FCM missed the lesion). Images without a lesion are replaced
   by a positive image of the same batch (so every step sees positives only, as the paper's
   training set); a batch with no positive image at all trains on patches around FCM
   candidates (negative patches) rather than skipping the step. All draws use the harness
   generator. The patch is half the image side (64 px at quick, 256 px at paper); the paper's
   patch size is unpublished.
4. Network: `methods.networks.musn.MusnUNet` (U-Net, 32 base filters, BN, dropout 0.5 in the
   bottleneck, 7.76M parameters), BCE + soft Dice, Adam (shared fair protocol).

Test protocol identical to the other methods: the whole enhanced image in, a probability map
out. `fcm_gate` (default off, so the reported numbers are the plain network's) zeroes
predictions outside the dilated FCM mask; `case_info` records each image's candidate-area
fraction either way. Because of 3, the quick profile keeps the published width 32: a 64-px
patch at width 32 costs about what the U-Net's 128-px image at width 16 costs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.errors import UserError
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import CHANNELS_RANGE, Batch, SingleNetworkMethod, require_divisible
from methods.fcm import brightest_cluster_mask
from methods.local_laplacian import local_laplacian_filter
from methods.losses import bce_dice_loss
from methods.networks.musn import MusnUNet


def check_patch_size(patch: int, image_size: int) -> None:
    """UserError unless the training patch is a multiple of 16 no larger than the image."""
    if patch > image_size or patch % 16:
        raise UserError(f"musn: patch_size {patch} must be a multiple of 16 and at most the "
                        f"image size {image_size}")


@register_method("musn", display_name="Musn", group="P2",
                 citation="Hossain. Microcalcification segmentation using modified U-net "
                          "segmentation network from mammogram images. J King Saud Univ CIS 2022")
class MusnMethod(SingleNetworkMethod):
    """Enhanced images, FCM-selected positive patches, a modified U-Net."""

    def __init__(self, hparams: dict[str, Any], device: torch.device, image_size: int,
                 amp: bool = False) -> None:
        check_patch_size(int(hparams["patch_size"]), image_size)
        super().__init__(hparams, device, image_size, amp)
        self._info: list[dict[str, Any]] = []

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The modified U-Net pools four times; patches must fit the image and the pools."""
        require_divisible("musn", profile.image_size, 16, "the U-Net pools four times")
        check_patch_size(hparams["patch_size"], profile.image_size)

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("base_channels", {"smoke": 4, "quick": 32, "paper": 32},
                   lambda r: int(r.choice([16, 32, 64])), "width of the first U-Net level",
                   valid=CHANNELS_RANGE),
            HParam("patch_size", {"smoke": 16, "quick": 64, "paper": 256}, None,
                   "side of the positive training patches (multiple of 16)",
                   valid=Valid.integer(16, 8192)),
            HParam("llf_sigma_r", 0.2, lambda r: float(r.uniform(0.1, 0.3)),
                   "local Laplacian filter: detail/edge threshold on [0, 1] intensities",
                   valid=Valid.number(0.0, 1.0, low_open=True)),
            HParam("llf_alpha", 0.5, lambda r: float(r.uniform(0.25, 0.75)),
                   "local Laplacian filter: detail exponent (< 1 enhances)",
                   valid=Valid.number(0.0, 4.0, low_open=True)),
            HParam("llf_samples", {"smoke": 4, "quick": 8, "paper": 16}, None,
                   "local Laplacian filter: intensity samples of the fast algorithm",
                   valid=Valid.integer(2, 256)),
            HParam("fcm_clusters", 4, lambda r: int(r.choice([3, 4])), "FCM clusters c",
                   valid=Valid.integer(2, 16)),
            HParam("fcm_dilation", {"smoke": 1, "quick": 2, "paper": 8}, None,
                   "dilation radius (px) of the brightest FCM cluster",
                   valid=Valid.integer(0, 256)),
            HParam("fcm_gate", False, None,
                   "zero test predictions outside the dilated FCM candidate mask",
                   valid=Valid.flag()),
        ]

    def build_network(self) -> nn.Module:
        return MusnUNet(in_channels=1, base=int(self.hparams["base_channels"]))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)

    # --- the Musn pipeline ------------------------------------------------------------------
    def enhance(self, images: torch.Tensor) -> torch.Tensor:
        """Local Laplacian enhancement of (B,1,H,W) images in [0, 1], clipped to [0, 1]."""
        out = local_laplacian_filter(images.float(), sigma_r=float(self.hparams["llf_sigma_r"]),
                                     alpha=float(self.hparams["llf_alpha"]), beta=1.0,
                                     samples=int(self.hparams["llf_samples"]))
        return out.clamp(0.0, 1.0)

    def candidates(self, enhanced: torch.Tensor) -> torch.Tensor:
        """Dilated brightest-FCM-cluster mask (B,1,H,W) bool of enhanced images."""
        return brightest_cluster_mask(enhanced, c=int(self.hparams["fcm_clusters"]),
                                      dilation=int(self.hparams["fcm_dilation"]))

    def make_view(self, group: str, batch: Batch, gen: torch.Generator) -> Batch:
        """One positive patch of the enhanced image per batch slot (see module docstring)."""
        enhanced = self.enhance(batch["image"])
        cand = self.candidates(enhanced).cpu()
        masks = batch["mask"]
        lesion = masks.cpu() > 0.5
        positive = lesion.flatten(1).any(1)
        n, (height, width), p = len(masks), masks.shape[-2:], int(self.hparams["patch_size"])
        pos_idx = positive.nonzero().flatten()
        images_out, masks_out = [], []
        for i in range(n):
            src = i
            if len(pos_idx) and not bool(positive[i]):
                src = int(pos_idx[torch.randint(len(pos_idx), (1,), generator=gen)])
            pool = cand[src, 0] & lesion[src, 0] if bool(positive[src]) else cand[src, 0]
            if not bool(pool.any()):
                pool = lesion[src, 0] if bool(positive[src]) else torch.ones_like(pool)
            coords = pool.nonzero()
            r, c = coords[int(torch.randint(len(coords), (1,), generator=gen))].tolist()
            top = min(max(r - p // 2, 0), height - p)
            left = min(max(c - p // 2, 0), width - p)
            images_out.append(enhanced[src, :, top:top + p, left:left + p])
            masks_out.append(masks[src, :, top:top + p, left:left + p])
        return {"image": torch.stack(images_out), "mask": torch.stack(masks_out)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Whole enhanced image in, probability map (B,1,H,W) out; FCM-gated if asked."""
        enhanced = self.enhance(images)
        probs = super().predict(enhanced)
        cand = self.candidates(enhanced)
        self._info = [{"fcm_area": round(float(a), 4)}
                      for a in cand.float().flatten(1).mean(1).cpu()]
        if bool(self.hparams["fcm_gate"]):
            probs = probs * cand.to(probs.dtype)
        return probs

    def case_info(self) -> list[dict[str, Any]]:
        return self._info
