"""Load ImageNet Swin weights from a local file into a `SwinUnet` (Swin-Unet's `load_from`).

Nothing is downloaded: the user passes a path. Accepted: the official Microsoft checkpoint
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

import torch
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
        obj = torch.load(file, map_location="cpu", weights_only=True)
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
    num_layers = len(model.layers)  # type: ignore[arg-type]
    state = mirror_into_decoder(to_timm_layout(read_swin_checkpoint(path)), num_layers)
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
        raise UserError(f"pretrained weights '{path}': no tensor matches a Swin-Unet encoder "
                        "key (expected an ImageNet Swin checkpoint)")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": sorted(skipped)}
