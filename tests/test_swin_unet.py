"""Swin-Unet backbone and the `swinunet` method: sizes, LN inventory, pretrained loading, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.config import PROFILES, resolve_hparams, split_overrides
from benchmark.errors import UserError
from methods.networks.swin_pretrained import load_swin_pretrained
from methods.networks.swin_unet import SwinUnet, block_layernorm_names, layernorm_names
from methods.swinunet import SwinUnetMethod

LITE = {"embed_dim": 96, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny(img_size: int = 32, window_size: int = 2, **kw: object) -> SwinUnet:
    args = {"embed_dim": 12, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24],
            "drop_path_rate": 0.0, **kw}
    return SwinUnet(img_size=img_size, window_size=window_size, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("config", "expected"), [
    ({**LITE, "img_size": 224, "window_size": 7}, 27.17e6),  # repo lite yaml (baselines.md 4)
    ({**LITE, "depths": [2, 2, 18, 2], "img_size": 512, "window_size": 8}, 84.0e6),  # paper
])
def test_parameter_counts_match_spec(config: dict, expected: float) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        net = SwinUnet(in_chans=1, **config)
    assert abs(_count(net) - expected) / expected < 0.01


@pytest.mark.parametrize(("size", "window"), [(32, 2), (128, 4), (224, 7)])
def test_output_is_one_logit_map_of_input_size(size: int, window: int) -> None:
    torch.manual_seed(0)
    net = _tiny(size, window).eval()
    out = net(torch.rand(2, 1, size, size))
    assert out.shape == (2, 1, size, size)
    assert torch.isfinite(out).all()


def test_window_that_does_not_divide_a_grid_names_the_stage() -> None:
    # 64 px -> grids 16, 8, 4, 2: window 3 divides none larger than it.
    with pytest.raises(ValueError, match=r"encoder stage 0, decoder stage 3 \(16x16 tokens\)"):
        _tiny(64, 3)
    # 96 px -> grids 24, 12, 6, 3: window 8 fails only at stage 0 (24), 12 > 8 fails too.
    with pytest.raises(ValueError, match=r"window_size 8 .* encoder stage 1, decoder stage 2"):
        _tiny(96, 8)
    with pytest.raises(ValueError, match="input"):  # the original's 512 px + window 7 trap
        SwinUnet(img_size=512, window_size=7)


def test_method_turns_bad_geometry_into_a_user_error() -> None:
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    with pytest.raises(UserError, match="swinunet hparams: window_size 3"):
        SwinUnetMethod({**hp, "window_size": 3}, torch.device("cpu"), 64)
    with pytest.raises(UserError, match="depths must be a list"):
        SwinUnetMethod({**hp, "depths": 2}, torch.device("cpu"), 32)
    with pytest.raises(UserError, match="not divisible by num_heads"):
        SwinUnetMethod({**hp, "embed_dim": 10}, torch.device("cpu"), 32)


def test_layernorm_inventory_of_the_lite_config() -> None:
    net = SwinUnet(img_size=224, window_size=7, **LITE)  # type: ignore[arg-type]
    all_ln = layernorm_names(net)
    blocks = block_layernorm_names(net)
    assert len(all_ln) == 38 and len(blocks) == 28  # SwinTransformerSys at C=96: 38 LNs, 28 blocks
    assert sum(n.startswith("layers.") for n in blocks) == 16  # encoder: 4 stages x 2 x 2
    assert sum(n.startswith("layers_up.") for n in blocks) == 12  # decoder: 3 stages x 2 x 2
    assert all(n.endswith((".norm1", ".norm2")) for n in blocks)
    assert all_ln - blocks == {
        "patch_embed.norm", "layers.1.downsample.norm", "layers.2.downsample.norm",
        "layers.3.downsample.norm", "norm", "layers_up.0.norm", "layers_up.1.upsample.norm",
        "layers_up.2.upsample.norm", "norm_up", "up.norm",
    }
    # plain nn.LayerNorm instances only, and no other normalisation class anywhere
    assert all(type(net.get_submodule(n)) is nn.LayerNorm for n in all_ln)
    norm_types = {type(m) for m in net.modules()
                  if "norm" in type(m).__name__.lower() and not isinstance(m, nn.LayerNorm)}
    assert norm_types == set()


def test_every_layernorm_is_used_once_per_forward() -> None:
    """Swapping the LN submodules (MLN-net) must reach every normalisation the forward uses."""
    net = _tiny(32, 2)
    calls: dict[str, int] = {}
    for name in layernorm_names(net):
        net.get_submodule(name).register_forward_hook(
            lambda _m, _i, _o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    net(torch.rand(1, 1, 32, 32))
    assert calls == dict.fromkeys(layernorm_names(net), 1)


def test_gradients_reach_every_parameter() -> None:
    # 64 px: every grid (16, 8, 4, 2) has several tokens; on a 1x1 grid the bias table is a
    # constant inside a one-element softmax and rightly gets zero gradient (as in the original).
    torch.manual_seed(0)
    net = _tiny(64, 2)
    net(torch.rand(2, 1, 64, 64)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_same_seed_same_output() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        net = _tiny(32, 2, drop_path_rate=0.1)
        net.train()
        outs.append(net(torch.rand(2, 1, 32, 32)))
    assert torch.equal(outs[0], outs[1])


def _official_checkpoint(encoder: SwinUnet) -> dict[str, torch.Tensor]:
    """The encoder's weights in the official Swin layout: merging at the end of a stage, RGB."""
    out = {}
    for k, v in encoder.state_dict().items():
        if not k.startswith(("patch_embed.", "layers.", "norm.")):
            continue
        parts = k.split(".")
        if k.startswith("layers.") and parts[2] == "downsample":
            k = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
        if k == "patch_embed.proj.weight":
            v = v.repeat(1, 3, 1, 1) / 3  # an RGB kernel whose channel sum is the grey kernel
        out[k] = v.clone()
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    out["head.weight"] = torch.zeros(1000, encoder.norm.normalized_shape[0])
    return out


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_pretrained_encoder_is_loaded_and_mirrored(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(1)
    source = _tiny(32, 2)
    if layout == "official":
        ckpt: dict = {"model": _official_checkpoint(source)}
    else:
        ckpt = {k: v for k, v in source.state_dict().items()
                if k.startswith(("patch_embed.", "layers.", "norm."))}
    path = tmp_path / "swin.pth"
    torch.save(ckpt, path)

    torch.manual_seed(2)
    target = _tiny(32, 2)
    report = load_swin_pretrained(target, path)
    src, tgt = source.state_dict(), target.state_dict()
    for k in src:
        if k.startswith(("patch_embed.", "layers.", "norm.")):
            assert torch.allclose(tgt[k], src[k], atol=1e-6), k
    for i in range(3):  # encoder blocks of stage i -> decoder stage 3 - i
        for k in src:
            if k.startswith(f"layers.{i}.blocks."):
                assert torch.equal(tgt[k.replace(f"layers.{i}.", f"layers_up.{3 - i}.", 1)],
                                   src[k]), k
    assert "concat_back_dim.1.weight" not in report["loaded"]  # decoder-only parts stay fresh
    assert not torch.equal(tgt["up.expand.weight"], src["up.expand.weight"])
    if layout == "official":
        assert "head.weight" in report["skipped"]


def test_pretrained_bias_tables_are_resized_to_the_window(tmp_path: Path) -> None:
    source = _tiny(64, 2)  # tables of (2*2-1)^2 = 9 rows
    torch.save(source.state_dict(), tmp_path / "w2.pth")
    target = _tiny(64, 4)  # (2*4-1)^2 = 49 rows at stages whose grid is >= 4
    report = load_swin_pretrained(target, tmp_path / "w2.pth")
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert key in report["loaded"] and target.state_dict()[key].shape == (49, 3)


def test_pretrained_missing_or_foreign_file_is_a_user_error(tmp_path: Path) -> None:
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=r"nope\.pth': no such file"):
        SwinUnetMethod({**hp, "pretrained": str(missing)}, torch.device("cpu"), 32)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="no tensor matches"):
        load_swin_pretrained(_tiny(32, 2), tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_swin_pretrained(_tiny(32, 2), tmp_path / "junk.pth")


def test_method_with_pretrained_file_starts_from_it(tmp_path: Path) -> None:
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    torch.manual_seed(0)
    first = SwinUnetMethod(hp, torch.device("cpu"), 32)
    torch.save({"model": _official_checkpoint(first.network)}, tmp_path / "in.pth")
    torch.manual_seed(1)
    second = SwinUnetMethod({**hp, "pretrained": str(tmp_path / "in.pth")},
                            torch.device("cpu"), 32)
    a, b = first.network.state_dict(), second.network.state_dict()
    assert torch.equal(a["layers.2.blocks.1.mlp.fc1.weight"],
                       b["layers.2.blocks.1.mlp.fc1.weight"])


def test_profile_defaults_and_set_overrides() -> None:
    space = SwinUnetMethod.hparam_space()
    paper = resolve_hparams(space, "paper")
    assert (paper["embed_dim"], paper["depths"], paper["window_size"]) == (96, [2, 2, 18, 2], 8)
    names = [h.name for h in space]
    over = split_overrides(["embed_dim=48", "depths=[2,2,6,2]", "window_size=8"],
                           PROFILES["quick"], names)
    assert over.hparams == {"embed_dim": 48, "depths": [2, 2, 6, 2], "window_size": 8}
    hp = {**resolve_hparams(space, "smoke"), "embed_dim": 24, "depths": [1, 1, 1, 1],
          "pretrained": "none"}  # a width no formula weights were made for
    method = SwinUnetMethod(hp, torch.device("cpu"), 32)
    assert method.network.patch_embed.proj.out_channels == 24
    for profile in ("smoke", "quick", "paper"):  # every profile's defaults build at its size
        if profile != "paper":  # (geometry only: the start weights have their own tests)
            SwinUnetMethod({**resolve_hparams(space, profile), "pretrained": "none"},
                           torch.device("cpu"), PROFILES[profile].image_size)


def test_loss_is_weighted_bce_plus_dice() -> None:
    method = SwinUnetMethod(resolve_hparams(SwinUnetMethod.hparam_space(), "smoke"),
                            torch.device("cpu"), 32)
    logits, masks = torch.randn(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.9).float()
    terms = method.loss(logits, masks)
    assert torch.allclose(terms["loss"], 0.4 * terms["bce"] + 0.6 * terms["dice"])
