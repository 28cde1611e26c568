"""Tests of the Resnet, M-net and CS-net baselines: parameter counts and their distinctive parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from benchmark.config import resolve_hparams
from benchmark.errors import UserError
from benchmark.registry import METHODS
from methods.csnet import CsnetMethod
from methods.mnet import FUSED_WEIGHT, SIDE_WEIGHT, MnetMethod, batch_dice, mnet_loss
from methods.networks.csnet import CSNet
from methods.networks.mnet import MNet
from methods.resnet import ResnetMethod

CPU = torch.device("cpu")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(cls: type, profile: str, size: int = 64, **overrides: object):
    hparams = {**resolve_hparams(cls.hparam_space(), profile), **overrides}
    if "pretrained" in hparams and "pretrained" not in overrides:
        hparams["pretrained"] = "none"  # offline: the paper default (imagenet) needs the HF cache
    return cls(hparams, CPU, size)


def test_registered_with_paper_names_and_groups() -> None:
    infos = METHODS.all()
    assert (infos["resnet"].display_name, infos["resnet"].group) == ("Resnet", "P1")
    assert (infos["mnet"].display_name, infos["mnet"].group) == ("M-net", "P1")
    assert (infos["csnet"].display_name, infos["csnet"].group) == ("CS-net", "P2")


# --- Resnet ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("encoder", "millions"), [("resnet34", 24.43), ("resnet50", 32.52)])
def test_resnet_paper_parameter_count_matches_spec(encoder: str, millions: float) -> None:
    method = _build(ResnetMethod, "paper", encoder=encoder)
    assert abs(method.num_parameters() - millions * 1e6) / (millions * 1e6) < 0.02


def test_resnet_loads_local_rgb_imagenet_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet34(weights=None)  # RGB conv1 and an fc head
    file = tmp_path / "r34.pth"
    torch.save(reference.state_dict(), file)
    method = _build(ResnetMethod, "smoke", encoder="resnet34", encoder_weights_path=str(file))
    encoder = method.network.encoder
    assert torch.allclose(encoder.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(encoder.layer4[2].conv2.weight, reference.layer4[2].conv2.weight)


def test_resnet_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        _build(ResnetMethod, "smoke", encoder_weights_path=str(tmp_path / "missing.pth"))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="does not fit the encoder"):
        _build(ResnetMethod, "smoke", encoder="resnet34",
               encoder_weights_path=str(tmp_path / "r18.pth"))
    with pytest.raises(UserError, match="unknown encoder 'resnet35'"):
        _build(ResnetMethod, "smoke", encoder="resnet35")


# --- M-net ----------------------------------------------------------------------------------
def _reference_mnet_count(cin: int = 1, classes: int = 1, b: int = 32) -> int:
    """Parameters of HzFu/MNet_DeepCDR `Model_MNet.DeepModel`, layer by layer (weights+bias)."""
    w = [b, 2 * b, 4 * b, 8 * b, 16 * b]
    convs = [(cin, w[0], 3), (w[0], w[0], 3)]  # block1
    for i in (1, 2, 3):  # block{i+1}_input1 on the pyramid, then two convs on the concat
        convs += [(cin, w[i], 3), (w[i] + w[i - 1], w[i], 3), (w[i], w[i], 3)]
    convs += [(w[3], w[4], 3), (w[4], w[4], 3)]  # block5
    for i in (3, 2, 1, 0):  # block{6..9}: 2x2 transposed conv, two convs, 1x1 side output
        convs += [(w[i + 1], w[i], 2), (2 * w[i], w[i], 3), (w[i], w[i], 3), (w[i], classes, 1)]
    return sum(ci * co * k * k + co for ci, co, k in convs)


def test_mnet_paper_parameter_count_matches_reference_code() -> None:
    reference = _build(MnetMethod, "paper", batchnorm=False)  # the BN-free Keras model
    assert isinstance(reference.network, MNet)
    assert reference.num_parameters() == _reference_mnet_count() == 8_538_596
    with_bn = _build(MnetMethod, "paper")  # default: BN adds 2 per channel, drops conv biases
    assert with_bn.hparams["batchnorm"] is True
    assert 0 < with_bn.num_parameters() - reference.num_parameters() < 0.001 * 8_538_596


def test_mnet_side_outputs_have_their_stage_resolution() -> None:
    torch.manual_seed(0)
    net = MNet(base=4).eval()
    with torch.no_grad():
        sides = net(torch.rand(2, 1, 32, 32))
    assert sides.shape == (2, 4, 32, 32)
    for k, block in enumerate((8, 4, 2)):  # side6..side8 are nearest-upsampled coarse maps
        coarse = sides[:, k:k + 1, ::block, ::block]
        assert torch.equal(F.interpolate(coarse, scale_factor=block, mode="nearest"),
                           sides[:, k:k + 1])
    assert not torch.equal(sides[:, 3:4, ::2, ::2].repeat_interleave(2, -1)
                           .repeat_interleave(2, -2), sides[:, 3:4])  # side9 is full resolution


def test_mnet_input_pyramid_feeds_the_encoder() -> None:
    torch.manual_seed(0)
    net = MNet(base=4).eval()
    seen: list[tuple[int, ...]] = []
    for conv in net.pyramid:
        conv.register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape)))
    net(torch.rand(1, 1, 64, 64))
    assert seen == [(1, 1, 32, 32), (1, 1, 16, 16), (1, 1, 8, 8)]


def test_mnet_loss_weights_and_fused_prediction() -> None:
    torch.manual_seed(0)
    masks = (torch.rand(2, 1, 16, 16) > 0.8).float()
    side_logits = torch.randn(2, 4, 16, 16)
    terms = mnet_loss(side_logits, masks)
    sides = sum(terms[f"side{k}"] for k in (6, 7, 8, 9))
    assert torch.isclose(terms["loss"], SIDE_WEIGHT * sides + FUSED_WEIGHT * terms["fused"])
    assert (SIDE_WEIGHT, FUSED_WEIGHT) == (0.1, 0.6)
    fused = torch.sigmoid(side_logits).mean(1, keepdim=True)
    assert torch.isclose(terms["fused"], 1 - batch_dice(fused, masks))
    # identical side outputs: the fused output equals them and the weights sum to one
    same = side_logits[:, :1].repeat(1, 4, 1, 1)
    assert torch.isclose(mnet_loss(same, masks)["loss"],
                         1 - batch_dice(torch.sigmoid(same[:, :1]), masks))
    method = _build(MnetMethod, "smoke", size=32)
    images = torch.rand(2, 1, 32, 32)
    method.network.eval()
    with torch.no_grad():
        expected = torch.sigmoid(method.network(images)).mean(1, keepdim=True)
    assert torch.allclose(method.predict(images), expected)


def test_batch_dice_is_the_reference_formula() -> None:
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :2, :2] = 1
    assert float(batch_dice(masks, masks)) == pytest.approx(1.0)
    assert float(batch_dice(torch.zeros_like(masks), torch.zeros_like(masks))) == 1.0
    probs = torch.full_like(masks, 0.5)
    assert float(batch_dice(probs, masks)) == pytest.approx((2 * 2 + 1) / (4 + 16 + 1))


# --- CS-net ---------------------------------------------------------------------------------
def test_csnet_paper_parameter_count_matches_spec() -> None:
    method = _build(CsnetMethod, "paper")
    assert abs(method.num_parameters() - 0.37e6) / 0.37e6 < 0.02


def test_csnet_branches_get_different_inputs() -> None:
    torch.manual_seed(0)
    net = CSNet((4, 4, 8, 8), (4, 8, 16), 8, context_scale=2).eval()
    seen: dict[str, torch.Tensor] = {}
    net.local[0].register_forward_hook(lambda _m, inp, _o: seen.__setitem__("local", inp[0]))
    net.context[0].register_forward_hook(lambda _m, inp, _o: seen.__setitem__("ctx", inp[0]))
    x = torch.rand(1, 1, 32, 32)
    assert net(x).shape == (1, 1, 32, 32)
    assert torch.equal(seen["local"], x)
    assert torch.allclose(seen["ctx"], F.avg_pool2d(x, 2))


def test_csnet_larger_field_of_view_is_cropped_to_the_patch() -> None:
    torch.manual_seed(0)
    net = CSNet((4, 4), (4, 8, 8), 8, context_scale=2).eval()
    x = torch.rand(1, 1, 64, 64)
    context = torch.rand(1, 1, 128, 128)  # covers twice the patch's side, centred
    with torch.no_grad():
        base = net(x, context, context_fov=2.0)
        border = context.clone()
        border[..., :8, :] = 0  # outside the central crop's receptive field
        assert torch.equal(net(x, border, context_fov=2.0), base)
        centre = context.clone()
        centre[..., 60:68, 60:68] = 0
        assert not torch.equal(net(x, centre, context_fov=2.0), base)


def test_csnet_rejects_indivisible_image_size() -> None:
    with pytest.raises(UserError, match="image_size 36 must be divisible by 8"):
        _build(CsnetMethod, "smoke", size=36)


def test_quick_profile_is_narrower_than_paper() -> None:
    for cls in (ResnetMethod, MnetMethod, CsnetMethod):
        assert _build(cls, "quick").num_parameters() < _build(cls, "paper").num_parameters()
