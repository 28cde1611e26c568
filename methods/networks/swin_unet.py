"""Swin-Unet (Cao et al., ECCV-W 2022): a Swin encoder with a mirrored patch-expanding decoder.

Follows HuCaoFighting/Swin-Unet `SwinTransformerSys` (docs/methods/swinunet.md).
The encoder is built from timm's `PatchEmbed`, `SwinTransformerStage` (which holds the
`PatchMerging` at the *start* of a stage, where the original has it at the end of the previous
one) and `SwinTransformerBlock`; tensors are NHWC (B, H, W, C) throughout. The decoder pieces
that no library provides (`PatchExpand`, `FinalPatchExpand`, the decoder stages and the
concat-back linears) are hand-written here after the original. Every normalisation is a plain
`nn.LayerNorm` submodule so that MLN-net can find and swap them (see `block_layernorm_names`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage
from torch import nn


class PatchExpand(nn.Module):
    """x2 up-sampling of a token grid: Linear C->2C, rearrange to (2H, 2W, C/2), LayerNorm(C/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, 2H, 2W, C/2), the channel split '(p1 p2 c)' of the original."""
        return self.norm(_pixel_shuffle_nhwc(self.expand(x), 2))


class FinalPatchExpand(nn.Module):
    """Up-sampling back to pixels: Linear C->s^2 C, rearrange to (sH, sW, C), LayerNorm(C).

    The original's `FinalPatchExpand_X4` is the case s = 4 (= its fixed patch size); taking
    s = patch_size keeps the output at input resolution for other patch sizes too.
    """

    def __init__(self, dim: int, scale: int = 4) -> None:
        super().__init__()
        self.dim, self.scale = dim, scale
        self.expand = nn.Linear(dim, scale * scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, sH, sW, C)."""
        return self.norm(_pixel_shuffle_nhwc(self.expand(x), self.scale))


def _pixel_shuffle_nhwc(x: torch.Tensor, scale: int) -> torch.Tensor:
    """einops 'b h w (p1 p2 c) -> b (h p1) (w p2) c' without the einops dependency."""
    b, h, w, c = x.shape
    c_out = c // (scale * scale)
    x = x.view(b, h, w, scale, scale, c_out).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, c_out)


class DecoderStage(nn.Module):
    """`BasicLayer_up`: Swin blocks at one resolution, then an optional `PatchExpand`."""

    def __init__(self, dim: int, grid: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, drop_path: Sequence[float],
                 upsample: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(
                dim=dim, input_resolution=(grid, grid), num_heads=num_heads,
                window_size=window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path[i],
                norm_layer=nn.LayerNorm)
            for i in range(depth)])
        self.upsample: nn.Module = PatchExpand(dim) if upsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, g, g, C) -> (B, 2g, 2g, C/2), or unchanged size for the last stage."""
        return self.upsample(self.blocks(x))


def stage_grids(img_size: int, patch_size: int, num_stages: int) -> list[int]:
    """Token-grid side length of each encoder stage (the decoder mirrors them)."""
    return [img_size // patch_size // 2**i for i in range(num_stages)]


def check_geometry(img_size: int, patch_size: int, window_size: int,
                   num_stages: int) -> None:
    """Raise ValueError, naming the stage, if a token grid cannot be windowed or merged.

    As in the original `SwinTransformerBlock`, a grid no larger than the window is attended as a
    single window (the window shrinks to the grid); any larger grid must be a multiple of the
    window, because the original (and this port) never pads.
    """
    if img_size % patch_size:
        raise ValueError(f"image size {img_size} is not a multiple of patch_size {patch_size}")
    grid0 = img_size // patch_size
    if grid0 % 2 ** (num_stages - 1):
        raise ValueError(f"image size {img_size}: the {grid0}x{grid0} token grid cannot be "
                         f"halved {num_stages - 1} times (needs a multiple of "
                         f"{patch_size * 2 ** (num_stages - 1)} pixels)")
    bad = [(i, g) for i, g in enumerate(stage_grids(img_size, patch_size, num_stages))
           if g > window_size and g % window_size]
    if bad:
        where = []
        for i, g in bad:
            dec = f", decoder stage {num_stages - 1 - i}" if i < num_stages - 1 else ""
            where.append(f"encoder stage {i}{dec} ({g}x{g} tokens)")
        raise ValueError(f"window_size {window_size} does not divide the token grid at "
                         f"{'; '.join(where)} for {img_size}px input and patch_size "
                         f"{patch_size}; choose a window that divides every grid larger than it")


def check_shape(img_size: int, patch_size: int, embed_dim: int, depths: Sequence[int],
                num_heads: Sequence[int], window_size: int) -> None:
    """Raise ValueError unless the stages, heads and windows fit together and the input size
    (the checks of `SwinUnet`, callable before building it)."""
    n = len(depths)
    if n < 2 or len(num_heads) != n:
        raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the "
                         "same length, at least 2")
    for i, h in enumerate(num_heads):
        if (embed_dim * 2**i) % h:
            raise ValueError(f"stage {i}: dim {embed_dim * 2**i} (embed_dim {embed_dim} x "
                             f"2^{i}) is not divisible by num_heads {h}")
    check_geometry(img_size, patch_size, window_size, n)


class SwinUnet(nn.Module):
    """Swin-Unet `SwinTransformerSys` with the 'expand_first' final up-sampling, 1 logit out.

    Encoder stage i works at dim C*2^i on an (H/4/2^i)^2 grid; the decoder mirrors it:
    `layers_up[0]` is a `PatchExpand` of the bottleneck, `layers_up[k]` (k >= 1) concatenates
    the skip `x_downsample[n-1-k]`, projects 2C'->C' (`concat_back_dim[k]`) and runs
    `depths[n-1-k]` Swin blocks with `num_heads[n-1-k]` (the yaml's DECODER_DEPTHS is ignored by
    the original too). As in the original, the skip of stage i is that stage's *input* (patch
    embedding for stage 0, the merged tokens before the blocks otherwise). Input (B, in_chans,
    H, W) -> logits (B, num_classes, H, W).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 1,
                 num_classes: int = 1, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.1,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        n = len(depths)
        check_shape(img_size, patch_size, embed_dim, depths, num_heads, window_size)
        self.img_size, self.patch_size, self.num_layers = img_size, patch_size, n
        grids = stage_grids(img_size, patch_size, n)
        dims = [embed_dim * 2**i for i in range(n)]
        # stochastic depth decay rule over the encoder; each decoder stage reuses its mirror's
        total = sum(depths)
        dpr = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        stage_dpr = [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(n)]

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size,
                                      in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC")
        self.layers = nn.ModuleList([
            SwinTransformerStage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i], input_resolution=(
                    grids[max(i - 1, 0)],) * 2, depth=depths[i], downsample=i > 0,
                num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop_path=stage_dpr[i], norm_layer=nn.LayerNorm)
            for i in range(n)])
        self.norm = nn.LayerNorm(dims[-1])

        self.layers_up = nn.ModuleList([PatchExpand(dims[-1])])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for k in range(1, n):
            i = n - 1 - k  # the mirrored encoder stage
            self.concat_back_dim.append(nn.Linear(2 * dims[i], dims[i]))
            self.layers_up.append(DecoderStage(
                dims[i], grids[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias,
                stage_dpr[i], upsample=k < n - 1))
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpand(embed_dim, patch_size)
        self.output = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) for images (B, in_chans, H, W) of size img_size."""
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"SwinUnet was built for {self.img_size}x{self.img_size} input, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        x = self.patch_embed(x)
        skips = []
        for stage in self.layers:
            x = stage.downsample(x)
            skips.append(x)  # the stage input, as `x_downsample` in the original
            x = stage.blocks(x)
        x = self.norm(x)
        for k, layer_up in enumerate(self.layers_up):
            if k > 0:
                x = self.concat_back_dim[k](torch.cat([x, skips[self.num_layers - 1 - k]], -1))
            x = layer_up(x)
        x = self.up(self.norm_up(x))
        return self.output(x.permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    """The original's `_init_weights`: truncated-normal(0.02) Linear weights, zero biases, LN 1/0.

    Convolutions (patch embedding, output head) keep PyTorch's default init, as in the original.
    """
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def block_layernorm_names(model: nn.Module) -> set[str]:
    """Qualified names of the LNs inside Swin blocks (norm1/norm2, encoder and decoder).

    The complement within `layernorm_names` is the patch-embedding, merging, expanding, bottleneck
    and final norms. Found by block type, so the names survive replacing the LNs themselves.
    """
    return {f"{name}.{norm}" for name, m in model.named_modules()
            if isinstance(m, SwinTransformerBlock) for norm in ("norm1", "norm2")}


def layernorm_names(model: nn.Module) -> set[str]:
    """Qualified names of every `nn.LayerNorm` in `model` (38 in the lite Swin-Unet)."""
    return {name for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
