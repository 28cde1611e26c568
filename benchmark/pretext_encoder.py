"""Encoder-only pretraining: which part of a network is its encoder, and a classifier on it.

The `fractals` pretext (benchmark/fractals.py) trains only a network's encoder, as ImageNet or
FractalDB pretraining does: `EncoderClassifier` runs the encoder, averages its deepest feature
map and classifies it with one linear layer, which is dropped afterwards. The weights file
then holds the whole network, so that it loads through the same strict path as every formula
file: the encoder as pretrained, the decoder at its random init except where the method's own
ImageNet path fills it too (Swin-Unet mirrors each encoder stage's Swin blocks into its decoder
twin, as its `load_from` does with ImageNet weights).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmark.errors import UserError
from methods.networks.swin_pretrained import mirror_into_decoder
from methods.networks.swin_unet import SwinUnet
from methods.networks.unet import UNet

#: The networks with an encoder hook (named in the error for any other).
SUPPORTED = ("SwinUnet (swinunet, mlnnet, basenet, basenet-s and the MLN-net variants)",
             "UNet (unet, bigaug)")


def _swin_features(net: SwinUnet) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        x = net.patch_embed(x)
        for stage in net.layers:
            x = stage(x)  # timm's stage: patch merging, then the Swin blocks
        return net.norm(x).mean(dim=(1, 2))  # NHWC -> (B, C)
    return run


def _unet_features(net: UNet) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        for block in net.down:
            x = net.pool(block(x))
        return net.bottleneck(x).mean(dim=(2, 3))
    return run


def encoder_of(net: nn.Module, method: str) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                     int, tuple[str, ...]]:
    """(features: images -> (B, C), C, the state-dict prefixes of the encoder) for `net`;
    UserError when the network has no encoder hook."""
    if isinstance(net, SwinUnet):
        return _swin_features(net), int(net.norm.normalized_shape[0]), (
            "patch_embed.", "layers.", "norm.")
    if isinstance(net, UNet):
        return _unet_features(net), _bottleneck_width(net), ("down.", "bottleneck.")
    raise UserError(f"bench pretrain --pretext fractals: the network of '{method}' "
                    f"({type(net).__name__}) has no encoder hook; networks that have one: "
                    f"{'; '.join(SUPPORTED)}")


def _bottleneck_width(net: UNet) -> int:
    """The bottleneck's output channels (its last conv's)."""
    convs = [m for m in net.bottleneck.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class EncoderClassifier(nn.Module):
    """`net`'s encoder, global average pooling and a linear classifier over `classes`."""

    def __init__(self, net: nn.Module, classes: int, method: str) -> None:
        super().__init__()
        self.net = net
        self._features, width, self.prefixes = encoder_of(net, method)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x))


def finished_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict written after an encoder-only pretraining: `net`'s own, with a Swin-Unet's
    decoder blocks mirrored from the pretrained encoder (what its ImageNet path does)."""
    state = dict(net.state_dict())
    if isinstance(net, SwinUnet):
        encoder = {k: v for k, v in state.items() if k.startswith("layers.")}
        for k, v in mirror_into_decoder(encoder, net.num_layers).items():
            if k in state and state[k].shape == v.shape:
                state[k] = v
    return state
