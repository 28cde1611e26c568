"""MLN-net and its ablations: branch selection, statistics in checkpoints, combination rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.config import resolve_hparams
from benchmark.registry import METHODS
from benchmark.trainer import load_checkpoint, save_checkpoint
from methods.multibranch import MultiBranchMethod
from methods.networks.multinorm import branch, end_recording_period, multinorms
from methods.selection import branch_scores, choose, correctional_mean

SIZE = 32


def _method(name: str, **overrides: object) -> MultiBranchMethod:
    info = METHODS.get(name)
    hp = {**resolve_hparams(info.cls.hparam_space(), "smoke"), **overrides}
    torch.manual_seed(0)
    return info.cls(hp, torch.device("cpu"), SIZE)


def _images(kind: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Two clearly different input distributions: dark low-contrast, or bright inverted."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, SIZE, SIZE, generator=g)
    return 0.1 + 0.2 * base if kind == "dark" else 1.0 - 0.5 * base


def _record(method: MultiBranchMethod, per_branch: list[torch.Tensor]) -> None:
    """Record branch k's statistics on `per_branch[k]` as training would."""
    method.network.train()
    with torch.no_grad():
        for k, images in enumerate(per_branch):
            with branch(k):
                method.network(images)
    end_recording_period(method.network)


@pytest.mark.parametrize("name", ["mlnnet", "unet-star", "mlnnet-e", "unet-e"])
def test_selection_picks_the_branch_whose_statistics_the_input_matches(name: str) -> None:
    method = _method(name)
    _record(method, [_images("dark", 8, 1), _images("bright", 8, 2)])
    method.predict(_images("dark", 3, 5))
    assert [i["branch"] for i in method.case_info()] == [0, 0, 0]
    method.predict(_images("bright", 3, 6))
    assert [i["branch"] for i in method.case_info()] == [1, 1, 1]
    if name == "mlnnet":  # Eq. 20 as printed picks the least similar branch
        literal = _method(name, selection="paper-literal")
        literal.network.load_state_dict(method.network.state_dict())
        literal.predict(_images("dark", 3, 5))
        assert [i["branch"] for i in literal.case_info()] == [1, 1, 1]


def test_selected_output_equals_that_branch_run_alone() -> None:
    method = _method("mlnnet")
    _record(method, [_images("dark", 8, 1), _images("bright", 8, 2)])
    with torch.no_grad():
        for _, m in multinorms(method.network):
            m.weight[1] += 0.3  # the branches now give different outputs
    images = torch.cat([_images("dark", 2, 3), _images("bright", 2, 4)])
    probs = method.predict(images)
    chosen = [i["branch"] for i in method.case_info()]
    method.network.eval()
    for i, k in enumerate(chosen):
        with torch.no_grad(), branch(k):
            alone = torch.sigmoid(method.network(images[i:i + 1]))
        assert torch.allclose(probs[i:i + 1], alone, atol=1e-5)


def test_statistics_round_trip_through_checkpoint_files(tmp_path: Path) -> None:
    method = _method("mlnnet")
    _record(method, [_images("dark", 8, 1), _images("bright", 8, 2)])
    save_checkpoint(tmp_path / "m.pt", {"method": method.state_dict()})
    clone = _method("mlnnet")
    clone.load_state_dict(load_checkpoint(tmp_path / "m.pt")["method"])
    for (_, a), (_, b) in zip(multinorms(method.network), multinorms(clone.network),
                              strict=True):
        assert torch.equal(a.stat_mean, b.stat_mean) and torch.equal(a.stat_std, b.stat_std)
        assert bool((a.stat_count > 0).all())


def test_training_records_statistics_and_correctional_means_per_branch() -> None:
    method = _method("mlnnet-plus")
    batch = {"image": _images("dark", 4), "mask": torch.zeros(4, 1, SIZE, SIZE)}
    batch["mask"][:, :, 8:12, 8:12] = 1
    gen = torch.Generator().manual_seed(0)
    views = {g: method.make_view(g, batch, gen) for g in method.training_groups()}
    assert method.training_groups() == ["similar", "dissimilar"]
    logs = method.update(views)
    assert {"similar/dice_loss", "dissimilar/dice_loss", "loss"} <= set(logs)
    method.end_epoch(0)
    first = multinorms(method.network)[0][1]
    assert first.stat_count.tolist() == [4, 4]
    expected = [float(correctional_mean(views[g]["image"]).mean()) for g in ("similar",
                                                                              "dissimilar")]
    assert method.pixel_mean.tolist() == pytest.approx(expected, rel=1e-5)


def test_sum_combination_is_the_union_of_branch_masks() -> None:
    method = _method("mlnnet-r")
    _record(method, [_images("dark", 4, 1), _images("bright", 4, 2)])
    images = _images("dark", 2, 3)
    probs = method.predict(images)
    method.network.eval()
    per_branch = []
    for k in range(2):
        with torch.no_grad(), branch(k):
            per_branch.append(torch.sigmoid(method.network(images)))
    union = (per_branch[0] >= 0.5) | (per_branch[1] >= 0.5)
    assert torch.equal(probs >= 0.5, union)


def test_ablation_configurations() -> None:
    assert _method("basenet").training_groups() == ["source"]
    pooled = _method("basenet-s")
    assert pooled.training_groups() == ["pooled"] and len(pooled.groups[0].transforms) == 6
    assert multinorms(pooled.network) == []  # one branch: plain LayerNorms
    assert len(multinorms(_method("mlnnet").network)) > 0
    block = _method("mlnnet", norms="block")
    everything = _method("mlnnet")
    assert 0 < len(multinorms(block.network)) < len(multinorms(everything.network))
    for name in ("unet-r", "unet-e", "unet-star"):
        assert all(m.num_branches == 2 for _, m in multinorms(_method(name).network))


def test_parameter_count_is_swinunet_plus_one_extra_ln_affine_set() -> None:
    from methods.networks.multinorm import MultiLayerNorm

    plain = _method("basenet")
    mln = _method("mlnnet")
    extra = sum(m.weight[0].numel() + m.bias[0].numel() for _, m in multinorms(mln.network)
                if isinstance(m, MultiLayerNorm))
    assert mln.num_parameters() == plain.num_parameters() + extra


def test_branch_scores_and_choice_by_hand() -> None:
    # two layers, K=2 branches, B=1 image; branch 0's reference equals the target exactly
    t = [(torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]]), torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]]))]
    r = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 1.0]]))]
    cos = branch_scores(t * 2, r * 2, "cosine")
    assert cos.tolist() == [pytest.approx([4.0, 2.0])]
    assert choose(cos).tolist() == [0] and choose(cos, selection="paper-literal").tolist() == [1]
    euc = branch_scores(t, r, "euclidean")
    assert euc.tolist() == [pytest.approx([0.0, 2**0.5])] and choose(euc, "euclidean").item() == 0
    # the correctional mean is appended to the mean vectors
    plus = branch_scores(t, r, "euclidean", torch.tensor([0.5]), torch.tensor([0.5, 1.5]))
    assert plus.tolist() == [pytest.approx([0.0, 3**0.5])]


def test_correctional_mean_excludes_the_background_minimum() -> None:
    img = torch.tensor([[[[0.0, 0.0], [0.4, 0.8]]]])
    assert correctional_mean(img).tolist() == pytest.approx([0.6])
    flat = torch.full((1, 1, 2, 2), 0.3)
    assert correctional_mean(flat).tolist() == pytest.approx([0.3])


def test_cli_run_stores_the_chosen_branch_and_perf_runs(tmp_path: Path,
                                                        session_cache: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from benchmark.cli import app

    cli = CliRunner()
    res = cli.invoke(app, ["run", "--method", "mlnnet", "--source", "ffdm", "--target", "dbt",
                           "--profile", "smoke", "--no-progress", "--results-dir",
                           str(tmp_path)])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "runs").iterdir())
    cases = pd.read_parquet(run / "per_case.parquet")
    assert set(cases["info_branch"]) <= {0, 1}
    assert set(cases["info_branch_name"]) <= {"similar", "dissimilar"}
    assert {"info_score_similar", "info_score_dissimilar"} <= set(cases.columns)
    perf = cli.invoke(app, ["perf", "mlnnet", "--profile", "smoke", "--image-size", "32",
                            "--batch", "2", "--repeats", "1"])
    assert perf.exit_code == 0, perf.output
    assert "speed-up" in perf.output and "yes" in perf.output and "ratio" in perf.output


def test_dice_losses_eq14() -> None:
    from methods.losses import foreground_dice_loss, two_class_dice_loss

    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :2, :2] = 1
    perfect = torch.where(masks > 0, 20.0, -20.0)
    assert float(foreground_dice_loss(perfect, masks)) == pytest.approx(0.0, abs=1e-6)
    assert float(two_class_dice_loss(perfect, masks)) == pytest.approx(0.0, abs=1e-6)
    # all background: the two-class loss keeps the background class's Dice (2*28/(32+28)) and
    # loses only the foreground half, the foreground loss is 1: why MLN-net defaults to
    # dice_classes=foreground (the two-class form stalls at an all-background prediction)
    empty = torch.full_like(masks, -20.0)
    bg_dice = 2 * 28 / (32 + 28)
    assert float(two_class_dice_loss(empty, masks)) == pytest.approx(1 - bg_dice / 2, abs=1e-4)
    assert float(foreground_dice_loss(empty, masks)) == pytest.approx(1.0, abs=1e-4)
