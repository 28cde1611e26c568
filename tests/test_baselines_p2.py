"""P2 baselines Iadml, Musn and CA-net: parameter counts, the local Laplacian filter, FCM,
inversion views, positive patches, and CA-net's use of real adjacent slices."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from benchmark.config import get_profile, resolve_hparams
from benchmark.errors import UserError
from benchmark.evaluate import evaluate
from benchmark.progress import Reporter
from benchmark.registry import METHODS
from benchmark.trainer import to_batch
from datasets.domain import DomainData
from methods.fcm import brightest_cluster_mask, fuzzy_cmeans_weighted, intensity_histogram
from methods.local_laplacian import (
    collapse,
    laplacian_pyramid,
    local_laplacian_filter,
    local_laplacian_reference,
)


def _method(name: str, profile: str = "smoke", size: int = 32, **overrides: object):
    cls = METHODS.all()[name].cls
    hparams = {**resolve_hparams(cls.hparam_space(), profile), **overrides}
    torch.manual_seed(0)
    return cls(hparams, torch.device("cpu"), size)


# --- registration and parameter counts (docs/methods/<name>.md, +-2%) --------------
@pytest.mark.parametrize(("name", "display", "params"), [
    ("iadml", "Iadml", 0.39e6), ("musn", "Musn", 7.8e6), ("canet", "CA-net", 3.0e6)])
def test_paper_profile_parameter_counts_and_registration(name: str, display: str,
                                                         params: float) -> None:
    info = METHODS.all()[name]
    assert (info.display_name, info.group) == (display, "P2")
    count = _method(name, "paper", 512).num_parameters()
    assert abs(count - params) / params < 0.02, count


# --- local Laplacian filter -----------------------------------------------------------------
def test_laplacian_pyramid_collapses_to_the_image() -> None:
    x = torch.rand(2, 1, 24, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(collapse(laplacian_pyramid(x, 4)), x, atol=1e-12)


def test_fast_filter_converges_to_the_reference_algorithm() -> None:
    g = torch.Generator().manual_seed(1)
    x = 0.2 + 0.3 * torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    x[..., 8:] += 0.4  # an edge above sigma_r next to small details
    ref = local_laplacian_reference(x, sigma_r=0.2, alpha=0.5)
    errors = [float((local_laplacian_filter(x, 0.2, 0.5, samples=k) - ref).abs().max())
              for k in (8, 128)]
    assert errors[1] < 5e-3
    assert errors[1] < errors[0]


def test_filter_keeps_edges_and_boosts_small_details() -> None:
    x = torch.full((1, 1, 64, 64), 0.2, dtype=torch.float64)
    x[..., 32:] = 0.8  # a 0.6 step: an edge (> sigma_r)
    for r in (16, 48):  # small bright details of 0.04 on both sides
        x[..., r - 1:r + 1, 10:12] += 0.04
        x[..., r - 1:r + 1, 52:54] += 0.04
    y = local_laplacian_filter(x, sigma_r=0.2, alpha=0.5, samples=32)
    step_in = float(x[..., 40:56, 20:44].mean() - x[..., 8:24, 20:44].mean())
    step_out = float(y[..., 40:56, 20:44].mean() - y[..., 8:24, 20:44].mean())
    assert abs(step_out - step_in) < 0.02
    detail_in = float(x[..., 15:17, 10:12].mean() - x[..., 15:17, 20:24].mean())
    detail_out = float(y[..., 15:17, 10:12].mean() - y[..., 15:17, 20:24].mean())
    assert detail_out > 1.3 * detail_in


# --- fuzzy C-means --------------------------------------------------------------------------
def test_fcm_memberships_sum_to_one_and_separate_two_clusters() -> None:
    g = torch.Generator().manual_seed(2)
    img = torch.cat([0.2 + 0.03 * torch.randn(200, generator=g),
                     0.8 + 0.03 * torch.randn(100, generator=g)]).clamp(0, 1).view(1, 1, 15, 20)
    values, counts = intensity_histogram(img)
    fit = fuzzy_cmeans_weighted(values, counts, c=2)
    assert torch.allclose(fit.memberships.sum(1), torch.ones(1, 256, dtype=torch.float64))
    centres = sorted(fit.centres[0].tolist())
    assert abs(centres[0] - 0.2) < 0.02 and abs(centres[1] - 0.8) < 0.02
    assert int(brightest_cluster_mask(img, c=2).sum()) == 100


def test_histogram_fcm_reproduces_scikit_fuzzy() -> None:
    import skfuzzy  # the reference implementation; a test dependency (pyproject [test])

    g = torch.Generator().manual_seed(3)
    bins = torch.randint(0, 256, (20, 20), generator=g)
    img = (bins.double() / 255).view(1, 1, 20, 20)
    values, counts = intensity_histogram(img)
    u0 = torch.rand(1, 3, 256, generator=g, dtype=torch.float64)
    u0 = u0 / u0.sum(1, keepdim=True)
    ours = fuzzy_cmeans_weighted(values, counts, 3, m=2.0, error=1e-5, init=u0)
    centres, u, *_, iters, _ = skfuzzy.cluster.cmeans(
        img.flatten().numpy()[None], 3, 2.0, 1e-5, 300, init=u0[0][:, bins.flatten()].numpy())
    assert np.allclose(ours.centres[0].numpy(), centres.ravel(), atol=1e-10)
    assert np.allclose(ours.memberships[0][:, bins.flatten()].numpy(), u, atol=1e-10)
    assert int(ours.iterations[0]) == iters


# --- Iadml ----------------------------------------------------------------------------------
def test_iadml_inverts_a_reproducible_random_part_of_the_batch() -> None:
    method = _method("iadml")
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    batch = {"image": images, "mask": (images > 0.9).float()}
    views = [method.make_view("source", batch, torch.Generator().manual_seed(5))
             for _ in range(2)]
    assert torch.equal(views[0]["image"], views[1]["image"])
    assert torch.equal(views[0]["mask"], batch["mask"])
    inverted = [torch.allclose(v, 1 - x) for v, x in zip(views[0]["image"], images, strict=True)]
    kept = [torch.equal(v, x) for v, x in zip(views[0]["image"], images, strict=True)]
    assert all(a != b for a, b in zip(inverted, kept, strict=True))
    assert 16 < sum(inverted) < 48  # invert_prob = 0.5


# --- Musn -----------------------------------------------------------------------------------
def _lesion_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    images = 0.3 * torch.rand(4, 1, 32, 32, generator=g)
    masks = torch.zeros(4, 1, 32, 32)
    masks[0, :, 4:8, 20:26] = 1
    masks[2, :, 24:28, 2:6] = 1  # images 1 and 3 have no lesion
    return {"image": (images + 0.6 * masks).clamp(0, 1), "mask": masks}


def test_musn_trains_on_positive_patches_only() -> None:
    method = _method("musn")
    batch = _lesion_batch()
    view = method.make_view("source", batch, torch.Generator().manual_seed(7))
    p = int(method.hparams["patch_size"])
    assert view["image"].shape == (4, 1, p, p) and view["mask"].shape == (4, 1, p, p)
    assert bool((view["mask"].flatten(1).sum(1) > 0).all())  # negatives replaced by positives
    again = method.make_view("source", batch, torch.Generator().manual_seed(7))
    assert torch.equal(view["image"], again["image"])


def test_musn_predicts_whole_images_and_gates_with_fcm() -> None:
    batch = _lesion_batch()
    plain = _method("musn")
    probs = plain.predict(batch["image"])
    assert probs.shape == batch["image"].shape
    assert len(plain.case_info()) == 4 and "fcm_area" in plain.case_info()[0]
    gated = _method("musn", fcm_gate=True)
    gated.load_state_dict(plain.state_dict())
    cand = gated.candidates(gated.enhance(batch["image"]))
    assert torch.equal(gated.predict(batch["image"]), probs * cand)


def test_musn_rejects_a_bad_patch_size() -> None:
    with pytest.raises(UserError, match="patch_size"):
        _method("musn", patch_size=24)


# --- CA-net ---------------------------------------------------------------------------------
def _volume_domain() -> DomainData:
    """Two 3-slice volumes and two single images, all different, 32 px."""
    g = np.random.default_rng(8)
    images = g.random((8, 32, 32)).astype(np.float32)
    meta = [{"volume_id": f"V{i // 3}", "slice": i % 3} if i < 6 else {} for i in range(8)]
    return DomainData("toy", images, np.zeros((8, 32, 32), np.uint8), np.ones((8, 2)),
                      [f"P{i}" for i in range(8)], [f"I{i}" for i in range(8)], meta)


def test_canet_uses_real_neighbours_and_records_the_input() -> None:
    method = _method("canet")
    method.train(False)
    data = _volume_domain()
    batch = to_batch(data, np.array([1, 4, 6]), torch.device("cpu"), method.context_slices)
    assert batch["slices"].shape == (3, 3, 32, 32)
    probs = method.predict_batch(batch)
    assert [c["slices"] for c in method.case_info()] == ["adjacent", "adjacent", "replicated"]
    replicated = method.predict(batch["image"])
    assert [c["slices"] for c in method.case_info()] == ["replicated"] * 3
    assert not torch.allclose(probs[:2], replicated[:2])  # real neighbours change the output
    assert torch.allclose(probs[2], replicated[2])  # no volume: the replicated input


def test_canet_slice_source_lands_in_per_case_results() -> None:
    method = _method("canet", slices=5)
    assert method.context_slices == 5
    reporter = Reporter(console=Console(file=io.StringIO()), plain=True)
    table = evaluate(method, _volume_domain(), np.arange(8), get_profile("smoke"),
                     torch.device("cpu"), reporter, "toy")
    assert table["info_slices"].tolist() == ["adjacent"] * 6 + ["replicated"] * 2
