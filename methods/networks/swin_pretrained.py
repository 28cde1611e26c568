"""Load ImageNet Swin weights into a `SwinUnet` (Swin-Unet's `load_from`): from timm or a file.

`load_swin_imagenet` asks timm for the ImageNet Swin whose width, depths and heads match the
model (`swin_tiny/small/base/large_patch4_window7_224.ms_in1k`, see `SWIN_IMAGENET`) through
`methods.networks.timm_weights` (Hugging Face cache, offline-safe), and copies its state dict
(timm layout) in. `load_swin_pretrained` reads a local file. Accepted files: the official
Microsoft checkpoint
(`{"model": state_dict}`, patch merging stored at the *end* of a stage) or a timm state dict
(merging at the start of a stage, as in `SwinUnet`). Like the original `load_from`, encoder
weights are copied and the encoder's Swin blocks of stage i are mirrored into decoder stage
`layers_up[n-1-i]` (the bottleneck stage has no decoder twin); keys whose shape still differs
are skipped. Two deliberate differences from the original, both lossless: relative-position
bias tables of another window size are resized with timm's `resize_rel_pos_bias_table` (the
original drops them), and a 3-channel patch embedding is summed over its input channels, which
is exactly what the original computes when `SwinUnet.forward` repeats a grey image to 3 channels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from timm.layers import resize_rel_pos_bias_table
from torch import nn

from benchmark.errors import UserError

_BUFFERS = ("relative_position_index", "attn_mask")
_TABLE = "relative_position_bias_table"


def read_swin_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor state dict in a Swin checkpoint file (UserError naming the path if unusable)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"pretrained weights '{file}': no such file")
    try:
        obj = (load_safetensors(file) if file.suffix == ".safetensors"
               else torch.load(file, map_location="cpu", weights_only=True))
    except Exception as err:  # pickle, zip and format errors all mean "not a checkpoint"
        raise UserError(f"pretrained weights '{file}': cannot be read as a torch checkpoint "
                        f"({type(err).__name__})") from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"pretrained weights '{file}': expected a state dict of tensors "
                        "(optionally under the key 'model')")
    return obj


def to_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-layout keys -> timm layout: `layers.i.downsample` becomes `layers.(i+1).downsample`.

    Non-persistent buffers (relative_position_index, attn_mask) are dropped. A timm state dict is
    returned unchanged apart from that (the same test timm's `checkpoint_filter_fn` uses).
    """
    official = "layers.0.downsample.reduction.weight" in state
    out = {}
    for k, v in state.items():
        if any(b in k for b in _BUFFERS):
            continue
        if official:
            k = re.sub(r"^layers\.(\d+)\.downsample",
                       lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
        out[k] = v
    return out


def mirror_into_decoder(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Add `layers_up.(n-1-i).blocks.*` copies of `layers.i.blocks.*` (Swin-Unet's mirroring)."""
    out = dict(state)
    for k, v in state.items():
        m = re.match(r"^layers\.(\d+)\.blocks\.(.*)$", k)
        if m and int(m.group(1)) < num_layers - 1:
            out[f"layers_up.{num_layers - 1 - int(m.group(1))}.blocks.{m.group(2)}"] = v
    return out


def _adapt(key: str, value: torch.Tensor, target: torch.Tensor,
           model: nn.Module) -> torch.Tensor:
    """Fit one tensor to the model's shape where that is lossless (grey patch embed, bias table)."""
    if key == "patch_embed.proj.weight" and value.shape[1] != target.shape[1] \
            and target.shape[1] == 1 and value.shape[0] == target.shape[0] \
            and value.shape[2:] == target.shape[2:]:
        return value.sum(dim=1, keepdim=True)  # == conv of the grey image repeated to N channels
    if key.endswith(_TABLE) and value.shape != target.shape and value.shape[1] == target.shape[1]:
        attn = model.get_submodule(key[: -len(_TABLE) - 1])
        return resize_rel_pos_bias_table(value, new_window_size=attn.window_size,
                                         new_bias_shape=tuple(target.shape))
    return value


def load_swin_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy ImageNet Swin encoder weights from `path` into `model` and mirror them (see module).

    Returns {"loaded": keys, "skipped": checkpoint keys that do not fit} after
    `load_state_dict(strict=False)`; UserError if the file is missing, unreadable or matches
    nothing.
    """
    return load_swin_state(model, read_swin_checkpoint(path), f"pretrained weights '{path}'")


#: (embed_dim, depths, num_heads) -> the timm ImageNet-1k Swin of that shape (window 7, 224 px).
SWIN_IMAGENET: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {
    (96, (2, 2, 6, 2), (3, 6, 12, 24)): "swin_tiny_patch4_window7_224.ms_in1k",
    (96, (2, 2, 18, 2), (3, 6, 12, 24)): "swin_small_patch4_window7_224.ms_in1k",
    (128, (2, 2, 18, 2), (4, 8, 16, 32)): "swin_base_patch4_window7_224.ms_in1k",
    (192, (2, 2, 18, 2), (6, 12, 24, 48)): "swin_large_patch4_window7_224.ms_in22k_ft_in1k",
}


def swin_shape(model: nn.Module) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(embed_dim, depths, num_heads) of a `SwinUnet`'s encoder, read from its modules."""
    stages = list(model.layers)  # type: ignore[arg-type]
    embed_dim = int(model.patch_embed.proj.out_channels)  # type: ignore[union-attr]
    depths = tuple(len(s.blocks) for s in stages)
    heads = tuple(int(s.blocks[0].attn.num_heads) for s in stages)
    return embed_dim, depths, heads


def swin_imagenet_arch(model: nn.Module) -> str:
    """The timm model whose ImageNet weights fit `model`, or a UserError listing the shapes."""
    return swin_imagenet_arch_for(*swin_shape(model))


def swin_imagenet_arch_for(embed_dim: int, depths: tuple[int, ...] | list[int],
                           num_heads: tuple[int, ...] | list[int]) -> str:
    """`swin_imagenet_arch` from the hparams (checked before the network is built)."""
    shape = (int(embed_dim), tuple(int(d) for d in depths), tuple(int(h) for h in num_heads))
    if shape not in SWIN_IMAGENET:
        known = "; ".join(f"embed_dim={c} depths={list(d)} num_heads={list(h)} ({a})"
                          for (c, d, h), a in SWIN_IMAGENET.items())
        raise UserError(f"pretrained=imagenet: no ImageNet Swin has embed_dim={shape[0]} "
                        f"depths={list(shape[1])} num_heads={list(shape[2])}; timm has: {known}")
    return SWIN_IMAGENET[shape]


def load_swin_imagenet(model: nn.Module, file: str | Path | None = None) -> dict[str, Any]:
    """Initialise `model` from timm's ImageNet Swin of the same shape (see module docstring).

    `file`: timm reads the weights from this local file (`pretrained_cfg_overlay`) instead of
    the Hugging Face cache. Returns the load report plus {"arch": timm name}.
    """
    from methods.networks.timm_weights import create_pretrained

    arch = swin_imagenet_arch(model)
    timm_model = create_pretrained(arch, file=None if file is None else str(file))
    state = {k: v for k, v in timm_model.state_dict().items() if not k.startswith("head.")}
    report: dict[str, Any] = load_swin_state(model, state, f"timm '{arch}'")
    report["arch"] = arch
    return report


def load_swin_state(model: nn.Module, state: dict[str, torch.Tensor],
                    label: str) -> dict[str, list[str]]:
    """Copy a Swin encoder state dict (official or timm layout) into `model`, mirrored into the
    decoder; `label` names the source in the error raised when nothing fits."""
    num_layers = len(model.layers)  # type: ignore[arg-type]
    state = mirror_into_decoder(to_timm_layout(state), num_layers)
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    skipped = []
    for k, v in state.items():
        if k in own:
            v = _adapt(k, v, own[k], model)
            if v.shape == own[k].shape:
                loaded[k] = v.to(own[k].dtype)
                continue
        skipped.append(k)
    if not loaded:
        raise UserError(f"{label}: no tensor matches a Swin-Unet encoder "
                        "key (expected an ImageNet Swin checkpoint)")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": sorted(skipped)}
