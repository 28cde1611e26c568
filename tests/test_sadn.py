"""SADN: dual-BN network size and routing, loss, style groups, path selection, state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.config import resolve_hparams
from benchmark.errors import UserError
from benchmark.trainer import load_checkpoint, save_checkpoint
from methods.losses import dice_loss1
from methods.networks.dsbn import MultiBatchNorm2d, batch_statistics, dual_bns
from methods.networks.multinorm import branch
from methods.networks.sadn_unet import Unet2D
from methods.sadn import SadnMethod, foreground_probability, sadn_pseudo_domains

SIZE = 32


def _method(**overrides: object) -> SadnMethod:
    hp = {**resolve_hparams(SadnMethod.hparam_space(), "smoke"), **overrides}
    torch.manual_seed(0)
    return SadnMethod(hp, torch.device("cpu"), SIZE)


def _images(kind: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Two clearly different input distributions: dark low-contrast, or bright wide-range."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, SIZE, SIZE, generator=g)
    return 0.1 + 0.2 * base if kind == "dark" else 1.0 - 0.6 * base


def _running(method: SadnMethod) -> list[torch.Tensor]:
    return [b.clone() for n, b in method.network.named_buffers() if "running_" in n]


def test_network_has_26_dual_bns_and_3_19m_parameters() -> None:
    net = Unet2D(c=1, n=16, num_classes=2, norm="dsbn", num_domains=2)
    layers = dual_bns(net)
    assert len(layers) == 26
    assert all(len(m.bns) == 2 and m.bns[0].eps == 1e-5 and m.bns[0].momentum == 0.1
               for m in layers)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - 3.19e6) / 3.19e6 < 0.005
    with torch.no_grad(), branch(0):
        out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 2, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_changing_branch_k_parameters_changes_branch_k_outputs_only() -> None:
    torch.manual_seed(0)
    net = Unet2D(n=4).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        before = []
        for k in range(2):
            with branch(k):
                before.append(net(x))
        for m in dual_bns(net):
            m.bns[1].weight.mul_(1.7)
            m.bns[1].bias.add_(0.3)
        after = []
        for k in range(2):
            with branch(k):
                after.append(net(x))
    assert torch.equal(before[0], after[0])
    assert not torch.allclose(before[1], after[1], atol=1e-4)


def test_training_routes_running_statistics_to_the_active_branch_only() -> None:
    layer = MultiBatchNorm2d(3, 2).train()
    with branch(1):
        layer(torch.randn(4, 3, 5, 5) + 2.0)
    assert torch.equal(layer.bns[0].running_mean, torch.zeros(3))
    assert bool((layer.bns[1].running_mean > 0.1).all())
    with pytest.raises(ValueError, match="domain-homogeneous"), branch(torch.tensor([0, 1, 0])):
        layer(torch.randn(3, 3, 5, 5))


def test_batch_statistics_mode_per_sample_ids_equal_separate_forwards() -> None:
    torch.manual_seed(0)
    net = Unet2D(n=4)
    with torch.no_grad():  # give the two branches different affine parameters
        for m in dual_bns(net):
            m.bns[1].weight.normal_(1.0, 0.2)
    net.eval()
    x = torch.rand(3, 1, SIZE, SIZE)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad(), branch(ids), batch_statistics(net) as joint:
        together = net(x.repeat(2, 1, 1, 1))
    for k in range(2):
        with torch.no_grad(), branch(k), batch_statistics(net) as alone:
            out = net(x)
        assert torch.allclose(together[3 * k:3 * k + 3], out, atol=1e-5)
        for layer_joint, layer_alone in zip(joint, alone, strict=True):
            assert torch.allclose(layer_joint[k][0], layer_alone[k][0], atol=1e-5)
            assert torch.allclose(layer_joint[k][1], layer_alone[k][1], atol=1e-5)


def test_dice_loss1_matches_the_reference_formula() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 2, 8, 8, generator=g)
    label = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    onehot = torch.cat([1 - label, label], 1)
    expected = 0.0
    for c in range(2):  # SADN's utils/loss.py dice_loss1, written out
        inter = float((probs[:, c] * onehot[:, c]).sum())
        expected += (2 * inter + 1e-5) / (float(probs[:, c].sum() + onehot[:, c].sum()) + 1e-5)
    assert float(dice_loss1(probs, onehot)) == pytest.approx(1 - expected / 2, rel=1e-5)
    assert float(dice_loss1(onehot, onehot)) == pytest.approx(0.0, abs=1e-6)


def test_style_groups_head_and_sep2022() -> None:
    x = torch.tensor([[[0.0, 0.25, 0.5, 0.75, 0.9]]])
    ss, sd = sadn_pseudo_domains("head")
    assert torch.equal(ss.transforms[0](x), x)
    assert torch.allclose(sd.transforms[0](x), torch.tensor([[[0.0, 0.75, 0.5, 0.25, 0.1]]]))
    ss3, sd3 = sadn_pseudo_domains("sep2022")
    assert len(ss3.transforms) == len(sd3.transforms) == 3
    # SADN's released style curve in [-1, 1]: v=0.5 f(-0.5) = -0.2294, v=0.75 f(-0.5) = -0.1245;
    # at u = 0.25 in [0, 1] that is (f + 1) / 2, and the dissimilar curve gives 1 - that
    u = torch.tensor([[[0.0, 0.25, 1.0]]])
    for curve, f in zip(ss3.transforms[1:], (-0.2294, -0.1245), strict=True):
        assert float(curve(u)[0, 0, 1]) == pytest.approx((f + 1) / 2, abs=1e-4)
    for curve, f in zip(sd3.transforms[1:], (-0.2294, -0.1245), strict=True):
        out = curve(u)
        assert float(out[0, 0, 1]) == pytest.approx(1 - (f + 1) / 2, abs=1e-4)
        assert float(out[0, 0, 0]) == 0.0  # the background stays dark
    with pytest.raises(UserError, match="style_curves"):
        sadn_pseudo_domains("mln")


def test_foreground_probability_agrees_with_argmax() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(4, 2, 6, 6, generator=g)
    fg = foreground_probability(probs)
    assert torch.equal(fg[:, 0] >= 0.5, probs.argmax(1) == 1)


def _set_branch_stats(method: SadnMethod, k: int, images: torch.Tensor) -> None:
    """Branch k's stored running statistics := those of `images` through branch k."""
    with torch.no_grad(), branch(k), batch_statistics(method.network) as stats:
        method.network.eval()
        method.network(method.network_input(images))
    for layer, layer_stats in zip(dual_bns(method.network), stats, strict=True):
        mean, var = layer_stats[k]
        layer.bns[k].running_mean.copy_(mean)
        layer.bns[k].running_var.copy_(var)


@pytest.mark.parametrize("selection", ["batch-stats", "repo-literal"])
def test_selection_picks_the_branch_whose_statistics_the_batch_matches(selection: str) -> None:
    method = _method(selection=selection, base_channels=8)
    _set_branch_stats(method, 0, _images("dark", 8, 1))
    _set_branch_stats(method, 1, _images("bright", 8, 2))
    method.train(False)
    method.predict(_images("dark", 4, 5))
    assert [i["branch"] for i in method.case_info()] == [0] * 4
    assert method.case_info()[0]["distance_similar"] < method.case_info()[0]["distance_dissimilar"]
    method.predict(_images("bright", 4, 6))
    assert [i["branch"] for i in method.case_info()] == [1] * 4


def test_selected_output_is_that_branch_run_alone_with_batch_statistics() -> None:
    method = _method()
    _set_branch_stats(method, 1, _images("bright", 8, 2))
    images = _images("bright", 3, 7)
    probs = method.predict(images)
    assert method.case_info()[0]["branch"] == 1
    with torch.no_grad(), branch(1), batch_statistics(method.network):
        alone = method.network(method.network_input(images))
    assert torch.allclose(probs, foreground_probability(alone), atol=1e-5)


def test_repo_literal_depends_on_batch_history_and_restarts_on_mode_switch() -> None:
    method = _method(selection="repo-literal")
    _set_branch_stats(method, 0, _images("dark", 8, 1))
    _set_branch_stats(method, 1, _images("bright", 8, 2))
    method.train(False)
    method.predict(_images("bright", 4, 3))
    first = method.case_info()[0]["distance_similar"]
    method.predict(_images("bright", 4, 3))  # same batch again: the running copy moved further
    assert method.case_info()[0]["distance_similar"] > first
    method.train(False)
    method.predict(_images("bright", 4, 3))
    assert method.case_info()[0]["distance_similar"] == pytest.approx(first)


@pytest.mark.parametrize("selection", ["batch-stats", "repo-literal"])
def test_predict_never_changes_the_stored_statistics(selection: str) -> None:
    method = _method(selection=selection)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": _images("dark", 4, 1), "mask": torch.zeros(4, 1, SIZE, SIZE)}
    batch["mask"][:, :, 8:12, 8:12] = 1
    method.update({g: method.make_view(g, batch, gen) for g in method.training_groups()})
    stored = _running(method)
    params = [p.clone() for p in method.network.parameters()]
    method.train(False)
    for seed in range(3):
        method.predict(_images("bright", 4, seed))
    assert all(torch.equal(a, b) for a, b in zip(stored, _running(method), strict=True))
    assert all(torch.equal(a, b) for a, b in
               zip(params, method.network.parameters(), strict=True))


def test_update_steps_each_domain_through_its_own_branch() -> None:
    method = _method()
    gen = torch.Generator().manual_seed(0)
    batch = {"image": _images("dark", 4, 1), "mask": torch.zeros(4, 1, SIZE, SIZE)}
    logs = method.update({g: method.make_view(g, batch, gen) for g in method.training_groups()})
    assert set(logs) == {"similar/dice_loss", "dissimilar/dice_loss", "loss"}
    assert int(method.optimizer.state_dict()["state"][0]["step"]) == 2  # one step per group
    first = dual_bns(method.network)[0]
    # ss = the dark source, sd = its inversion: the two branches saw different statistics
    assert float(first.bns[0].num_batches_tracked) == float(first.bns[1].num_batches_tracked) == 1
    assert not torch.allclose(first.bns[0].running_mean, first.bns[1].running_mean)


def test_state_round_trip_includes_the_scheduler(tmp_path: Path) -> None:
    method = _method()
    gen = torch.Generator().manual_seed(0)
    batch = {"image": _images("dark", 4, 1), "mask": torch.zeros(4, 1, SIZE, SIZE)}
    batch["mask"][:, :, 4:9, 4:9] = 1
    for epoch in range(3):
        method.update({g: method.make_view(g, batch, gen) for g in method.training_groups()})
        method.end_epoch(epoch)
    lr = method.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3 * 0.99**3)
    save_checkpoint(tmp_path / "m.pt", {"method": method.state_dict()})
    clone = _method()
    clone.load_state_dict(load_checkpoint(tmp_path / "m.pt")["method"])
    assert clone.scheduler.state_dict() == method.scheduler.state_dict()
    test = _images("bright", 3, 9)
    assert torch.equal(clone.predict(test), method.predict(test))
    assert clone.case_info() == method.case_info()
    # the next epoch continues the schedule and the same step gives the same weights
    for m in (method, clone):
        m.update({g: m.make_view(g, batch, torch.Generator().manual_seed(5))
                  for g in m.training_groups()})
        m.end_epoch(3)
    assert clone.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.99**4)
    assert all(torch.allclose(a, b) for a, b in
               zip(method.network.parameters(), clone.network.parameters(), strict=True))


def test_user_errors_name_the_problem() -> None:
    hp = resolve_hparams(SadnMethod.hparam_space(), "smoke")
    with pytest.raises(UserError, match="divisible by 16"):
        SadnMethod(hp, torch.device("cpu"), 40)
    with pytest.raises(UserError, match="selection"):
        SadnMethod({**hp, "selection": "eval"}, torch.device("cpu"), SIZE)
