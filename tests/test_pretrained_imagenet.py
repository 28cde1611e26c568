"""`pretrained=imagenet` through timm's own loading, offline: Swin-Unet, MLN-net, Resnet, Dofe.

No weights are downloaded. Each test writes random weights in timm's own layout (the timm model
built with pretrained=False) either into a Hugging Face hub cache folder of the layout
`huggingface-cli download` leaves (with HF_HUB_OFFLINE), or into a file passed through timm's
`pretrained_cfg_overlay=dict(file=...)`, and checks every expected key was copied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from benchmark.config import resolve_hparams
from benchmark.errors import UserError
from methods.dofe import DofeMethod
from methods.mlnnet import MlnNet
from methods.networks.multinorm import MultiLayerNorm
from methods.networks.swin_pretrained import load_swin_imagenet
from methods.networks.swin_unet import SwinUnet
from methods.networks.timm_weights import create_pretrained, init_kind
from methods.resnet import ResnetMethod
from methods.swinunet import SwinUnetMethod

CPU = torch.device("cpu")
SWIN_T = "swin_tiny_patch4_window7_224.ms_in1k"
#: Swin-T's shape at 224 px and window 7: every tensor fits without resizing
SWIN_T_HP = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
             "window_size": 7, "drop_path_rate": 0.0}
_BUFFERS = ("relative_position_index", "attn_mask")


def _timm_state(arch: str) -> dict[str, torch.Tensor]:
    """Random weights of `arch` in timm's layout (its persistent tensors)."""
    torch.manual_seed(123)
    model = timm.create_model(arch, pretrained=False)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if not any(b in k for b in _BUFFERS)}


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline Hugging Face hub cache (what HF_HUB_CACHE / HF_HUB_OFFLINE select)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _put_in_cache(cache: Path, arch: str, state: dict[str, torch.Tensor]) -> None:
    """Store `state` as `huggingface-cli download timm/<arch>` would (refs/main -> snapshot)."""
    repo = cache / f"models--{timm.models.get_pretrained_cfg(arch).hf_hub_id.replace('/', '--')}"
    (repo / "snapshots" / "local").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("local")
    save_file(state, str(repo / "snapshots" / "local" / "model.safetensors"))


def _expected_swin(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Independently of the loader: Swin-Unet key -> the timm tensor it must hold (encoder
    as is, grey patch embedding = RGB kernel summed, stage-i blocks mirrored to layers_up)."""
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            continue
        if k == "patch_embed.proj.weight":
            v = v.sum(1, keepdim=True)
        out[k] = v
        parts = k.split(".")
        if parts[0] == "layers" and parts[2] == "blocks" and int(parts[1]) < num_layers - 1:
            out[".".join(["layers_up", str(num_layers - 1 - int(parts[1])), *parts[2:]])] = v
    return out


def _check_copied(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """Every expected key holds its tensor; a multi-branch LN holds it in every branch."""
    own = model.state_dict()
    assert expected, "nothing expected"
    for key, value in expected.items():
        assert key in own, key
        got = own[key]
        if got.dim() == value.dim() + 1 and got.shape[1:] == value.shape:  # K LN branches
            for k in range(got.shape[0]):
                assert torch.allclose(got[k], value, atol=1e-5), f"{key} branch {k}"
        else:
            assert torch.allclose(got, value, atol=1e-5), key


def test_swinunet_imagenet_comes_from_the_hub_cache(hub_cache: Path) -> None:
    state = _timm_state(SWIN_T)
    _put_in_cache(hub_cache, SWIN_T, state)
    hp = {**resolve_hparams(SwinUnetMethod.hparam_space(), "smoke"), **SWIN_T_HP,
          "pretrained": "imagenet"}
    method = SwinUnetMethod(hp, CPU, 224)
    assert method.init == f"imagenet (timm {SWIN_T})"
    _check_copied(method.network, _expected_swin(state, 4))


def test_mlnnet_imagenet_fills_every_layernorm_branch(tmp_path: Path) -> None:
    state = _timm_state(SWIN_T)
    file = tmp_path / "swin_t.pth"
    torch.save(state, file)
    torch.manual_seed(0)
    net = SwinUnet(img_size=224, in_chans=1, **{k: v for k, v in SWIN_T_HP.items()})
    report = load_swin_imagenet(net, file=file)  # timm reads the file (pretrained_cfg_overlay)
    assert report["arch"] == SWIN_T
    _check_copied(net, _expected_swin(state, 4))

    # MLN-net: the same loading, then every LN multiplied into K branches that all hold it
    hub = tmp_path / "hub"
    hub.mkdir()
    _put_in_cache(hub, SWIN_T, state)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(hub))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        hp = {**resolve_hparams(MlnNet.hparam_space(), "smoke"), **SWIN_T_HP,
              "pretrained": "imagenet"}
        method = MlnNet(hp, CPU, 224)
    lns = [m for m in method.network.modules() if isinstance(m, MultiLayerNorm)]
    assert lns and all(m.num_branches == 2 for m in lns)
    expected = _expected_swin(state, 4)
    ln_keys = [k for k in expected if k.rsplit(".", 2)[-2].startswith("norm")]
    assert len(ln_keys) > 40  # the encoder's and the mirrored decoder blocks' LNs
    _check_copied(method.network, expected)


def test_resnet_imagenet_is_torchvision_resnet_through_timm(hub_cache: Path) -> None:
    state = _timm_state("resnet18.tv_in1k")
    _put_in_cache(hub_cache, "resnet18.tv_in1k", state)
    hp = {**resolve_hparams(ResnetMethod.hparam_space(), "smoke"), "pretrained": "imagenet"}
    method = ResnetMethod(hp, CPU, 32)
    assert method.init == "imagenet (timm resnet18.tv_in1k)"
    expected = {k: (v.sum(1, keepdim=True) if k == "conv1.weight" else v)
                for k, v in state.items() if not k.startswith("fc.")}
    _check_copied(method.network.encoder, expected)


def test_dofe_imagenet_mobilenet_from_a_file(tmp_path: Path) -> None:
    state = _timm_state("mobilenetv2_100")
    file = tmp_path / "mbv2.pth"
    torch.save(state, file)
    hp = {**resolve_hparams(DofeMethod.hparam_space(), "smoke"), "encoder": "mobilenetv2_100",
          "pretrained": str(file)}
    method = DofeMethod(hp, CPU, 32)
    assert method.init == "file mbv2.pth"
    own = method.network.encoder.state_dict()
    expected = {k: (v.sum(1, keepdim=True) if k == "conv_stem.weight" else v)
                for k, v in state.items() if k in own}
    assert len(expected) > 100 and "blocks.3.0.conv_pw.weight" in expected
    _check_copied(method.network.encoder, expected)


def test_offline_without_cached_weights_is_one_line_naming_the_cache(hub_cache: Path) -> None:
    hp = {**resolve_hparams(SwinUnetMethod.hparam_space(), "smoke"), **SWIN_T_HP,
          "pretrained": "imagenet"}
    with pytest.raises(UserError) as err:
        SwinUnetMethod(hp, CPU, 224)
    text = str(err.value)
    assert "\n" not in text and str(hub_cache) in text
    assert "hf download timm/swin_tiny_patch4_window7_224.ms_in1k" in text
    assert "--set pretrained=" in text


def test_imagenet_errors_name_the_problem() -> None:
    hp = {**resolve_hparams(SwinUnetMethod.hparam_space(), "smoke"), "pretrained": "imagenet"}
    with pytest.raises(UserError, match="no ImageNet Swin has embed_dim=12"):
        SwinUnetMethod(hp, CPU, 32)  # the smoke width has no ImageNet twin
    with pytest.raises(UserError, match="publishes no ImageNet weights for 'mobilenetv2_035'"):
        create_pretrained("mobilenetv2_035")
    assert [init_kind(v) for v in ("", "none", "None", "imagenet", "formula", "/x.pth")] == [
        "scratch", "scratch", "scratch", "imagenet", "formula", "file"]


def test_paper_profile_defaults_to_imagenet_and_quick_stays_offline() -> None:
    """Offline profiles: every method whose paper profile starts from ImageNet (the Swin
    family, Resnet, DoFE) starts from formula weights; nothing is downloaded at smoke or
    quick."""
    for cls, offline in ((SwinUnetMethod, "formula"), (MlnNet, "formula"),
                         (ResnetMethod, "formula"), (DofeMethod, "formula")):
        space = cls.hparam_space()
        assert resolve_hparams(space, "paper")["pretrained"] == "imagenet", cls
        assert init_kind(resolve_hparams(space, "quick")["pretrained"]) == offline, cls
        assert init_kind(resolve_hparams(space, "smoke")["pretrained"]) == offline, cls


def test_a_local_safetensors_file_works_like_a_pth(tmp_path: Path) -> None:
    """What `hf download` leaves is model.safetensors: Swin-Unet and Resnet read it too."""
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    torch.manual_seed(0)
    first = SwinUnetMethod(hp, CPU, 32)
    encoder = {k: v.contiguous() for k, v in first.network.state_dict().items()
               if k.startswith(("patch_embed.", "layers.", "norm."))
               and not any(b in k for b in _BUFFERS)}
    save_file(encoder, str(tmp_path / "swin.safetensors"))
    torch.manual_seed(1)
    second = SwinUnetMethod({**hp, "pretrained": str(tmp_path / "swin.safetensors")}, CPU, 32)
    assert second.init == "file swin.safetensors"
    _check_copied(second.network, encoder)
    state = _timm_state("resnet18.tv_in1k")
    save_file(state, str(tmp_path / "r18.safetensors"))
    hp = {**resolve_hparams(ResnetMethod.hparam_space(), "smoke"),
          "pretrained": str(tmp_path / "r18.safetensors")}
    assert ResnetMethod(hp, CPU, 32).init == "file r18.safetensors"


def test_offline_without_weights_fails_before_any_data(hub_cache: Path, tmp_path: Path) -> None:
    """plan_run's check_config stops a paper run at once (no 512 px data generated first)."""
    from benchmark.progress import NullReporter
    from benchmark.runner import RunRequest, plan_run

    for method in ("swinunet", "mlnnet", "resnet", "dofe"):
        req = RunRequest(method=method, source="ffdm", profile="paper",
                         results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
        with pytest.raises(UserError, match=r"not in the Hugging Face cache"):
            plan_run(req, NullReporter())
    assert not (tmp_path / "c").exists()
    _put_in_cache(hub_cache, "resnet34.tv_in1k", {"x": torch.zeros(1)})  # cached: no error
    plan_run(RunRequest(method="resnet", source="ffdm", profile="paper",
                        results_dir=tmp_path / "r", cache_dir=tmp_path / "c"), NullReporter())


def test_paper_trial_draws_keep_an_imagenet_swin() -> None:
    """Every hparam trial at the paper profile (where pretrained=imagenet is the default) draws
    a Swin shape that timm publishes ImageNet weights for: width is not a sampled hparam."""
    from benchmark.registry import METHODS
    from methods.networks.swin_pretrained import swin_imagenet_arch_for

    swin = [info for info in METHODS.all().values()
            if {"embed_dim", "depths", "num_heads"} <= {h.name for h in info.cls.hparam_space()}]
    assert swin, "no Swin-based method registered"
    for info in swin:
        for trial in range(12):
            hp = resolve_hparams(info.cls.hparam_space(), "paper", trial)
            assert hp["pretrained"] == "imagenet", info.name
            swin_imagenet_arch_for(hp["embed_dim"], hp["depths"], hp["num_heads"])
