"""MLN-net against the paper: Eq. 18's joint cosine option, and Q_d from an eval-mode pass with
the end-of-epoch weights (`stats_record=eval-pass`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import resolve_hparams
from methods.mlnnet import MlnNet
from methods.multibranch import MultiBranchMethod
from methods.networks.multinorm import branch, capture, multinorms
from methods.networks.swin_unet import SwinUnet
from methods.selection import branch_scores

SIZE = 32


def _mlnnet(**overrides: object) -> MultiBranchMethod:
    hp = {**resolve_hparams(MlnNet.hparam_space(), "smoke"), **overrides}
    torch.manual_seed(0)
    return MlnNet(hp, torch.device("cpu"), SIZE)


def _source_batch(seed: int, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, SIZE, SIZE, generator=g),
            "mask": (torch.rand(n, 1, SIZE, SIZE, generator=g) > 0.97).float()}


def _train_steps(method: MultiBranchMethod, steps: int) -> None:
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)
        views = {g: method.make_view(g, _source_batch(step), gen)
                 for g in method.training_groups()}
        method.update(views)


def test_joint_form_is_one_cosine_of_the_concatenated_vector() -> None:
    g = torch.Generator().manual_seed(0)
    k, b, c = 2, 3, 5
    t_mean, t_std = torch.randn(k, b, c, generator=g), 10 * torch.rand(k, b, c, generator=g)
    r_mean, r_std = torch.randn(k, c, generator=g), 10 * torch.rand(k, c, generator=g)
    joint = branch_scores([(t_mean, t_std)], [(r_mean, r_std)], form="joint")
    summed = branch_scores([(t_mean, t_std)], [(r_mean, r_std)])
    for kk in range(k):
        for i in range(b):
            expect = F.cosine_similarity(torch.cat([t_mean[kk, i], t_std[kk, i]]),
                                         torch.cat([r_mean[kk], r_std[kk]]), dim=0)
            assert torch.isclose(joint[i, kk], expect, atol=1e-6)
            two = (F.cosine_similarity(t_mean[kk, i], r_mean[kk], dim=0)
                   + F.cosine_similarity(t_std[kk, i], r_std[kk], dim=0))
            assert torch.isclose(summed[i, kk], two, atol=1e-6)
    assert not torch.allclose(joint, summed / 2)  # the std part's norm weighs in the joint one
    with pytest.raises(ValueError, match=r"Eq\. 18 form"):
        branch_scores([(t_mean, t_std)], [(r_mean, r_std)], form="other")


def test_similarity_form_is_an_inference_hparam_used_by_predict() -> None:
    assert "similarity_form" in MlnNet.inference_hparams
    method = _mlnnet(similarity_form="joint")
    _train_steps(method, 2)
    method.end_epoch(0)
    method.predict(torch.rand(2, 1, SIZE, SIZE))
    assert all("score_similar" in i for i in method.case_info())


def test_eval_pass_records_q_d_in_eval_mode_with_the_final_weights() -> None:
    method = _mlnnet(stats_record="eval-pass", drop_path_rate=0.3)
    _train_steps(method, 3)
    kept = [torch.cat(v).float() for v in method._views]
    assert [len(v) for v in kept] == [12, 12]  # 3 steps x 4 views per branch
    method.end_epoch(0)
    assert method._views == [[], []]
    layers = [m for _, m in multinorms(method.network)]
    method.network.eval()
    with torch.no_grad():
        for k, images in enumerate(kept):  # by hand: eval mode, branch k, these weights
            with branch(k), capture(method.network) as stats:
                method.network(images)
            for layer, (mean, std) in zip(layers, stats, strict=True):
                assert torch.allclose(layer.stat_mean[k], mean.mean(0), atol=1e-5)
                assert torch.allclose(layer.stat_std[k], std.mean(0), atol=1e-5)
                assert int(layer.stat_count[k]) == 12
    # the default records in train mode over the changing weights: other numbers
    default = _mlnnet(drop_path_rate=0.3)
    _train_steps(default, 3)
    default.end_epoch(0)
    ours = [m for _, m in multinorms(default.network)]
    assert any(not torch.allclose(a.stat_std, b.stat_std, atol=1e-4)
               for a, b in zip(layers, ours, strict=True))


def test_eval_pass_views_survive_a_mid_epoch_checkpoint() -> None:
    method = _mlnnet(stats_record="eval-pass")
    _train_steps(method, 2)
    state = method.state_dict()
    resumed = _mlnnet(stats_record="eval-pass")
    resumed.load_state_dict(state)
    assert [torch.cat(v).shape[0] for v in resumed._views] == [8, 8]
    assert all(torch.equal(torch.cat(a), torch.cat(b))
               for a, b in zip(method._views, resumed._views, strict=True))


def test_two_layernorm_sets_add_0075m_parameters_at_the_paper_size() -> None:
    """The paper reports +1.3 M for MLN-net over Swin-Unet; one extra LN affine set of the
    paper configuration is 0.075 M (102 LayerNorms)."""
    with torch.device("meta"):
        net = SwinUnet(img_size=512, in_chans=1, embed_dim=96, depths=[2, 2, 18, 2],
                       window_size=8)
    lns = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    extra = sum(p.numel() for m in lns for p in m.parameters())
    assert len(lns) == 102 and round(extra / 1e6, 3) == 0.075
