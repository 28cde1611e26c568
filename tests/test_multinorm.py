"""Multi-branch norms: routing by context, batched K-branch forward, recorded statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.networks.multinorm import (
    MultiLayerNorm,
    branch,
    capture,
    convert_layernorms,
    end_recording_period,
    multinorms,
)


def _net(k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 8),
                        nn.LayerNorm(8), nn.Linear(8, 2))
    convert_layernorms(net, k)
    with torch.no_grad():  # make the branches differ
        for _, m in multinorms(net):
            m.weight.add_(torch.randn_like(m.weight) * 0.3)
            m.bias.add_(torch.randn_like(m.bias) * 0.3)
    return net


def test_convert_keeps_function_and_copies_affine_into_every_branch() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(5, 4)
    before = net(x)
    names = convert_layernorms(net, 2)
    assert names == ["1"] and isinstance(net[1], MultiLayerNorm)
    for k in range(2):
        with branch(k):
            assert torch.allclose(net(x), before, atol=1e-6)
    with pytest.raises(RuntimeError, match="branch"):
        net(x)


def test_only_selected_layernorms_are_converted() -> None:
    net = nn.Sequential(nn.LayerNorm(3), nn.LayerNorm(3))
    assert convert_layernorms(net, 2, only={"1"}) == ["1"]
    assert type(net[0]) is nn.LayerNorm and isinstance(net[1], MultiLayerNorm)


def test_changing_branch_k_changes_only_branch_k_outputs() -> None:
    net = _net()
    x = torch.randn(6, 4)
    outs = []
    for k in range(3):
        with branch(k):
            outs.append(net(x))
    with torch.no_grad():
        for _, m in multinorms(net):
            m.weight[1] += 0.5
    for k in range(3):
        with branch(k):
            same = torch.allclose(net(x), outs[k])
        assert same == (k != 1)


def test_per_sample_ids_equal_separate_forwards() -> None:
    net = _net()
    x = torch.randn(4, 4)
    ids = torch.arange(3).repeat_interleave(4)
    with branch(ids):
        batched = net(x.repeat(3, 1))
    for k in range(3):
        with branch(k):
            assert torch.allclose(batched[4 * k:4 * (k + 1)], net(x), atol=1e-6)
    channels_first = MultiLayerNorm(5, 2, channels_first=True)
    with torch.no_grad():
        channels_first.weight[1] = 2.0
    img = torch.randn(2, 5, 3, 3)
    with branch(torch.tensor([0, 1])):
        y = channels_first(img)
    ref = nn.functional.layer_norm(img.movedim(1, -1), (5,)).movedim(-1, 1)
    assert torch.allclose(y[0], ref[0], atol=1e-6) and torch.allclose(y[1], 2 * ref[1], atol=1e-5)


def test_sample_layernorm_is_groupnorm_with_one_group_per_branch() -> None:
    """over='sample' normalises each image over C,H,W (GroupNorm(1)) with branch k's affine;
    per-sample ids equal the per-batch forwards; a bad axis or layout is refused."""
    torch.manual_seed(0)
    norm = MultiLayerNorm(4, 2, channels_first=True, over="sample")
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    img = torch.randn(3, 4, 5, 6) * 3 + 1
    for k in range(2):
        ref = nn.functional.group_norm(img, 1, norm.weight[k], norm.bias[k], 1e-5)
        with branch(k):
            assert torch.allclose(norm(img), ref, atol=1e-5)
    with branch(torch.tensor([1, 0, 1])):
        mixed = norm(img)
    for i, k in enumerate([1, 0, 1]):
        with branch(k):
            assert torch.allclose(mixed[i], norm(img[i:i + 1])[0], atol=1e-6)
    # the spatial contrast inside one image survives (a per-pixel LN over C would not)
    flat = torch.ones(1, 4, 2, 2)
    flat[..., 0, 0] = 5.0
    with branch(0):
        out = MultiLayerNorm(4, 1, channels_first=True, over="sample")(flat)
    assert float(out[0, 0, 0, 0] - out[0, 0, 1, 1]) > 1.0
    with pytest.raises(ValueError, match="over"):
        MultiLayerNorm(4, 2, channels_first=True, over="pixel")
    with pytest.raises(ValueError, match="channels_first"):
        MultiLayerNorm(4, 2, over="sample")


def test_statistics_are_recorded_per_branch_and_survive_state_dict() -> None:
    net = _net(2)
    net.train()
    xs = [torch.randn(8, 5, 4), torch.randn(8, 5, 4) * 3 + 1]  # (B, tokens, C)
    for k, x in enumerate(xs):
        with branch(k):
            net(x)
    end_recording_period(net)
    first = multinorms(net)[0][1]
    with torch.no_grad():
        h = net[0](xs[1])  # the first norm's input for branch 1
    # per image: mean/std over tokens per channel; then averaged over the images
    assert torch.allclose(first.stat_mean[1], h.mean(1).mean(0), atol=1e-6)
    assert torch.allclose(first.stat_std[1], h.std(1, unbiased=False).mean(0), atol=1e-6)
    assert first.stat_count.tolist() == [8, 8]
    # eval-mode forwards record nothing; the stats round-trip through a state dict
    saved = first.stat_mean.clone()
    net.eval()
    with branch(0):
        net(torch.randn(8, 5, 4) * 10)
    end_recording_period(net)
    assert torch.equal(first.stat_mean, saved)
    clone = _net(2)
    clone.load_state_dict(net.state_dict())
    assert torch.equal(multinorms(clone)[0][1].stat_mean, saved)


def test_last_batch_recording_keeps_only_the_last_batch() -> None:
    norm = MultiLayerNorm(3, 1, record="last-batch").train()
    a, b = torch.randn(4, 6, 3), torch.randn(4, 6, 3) + 5
    with branch(0):
        norm(a)
        norm(b)
    norm.finalise_period()
    assert torch.allclose(norm.stat_mean[0], b.mean(1).mean(0), atol=1e-6)


def test_capture_returns_per_sample_statistics_in_layer_order() -> None:
    net = _net(2).eval()
    x = torch.randn(3, 5, 4)
    with branch(torch.tensor([0, 0, 1])), capture(net) as stats:
        net(x)
    assert len(stats) == 2 and stats[0][0].shape == (3, 8) and stats[1][1].shape == (3, 8)
    with torch.no_grad():
        h = net[0](x)
    assert torch.allclose(stats[0][0], h.mean(1), atol=1e-6)
    assert torch.allclose(stats[0][1], h.std(1, unbiased=False), atol=1e-6)
