"""`resnet` ("Resnet", P1): a U-Net decoder on a ResNet encoder (MLN-net Table 1 cites He 2016).

Page: docs/methods/resnet.md. ResNet is a classifier and the MLN-net paper names no
decoder, so we take the common choice: `smp.Unet` with a resnet34 encoder
(24.43M parameters with one input channel and one class; resnet50 via the `encoder` hparam,
32.52M). No recipe is published for this task, so it shares the U-Net's protocol (BCE + soft
Dice, Adam with weight decay 1e-3 as in MLN-net 4.1.3) and only the architecture differs.
Initialisation (`pretrained`): `imagenet` at `paper` (the torchvision ImageNet ResNet that smp's
own `encoder_weights="imagenet"` uses, read through timm as `resnet34.tv_in1k` from the Hugging
Face cache, see methods/networks/timm_weights.py); `formula` at smoke/quick (the data-free
weights of `bench pretrain`, shipped in methods/pretrained/: the offline stand-in for the
ImageNet start, as for the Swin family; nothing is downloaded); `none` from scratch; or a local
state dict path (an ImageNet encoder, as `encoder_weights_path`, kept for old commands) or a
formula weights file.
`paper` is the documented model (resnet34, decoder 256..16); `quick` uses
resnet18 with the decoder halved (128..8, 12.45M), since a ResNet's widths are fixed by its
definition and depth is the only knob: measured on 2 CPU threads at 128 px, batch 8, a step costs
1.01x the quick U-Net's (resnet34 with the halved decoder: 1.84x).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file as load_safetensors
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
from methods.networks.timm_weights import (
    check_imagenet_available,
    create_pretrained,
    init_kind,
    pretrained_hparam,
)

ENCODERS = ("resnet18", "resnet34", "resnet50")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local ImageNet ResNet state dict (torchvision/timm key names) into `encoder`.

    See `load_encoder_state`; an unreadable file is a UserError naming it.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"encoder_weights_path '{file}': no such file")
    try:
        state = (load_safetensors(file) if file.suffix == ".safetensors"
                 else torch.load(file, map_location="cpu", weights_only=True))
    except Exception as exc:  # any unreadable or unsafe file is the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"encoder_weights_path '{file}': cannot be read ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"encoder_weights_path '{file}': expected a state dict")
    load_encoder_state(encoder, state, f"encoder_weights_path '{file}'")


def load_encoder_state(encoder: nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    """Copy an ImageNet ResNet state dict (torchvision/timm key names) into smp's `encoder`.

    The classifier (`fc.*`) is dropped and an RGB first convolution is summed over its input
    channels, which is what smp itself does for `in_channels=1`. Any other mismatch is a
    UserError naming `label` (the file or timm model).
    """
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith("fc.")}
    conv1 = state.get("conv1.weight")
    expected = encoder.state_dict().get("conv1.weight")
    if isinstance(conv1, torch.Tensor) and expected is not None and \
            conv1.shape[1] != expected.shape[1] and expected.shape[1] == 1:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise UserError(f"{label}: does not fit the encoder ({first})") from None


@register_method("resnet", display_name="Resnet", group="P1",
                 citation="He, Zhang, Ren, Sun. Deep residual learning for image recognition. "
                          "CVPR 2016")
class ResnetMethod(SingleNetworkMethod):
    """smp.Unet on a ResNet encoder (resnet34 at `paper`, resnet18 at `quick`), BCE + soft Dice."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("encoder", {"smoke": "resnet18", "quick": "resnet18", "paper": "resnet34"},
                   lambda r: str(r.choice(list(ENCODERS))),
                   "ResNet encoder: resnet18, resnet34 (24.43M, paper) or resnet50 (32.52M)",
                   valid=Valid.choice(*ENCODERS)),
            HParam("decoder_channels",
                   {"smoke": [16, 8, 8, 8, 8], "quick": [128, 64, 32, 16, 8],
                    "paper": [256, 128, 64, 32, 16]},
                   None, "widths of the five U-Net decoder stages (smp default 256..16)",
                   valid=Valid.int_list(5, 5, 1, 4096)),
            HParam("encoder_weights_path", "", None,
                   "optional local ImageNet ResNet state dict (nothing is downloaded)",
                   valid=Valid.path()),
            pretrained_hparam("timm's <encoder>.tv_in1k encoder weights",
                              "a local state dict path or formula weights file", formula=True),
        ]

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """ImageNet or formula weights that cannot be had offline fail before any data is
        prepared."""
        super().check_config(hparams, profile)
        kind = init_kind(hparams.get("pretrained"))
        if kind == "imagenet":
            check_imagenet_available(f"{hparams['encoder']}.tv_in1k")
        elif kind == "formula":
            weights_for_config(cls, hparams, profile.image_size,
                               rebuild_command(cls.name, profile.image_size))

    @classmethod
    def formula_network(cls, hparams: dict[str, Any], image_size: int) -> nn.Module:
        """The smp.Unet these hparams describe, at random init: what `bench pretrain` trains."""
        encoder = str(hparams["encoder"])
        if encoder not in ENCODERS:
            raise UserError(f"resnet: unknown encoder '{encoder}'; known: {', '.join(ENCODERS)}")
        decoder = [int(c) for c in hparams["decoder_channels"]]
        if len(decoder) != 5 or min(decoder) < 1:
            raise UserError(f"resnet: decoder_channels must be 5 positive widths, got {decoder}")
        # The decoder's conv-BN-ReLU blocks are smp's default (decoder_use_norm="batchnorm").
        return smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=1,
                        decoder_channels=decoder)

    def build_network(self) -> nn.Module:
        encoder = str(self.hparams["encoder"])
        net = self.formula_network(self.hparams, self.image_size)
        if self.hparams.get("encoder_weights_path"):
            load_encoder_weights(net.encoder, self.hparams["encoder_weights_path"])
            self.init = f"file {Path(str(self.hparams['encoder_weights_path'])).name}"
        kind = init_kind(self.hparams.get("pretrained", "none"))
        if kind == "imagenet":
            arch = f"{encoder}.tv_in1k"
            state = create_pretrained(arch).state_dict()
            load_encoder_state(net.encoder, state, f"timm '{arch}'")
            self.init = f"imagenet (timm {arch})"
        elif kind == "formula" or (kind == "file" and is_formula_file(
                str(self.hparams["pretrained"]))):  # the whole network, strictly
            self.init = init_formula(net, str(self.hparams["pretrained"]), self.image_size,
                                     type(self).name)
        elif kind == "file":
            load_encoder_weights(net.encoder, str(self.hparams["pretrained"]))
            self.init = f"file {Path(str(self.hparams['pretrained'])).name}"
        return net

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return bce_dice_loss(logits, masks)
