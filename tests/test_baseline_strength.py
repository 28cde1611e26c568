"""Baselines at their strength: FedDG's prior-probability head bias, and Dofe's opt-in pool
fix (the domain-code head fed before the ASPP dropout)."""

from __future__ import annotations

import math

import torch

from benchmark.config import resolve_hparams
from methods.dofe import DofeMethod
from methods.feddg import FedDGMethod
from methods.networks.dofe_deeplab import DofeDeepLab
from methods.networks.feddg_unet import FedDGUnet

PRIOR_LOGIT = math.log(0.025 / 0.975)


def test_feddg_head_starts_at_the_foreground_prior() -> None:
    """Every model (global and per-client) starts with p ~ 0.025: almost no pixel is called
    foreground before training, instead of about half of them with the zero bias."""
    hp = resolve_hparams(FedDGMethod.hparam_space(), "smoke")
    torch.manual_seed(0)
    method = FedDGMethod(hp, torch.device("cpu"), 32)
    models = [method.global_model, *method.models]
    for model in models:
        assert torch.allclose(model.head.bias, torch.tensor([PRIOR_LOGIT]))
    images = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        prior = torch.sigmoid(method.global_model(images)[0])
        torch.manual_seed(0)
        plain = torch.sigmoid(FedDGUnet(1, 4, prior=None)(images)[0])
    assert float((prior >= 0.5).float().mean()) < 0.05 < float((plain >= 0.5).float().mean())
    assert abs(float(prior.mean()) - 0.025) < 0.02


def _dofe_net(fix: bool) -> DofeDeepLab:
    torch.manual_seed(0)
    return DofeDeepLab(3, encoder="mobilenetv2_035", aspp_channels=16, low_channels=8,
                       head_channels=16, domain_before_dropout=fix)


def test_dofe_pool_fix_matches_train_and_eval_statistics() -> None:
    """In training, the reference layout's domain-head BN sees max-pooled features after a
    Dropout(0.5) (survivors doubled), i.e. far above the dropout-free max-pool that eval
    feeds it; fed before the dropout, training sees exactly what eval will."""
    images = torch.rand(6, 1, 64, 64)
    ratios = {}
    for fix in (False, True):
        net = _dofe_net(fix)
        seen: dict[str, torch.Tensor] = {}
        net.aspp.register_forward_hook(
            lambda _m, _i, out, seen=seen: seen.__setitem__("act", out[1]))
        net.domain_code[1].register_forward_pre_hook(
            lambda _m, inp, seen=seen: seen.__setitem__("bn_in", inp[0]))
        net.train()
        torch.manual_seed(1)
        with torch.no_grad():
            net(images, inject=False)
        eval_input = net.domain_code[0](seen["act"])  # what eval's max-pool gives
        ratios[fix] = float(seen["bn_in"].mean() / eval_input.mean())
    assert ratios[False] > 1.5 and ratios[True] == 1.0, ratios


def test_dofe_pool_fix_is_opt_in_and_changes_nothing_in_eval() -> None:
    """The hparam defaults to the reference layout; both layouts share their weights and give
    the same eval outputs (dropout is inactive in eval), so only training differs."""
    hp = resolve_hparams(DofeMethod.hparam_space(), "smoke")
    assert hp["domain_before_dropout"] is False
    method = DofeMethod({**hp, "domain_before_dropout": True}, torch.device("cpu"), 32)
    assert method.network.domain_before_dropout
    ref, fixed = _dofe_net(False), _dofe_net(True)
    fixed.load_state_dict(ref.state_dict())
    ref.eval()
    fixed.eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(ref(images), fixed(images), strict=True):
            assert torch.allclose(a, b)
