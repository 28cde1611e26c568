"""`canet` ("CA-net", P2): 2D intra-slice features fused across slices by anisotropic 3D convs.

Zheng et al. (IEEE JBHI 2020); page: docs/methods/canet.md; network in
`methods.networks.canet` (2.97M parameters at width 32). The MLN-net paper (4.2.2) ran it on 2D
images replicated along a third dimension; we do the same with D = `slices` copies (default 3)
whenever a domain has no volumes. When it does, the harness hands us the D slices centred on
each image (`context_slices`, `DomainData.neighbour_index`) and we use those real neighbours,
in training and at evaluation; `case_info` records per image "adjacent" or "replicated" so the
per-case results say which input each score came from. At a volume's first or last slice the
missing neighbour is the edge slice repeated (still flagged "adjacent").

Caveats (report with results): on replicated input the inter-slice branch sees no new
information, so the model behaves as a 2D network with re-parametrised kernels. The synthetic
`dbt` domain stores 3 slices per view 3 mm apart (`slice_step_mm = 3`, 1 mm thick slices), so
its "neighbours" are the stored slices 3 mm above and below, not the directly adjacent 1-mm
slices of a full reconstruction. Loss BCE + soft Dice with Adam: the shared fair protocol, as
no segmentation recipe exists. The quick profile narrows the width to 8: with D = 3 slices
through the encoder and the 3D fusion, a 128-px batch-8 step then costs about 1.4x a quick U-Net
step (width 16: 2.9x; measured interleaved on the shared CPU); `paper` uses 32.
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
from methods.losses import bce_dice_loss
from methods.networks.canet import CANet


@register_method("canet", display_name="CA-net", group="P2",
                 citation="Zheng et al. 3D context-aware convolutional neural network for false "
                          "positive reduction in clustered microcalcifications detection. "
                          "IEEE JBHI 2020")
class CanetMethod(SingleNetworkMethod):
    """CA-net on real adjacent slices when the domain has them, replicated images otherwise."""

    context_slices = 3  # class default; each instance uses its `slices` hparam

    def __init__(self, hparams: dict[str, Any], device: torch.device, image_size: int,
                 amp: bool = False) -> None:
        depth = int(hparams["slices"])
        if depth < 1:
            raise UserError(f"canet: slices must be >= 1, got {depth}")
        super().__init__(hparams, device, image_size, amp)
        self.context_slices = depth  # type: ignore[misc]  # read per instance by the harness
        self._info: list[dict[str, Any]] = []

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("base_channels", {"smoke": 4, "quick": 8, "paper": 32},
                   lambda r: int(r.choice([16, 32])), "width of the first encoder stage",
                   valid=CHANNELS_RANGE),
            HParam("slices", 3, None, "D: slices per input (real neighbours or replicated)",
                   valid=Valid.integer(1, 64)),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The encoder pools three times: the input side must be a multiple of 8."""
        require_divisible(cls.name, profile.image_size, 8, "the encoder pools three times")

    def build_network(self) -> nn.Module:
        return CANet(base=int(self.hparams["base_channels"]))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)

    def slice_stack(self, batch: Batch) -> tuple[torch.Tensor, list[bool]]:
        """The (B,D,H,W) slice stack for a batch and, per image, whether it is real slices."""
        images = batch["image"]
        depth = self.context_slices
        slices = batch.get("slices")
        if slices is not None and slices.shape[1] == depth:
            real = batch.get("slices_real")
            flags = [bool(v) for v in real.cpu()] if real is not None else [False] * len(images)
            return slices.to(images.dtype), flags
        return images.expand(-1, depth, -1, -1), [False] * len(images)

    def network_input(self, batch: Batch) -> torch.Tensor:
        """Training feeds the network the slice stack, not the bare image."""
        return self.slice_stack(batch)[0]

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        """Probabilities from the batch's real neighbours if present, else replicated."""
        stack, flags = self.slice_stack(batch)
        self.network.eval()
        with self.autocast():
            logits = self.network(stack)
        self._info = [{"slices": "adjacent" if f else "replicated"} for f in flags]
        return torch.sigmoid(logits.float())

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities for bare images: the slice-replicated input."""
        return self.predict_batch({"image": images})

    def case_info(self) -> list[dict[str, Any]]:
        return self._info
