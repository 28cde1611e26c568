"""`swinunet` ("Swin-Unet", P1): the Swin-Unet baseline of the MLN-net paper's Table 1.

Page: docs/methods/swinunet.md (reference: HuCaoFighting/Swin-Unet). Network: `SwinUnet`
(methods/networks/swin_unet.py), 1-channel input, one output logit. Choices:

- Loss: Swin-Unet's 0.4*CE + 0.6*Dice becomes 0.4*BCE + 0.6*soft Dice on one logit channel
  (the original's Dice is a 2-class softmax Dice with squared denominators; with one sigmoid
  channel we use the harness's linear soft Dice, as every other baseline does).
- Optimiser: the shared Adam protocol of `SingleNetworkMethod` (MLN-net paper 4.1.3: all methods
  Adam, weight decay 1e-3). The original recipe (SGD momentum 0.9, weight decay 1e-4, base lr
  0.01-0.05 with poly decay, batch 24, 150 epochs at 224 px) is not used, to keep one fair
  protocol.
- `paper`: C=96, depths [2,2,18,2], heads [3,6,12,24], window 8 at 512 px (84.0M parameters, the
  config closest to the 83.6M MLN-net reports; window 7 cannot tile the 128/64/32/16 grids),
  drop-path 0.2 as the repo's yaml. `quick` (128 px): C=48, depths [2,2,2,2], window 4 (grids
  32/16/8/4; 6.8M parameters), drop-path 0.1 since the model is small and trained briefly.
  Sized by timing on the 2-core CPU: 0.39 s per batch-8 training step vs 0.31 s for the quick
  U-Net in the same process (C=24 would take 0.23 s but has a quarter of the parameters).
  `smoke` (32 px): C=12, window 2.
- Initialisation (`pretrained`): `imagenet` by default at `paper`, as Swin-Unet's and MLN-net's
  released configs start from ImageNet Swin weights: timm's Swin of the same width, depths and
  heads (the paper config is Swin-S's shape), read through timm from the Hugging Face cache
  (methods/networks/timm_weights.py), bias tables resized to our window and mirrored into the
  decoder as Swin-Unet's `load_from` does. `formula` (the smoke and quick default: no internet,
  no GPU) loads the data-free weights of `bench pretrain` (methods/networks/formula_weights.py):
  the whole network, decoder and head included, pretrained on formula-drawn shapes. `none`
  trains from scratch; a file path loads formula weights or a local ImageNet Swin checkpoint.

List hparams can be overridden like the others: `--set depths=[2,2,6,2] num_heads=[3,6,12,24]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.errors import UserError
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import SingleNetworkMethod
from methods.losses import bce_dice_loss
from methods.networks.formula_weights import (
    init_formula,
    is_formula_file,
    rebuild_command,
    weights_for_config,
)
from methods.networks.swin_pretrained import (
    load_swin_imagenet,
    load_swin_pretrained,
    swin_imagenet_arch_for,
)
from methods.networks.swin_unet import SwinUnet, check_shape
from methods.networks.timm_weights import (
    check_imagenet_available,
    init_kind,
    pretrained_hparam,
)

#: Swin-Unet's loss weights: 0.4 * cross-entropy + 0.6 * Dice (trainer.py of the original).
BCE_WEIGHT, DICE_WEIGHT = 0.4, 0.6


@register_method("swinunet", display_name="Swin-Unet", group="P1",
                 citation="Cao et al. Swin-Unet: Unet-like pure Transformer for medical image "
                          "segmentation. ECCV Workshops 2022")
class SwinUnetMethod(SingleNetworkMethod):
    """Swin-Unet from scratch (or from a local ImageNet Swin file), 0.4 BCE + 0.6 soft Dice."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            # No random draw: the width is architecture, fixed by the ImageNet Swin that the
            # paper profile loads (a drawn 24 or 48 has no pretrained weights to start from).
            HParam("embed_dim", {"smoke": 12, "quick": 48, "paper": 96}, None,
                   "token width C of the first stage (stage i has C*2^i)",
                   valid=Valid.integer(1, 1024)),
            HParam("depths", {"smoke": [2, 2, 2, 2], "quick": [2, 2, 2, 2],
                              "paper": [2, 2, 18, 2]}, None,
                   "Swin blocks per encoder stage; the decoder mirrors them",
                   valid=Valid.int_list(2, 8, 1, 64)),
            HParam("num_heads", [3, 6, 12, 24], None, "attention heads per stage",
                   valid=Valid.int_list(2, 8, 1, 256)),
            HParam("window_size", {"smoke": 2, "quick": 4, "paper": 8}, None,
                   "attention window; must divide every token grid larger than it",
                   valid=Valid.integer(1, 256)),
            HParam("patch_size", 4, None, "patch-embedding stride (4 in Swin-Unet)",
                   valid=Valid.integer(1, 64)),
            HParam("mlp_ratio", 4.0, None, "MLP hidden width / token width",
                   valid=Valid.number(0.0, 64.0, low_open=True)),
            HParam("drop_path_rate", {"smoke": 0.1, "quick": 0.1, "paper": 0.2},
                   lambda r: float(r.choice([0.0, 0.1, 0.2])), "stochastic depth (max rate)",
                   valid=Valid.number(0.0, 1.0, high_open=True)),
            pretrained_hparam("timm's ImageNet Swin of the same shape", formula=True),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """Stages vs heads, head divisibility and the window vs every token grid."""
        check_swin_config(cls.name, hparams, profile.image_size)

    @classmethod
    def formula_network(cls, hparams: dict[str, Any], image_size: int) -> nn.Module:
        """The Swin-Unet these hparams describe, at random init: what `bench pretrain` trains."""
        hp = hparams
        try:
            return SwinUnet(
                img_size=image_size, patch_size=_int(hp, "patch_size"), in_chans=1,
                num_classes=1, embed_dim=_int(hp, "embed_dim"), depths=_int_list(hp, "depths"),
                num_heads=_int_list(hp, "num_heads"), window_size=_int(hp, "window_size"),
                mlp_ratio=float(hp["mlp_ratio"]), drop_path_rate=float(hp["drop_path_rate"]),
                qkv_bias=True)
        except ValueError as err:
            raise UserError(f"swinunet hparams: {err}") from err

    def build_network(self) -> nn.Module:
        net = SwinUnetMethod.formula_network(self.hparams, self.image_size)
        self.init = init_swin_unet(net, self.hparams["pretrained"], self.image_size,
                                   type(self).name)
        return net

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks, bce_weight=BCE_WEIGHT, dice_weight=DICE_WEIGHT)


def check_swin_config(method: str, hp: dict[str, Any], image_size: int) -> None:
    """UserError naming the hparams when the Swin-Unet shape does not fit `image_size`, or
    when the weights it is to start from cannot be had (checked before any data is made)."""
    try:
        check_shape(image_size, _int(hp, "patch_size"), _int(hp, "embed_dim"),
                    _int_list(hp, "depths"), _int_list(hp, "num_heads"),
                    _int(hp, "window_size"))
    except ValueError as err:
        text = str(err).replace(f"image size {image_size}", f"image_size={image_size}")
        where = "" if "image_size=" in text else f" (image_size={image_size})"
        raise UserError(f"{method} hparams: {text}{where}") from err
    kind = init_kind(hp.get("pretrained"))
    if kind == "imagenet":  # before any data is generated
        check_imagenet_available(swin_imagenet_arch_for(
            _int(hp, "embed_dim"), _int_list(hp, "depths"), _int_list(hp, "num_heads")))
    elif kind == "formula":
        weights_for_config(SwinUnetMethod, hp, image_size, rebuild_command(method, image_size))


def init_swin_unet(net: nn.Module, pretrained: Any, image_size: int, method: str) -> str:
    """Initialise `net` as the `pretrained` hparam says; returns run.json's `init` text.

    A file is either formula weights (`bench pretrain`'s format: the whole network, strictly)
    or an ImageNet Swin checkpoint (the encoder, mirrored into the decoder)."""
    kind = init_kind(pretrained)
    if kind == "scratch":
        return "scratch"
    if kind == "imagenet":
        return f"imagenet (timm {load_swin_imagenet(net)['arch']})"
    if kind == "formula" or is_formula_file(str(pretrained)):
        return init_formula(net, str(pretrained), image_size, method)
    load_swin_pretrained(net, str(pretrained))
    return f"file {Path(str(pretrained)).name}"


def _int(hp: dict[str, Any], key: str) -> int:
    """A positive integer hparam, or a one-line UserError naming it."""
    value = hp[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"swinunet hparams: {key} must be a positive integer, got {value!r}")
    return value


def _int_list(hp: dict[str, Any], key: str) -> list[int]:
    """A list-of-positive-integers hparam (e.g. --set depths=[2,2,2,2]), or a UserError."""
    value = hp[key]
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise UserError(f"swinunet hparams: {key} must be a list of positive integers such as "
                        f"[2,2,2,2], got {value!r}")
    return list(value)
