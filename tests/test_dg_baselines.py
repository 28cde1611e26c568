"""P3 domain-generalisation baselines: BigAug transforms, DoFE's knowledge pool, FedDG's parts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmark.config import resolve_hparams
from methods import bigaug_transforms as ba
from methods.bigaug import BigAugMethod
from methods.boundary_contrast import boundary_masks, nt_xent
from methods.dofe import DofeMethod, soft_domain_labels
from methods.feddg import FedDGMethod, fedavg
from methods.frequency import amplitude_phase, band_slices, interpolate_amplitude, low_band
from methods.networks.dofe_deeplab import DofeDeepLab

NONE: dict[str, None] = dict.fromkeys(ba.STEPS)


def _image(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(1, size, size, generator=g)


def _square_mask(size: int = 32, lo: int = 10, hi: int = 20) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[:, lo:hi, lo:hi] = 1
    return m


def _batch(seed: int, n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, 8:16, 10:20] = 1
    return {"image": torch.rand(n, 1, size, size, generator=g) * 0.3 + 0.6 * masks,
            "mask": masks}


# --- BigAug --------------------------------------------------------------------------------
def test_bigaug_order_and_published_ranges() -> None:
    assert ba.STEPS == ("blur", "sharpen", "noise", "brightness", "contrast", "perturb",
                        "rotate", "scale", "elastic")
    cfg = ba.BigAugConfig()
    gen = torch.Generator().manual_seed(0)
    draws = [ba.sample_params(cfg, gen, 16, 16) for _ in range(400)]
    for step in ba.STEPS:
        rate = np.mean([d[step] is not None for d in draws])
        assert 0.4 < rate < 0.6, (step, rate)  # p = 0.5

    def values(step: str, key: str) -> np.ndarray:
        return np.array([d[step][key] for d in draws if d[step] is not None])

    for step, key, (lo, hi) in [("blur", "sigma", (0.25, 1.5)), ("sharpen", "sigma1", (0.25, 1.5)),
                                ("sharpen", "sigma2", (0.25, 1.5)), ("sharpen", "alpha", (10, 30)),
                                ("noise", "std", (0.1, 1.0)), ("brightness", "shift", (-0.1, 0.1)),
                                ("contrast", "gamma", (0.5, 4.5)), ("perturb", "a", (-0.1, 0.1)),
                                ("perturb", "b", (-0.1, 0.1)), ("rotate", "angle", (-20, 20)),
                                ("scale", "factor", (0.4, 1.6))]:
        v = values(step, key)
        assert v.min() >= lo and v.max() <= hi, (step, key)
        assert v.max() - v.min() > 0.8 * (hi - lo), (step, key)  # the whole range is used
    knots = torch.stack([d["elastic"]["knots"] for d in draws if d["elastic"] is not None])
    assert knots.shape[1:] == (2, 3, 3) and float(knots.abs().max()) <= 7.5 / 512 * 16 + 1e-6


def test_bigaug_quality_ranges_are_per_acquisition_pixel() -> None:
    """Blur / sharpening sigmas and the noise std scale by acquisition pixel / grid pixel;
    every other range stays the published one."""
    assert resolve_hparams(BigAugMethod.hparam_space(), "quick")["quality_scale"] == 0.25
    assert resolve_hparams(BigAugMethod.hparam_space(), "paper")["quality_scale"] == 1.0
    s = 0.25
    gen = torch.Generator().manual_seed(1)
    draws = [ba.sample_params(ba.BigAugConfig(quality_scale=s), gen, 16, 16) for _ in range(400)]
    for step, key, (lo, hi) in [("blur", "sigma", (0.25 * s, 1.5 * s)),
                                ("sharpen", "sigma1", (0.25 * s, 1.5 * s)),
                                ("sharpen", "sigma2", (0.25 * s, 1.5 * s)),
                                ("sharpen", "alpha", (10, 30)), ("noise", "std", (0.1 * s, s)),
                                ("contrast", "gamma", (0.5, 4.5)), ("scale", "factor", (0.4, 1.6))]:
        v = np.array([d[step][key] for d in draws if d[step] is not None])
        assert v.min() >= lo - 1e-12 and v.max() <= hi + 1e-12, (step, key)
        assert v.max() - v.min() > 0.8 * (hi - lo), (step, key)
    x, m = _image(), _square_mask()
    for sigma in (0.25 * s, 1.5 * s):  # sub-pixel sigmas still give a finite, normalised blur
        out = ba.gaussian_blur(x, sigma)
        assert bool(torch.isfinite(out).all()) and math.isclose(float(out.mean()),
                                                                 float(x.mean()), rel_tol=1e-3)
    out, _ = ba.apply_params(x, m, {**NONE, "sharpen": {"sigma1": 0.3, "sigma2": 0.3,
                                                         "alpha": 30.0}})
    assert bool(torch.isfinite(out).all())


def test_blur_is_a_gaussian_of_sigma() -> None:
    x = torch.zeros(1, 41, 41)
    x[0, 20, 20] = 1.0
    for sigma in (0.5, 1.0, 1.5):
        out = ba.gaussian_blur(x, sigma)[0].double()
        oracle = ndimage.gaussian_filter(x[0].double().numpy(), sigma, mode="mirror", truncate=4)
        assert np.allclose(out.numpy(), oracle, atol=1e-6)
        if sigma >= 1.0:  # below 1 px a sampled Gaussian's variance falls short of sigma^2
            offsets = torch.arange(41, dtype=torch.float64) - 20
            assert math.isclose(float((out.sum(0) * offsets**2).sum()), sigma**2, rel_tol=0.02)


def test_sharpen_is_the_papers_unsharp_mask() -> None:
    x = _image()
    b1 = ba.gaussian_blur(x, 0.7)
    b2 = ba.gaussian_blur(b1, 1.2)
    assert torch.allclose(ba.sharpen(x, 0.7, 1.2, 20.0), b1 + 20.0 * (b1 - b2), atol=1e-6)


def test_intensity_transforms_in_z_space() -> None:
    x, m = _image(), _square_mask()
    mean, std = x.mean(), x.std()
    field = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(3))
    cases = {
        "noise": ({"std": 0.5, "field": field}, x + 0.5 * std * field),
        "brightness": ({"shift": 0.1}, x + 0.1 * std),
        "perturb": ({"a": -0.1, "b": 0.05}, mean + (x - mean) * 0.9 + 0.05 * std),
    }
    for step, (params, expected) in cases.items():
        out, out_m = ba.apply_params(x, m, {**NONE, step: params})
        assert torch.allclose(out, expected, atol=1e-5), step
        assert torch.equal(out_m, m)
    out, _ = ba.apply_params(x, m, {**NONE, "contrast": {"gamma": 2.0}})
    lo, hi = x.min(), x.max()
    assert torch.allclose(out, lo + (hi - lo) * ((x - lo) / (hi - lo)) ** 2, atol=1e-5)
    assert torch.isclose(out.min(), lo) and torch.isclose(out.max(), hi, atol=1e-5)


def test_spatial_transforms_move_image_and_mask_together() -> None:
    x = torch.zeros(1, 32, 32)
    x[:, 4:10, 12:20] = 1.0
    m = (x > 0).float()
    out, out_m = ba.apply_params(x, m, {**NONE, "rotate": {"angle": 90.0}})
    # torchvision's positive angle turns counter-clockwise on screen (rows pointing down)
    assert torch.allclose(out, torch.rot90(x, -1, (-2, -1)), atol=1e-5)
    assert torch.equal(out_m, torch.rot90(m, -1, (-2, -1)))
    big = _square_mask(32, 8, 24)
    _, half = ba.apply_params(big, big, {**NONE, "scale": {"factor": 2.0}})
    assert set(half.unique().tolist()) <= {0.0, 1.0}
    assert float(half.sum()) == 32 * 32  # zoom in: the 16x16 centre fills the image
    _, small = ba.apply_params(big, big, {**NONE, "scale": {"factor": 0.8}})
    assert set(small.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(small.sum()) - 12.8**2) <= 20  # 16x16 square -> about 12.8x12.8
    # zoom out reflects the tile: no black frame, and a 1 px speck is spread, not dropped
    flat = torch.full((1, 32, 32), 0.5)
    flat[0, 15, 15] = 1.0
    out, _ = ba.apply_params(flat, torch.zeros(1, 32, 32), {**NONE, "scale": {"factor": 0.4}})
    assert float(out.min()) > 0.45 and float(out.max()) > 0.5
    assert math.isclose(float(ba.zoom_out(flat, flat, 0.4)[0].mean()), float(flat.mean()),
                        rel_tol=0.05)
    still, still_m = ba.apply_params(x, m, {**NONE, "elastic": {"knots": torch.zeros(2, 3, 3)}})
    assert torch.allclose(still, x, atol=1e-5) and torch.equal(still_m, m)
    field = ba.elastic_field(torch.full((2, 3, 3), 2.0), 32, 32)
    assert field.shape == (1, 32, 32, 2)
    assert float(field[0, 0].abs().max()) < 1e-6 and float(field[0, :, 0].abs().max()) < 1e-6
    assert math.isclose(float(field[0, 16, 16, 0]) * 32 / 2, 2.0, rel_tol=0.05)


def test_bigaug_reproducible_from_the_generator() -> None:
    batch = _batch(0)
    hp = resolve_hparams(BigAugMethod.hparam_space(), "smoke")
    method = BigAugMethod(hp, torch.device("cpu"), 32)
    views = [method.make_view("source", batch, torch.Generator().manual_seed(s))
             for s in (5, 5, 6)]
    assert torch.equal(views[0]["image"], views[1]["image"])
    assert torch.equal(views[0]["mask"], views[1]["mask"])
    assert not torch.equal(views[0]["image"], views[2]["image"])
    assert set(views[2]["mask"].unique().tolist()) <= {0.0, 1.0}
    assert method.num_parameters() == sum(p.numel() for p in method.network.parameters())


# --- DoFE ----------------------------------------------------------------------------------
def test_dofe_pool_is_k_by_304_and_updates_only_in_training() -> None:
    net = DofeDeepLab(3)  # the published widths: 256 ASPP + 48 low-level channels
    assert tuple(net.memory.shape) == (3, 304)
    pooled = torch.randn(6, 304)
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    net.memory.copy_(torch.randn(3, 304))
    before = net.memory.clone()
    net.eval()
    net.update_memory(pooled, domains)
    assert torch.equal(net.memory, before)
    net.train()
    net.update_memory(pooled, domains, momentum=0.9)
    for k in range(3):
        expected = 0.9 * before[k] + 0.1 * pooled[domains == k].mean(0)
        assert torch.allclose(net.memory[k], expected, atol=1e-6)


def test_dofe_head_starts_at_the_foreground_prior() -> None:
    net = DofeDeepLab(3, encoder="mobilenetv2_035", aspp_channels=16, low_channels=8,
                      head_channels=16)
    assert math.isclose(float(net.head[-1].bias.detach()), math.log(0.025 / 0.975),
                        rel_tol=1e-6)
    net.eval()
    with torch.no_grad():
        logits = net(torch.rand(2, 1, 64, 64), inject=False)[0]
    assert float(torch.sigmoid(logits).mean()) < 0.2  # not p = 0.5 everywhere


def test_soft_domain_labels() -> None:
    domains = torch.tensor([0, 1, 2, 2, 1])
    soft = soft_domain_labels(domains, 3, torch.Generator().manual_seed(0))
    assert torch.allclose(soft.sum(1), torch.ones(5))
    true = soft[torch.arange(5), domains]
    assert bool(((true >= 0.8) & (true <= 1.0)).all())
    assert torch.equal(soft.argmax(1), domains) and bool((soft >= 0).all())


def test_dofe_two_stages() -> None:
    hp = {**resolve_hparams(DofeMethod.hparam_space(), "smoke"), "pretrain_epochs": 1}
    torch.manual_seed(0)
    method = DofeMethod(hp, torch.device("cpu"), 32)
    assert method.training_groups() == ["original", "bezier", "inverted"]
    gen = torch.Generator().manual_seed(0)
    views = {g: method.make_view(g, _batch(1), gen) for g in method.training_groups()}
    logs = method.update(views)  # plain pre-training: no pool, no domain loss
    assert "domain_mse" not in logs and float(method.network.memory.abs().sum()) == 0.0
    method.end_epoch(0)  # prototypes = mean pooled h_s per domain of the epoch
    assert method.initialised and method.dofe_stage
    init = method.network.memory.clone()
    assert float(init.abs().sum()) > 0 and not torch.allclose(init[0], init[2])
    method.predict(views["original"]["image"])  # eval: the pool must not move
    assert torch.equal(method.network.memory, init)
    logs = method.update(views)
    assert "domain_mse" in logs and not torch.equal(method.network.memory, init)


# --- FedDG ---------------------------------------------------------------------------------
def test_amplitude_interpolation_keeps_phase_and_outer_spectrum() -> None:
    images = _image(1, 64).unsqueeze(0)
    ratio = 0.05
    target = low_band(_image(2, 64).unsqueeze(0) * 0.5, ratio)
    same = interpolate_amplitude(images, target, torch.zeros(1), ratio)
    assert torch.allclose(same, images, atol=1e-6)  # ratio 0 = identity
    lam = torch.tensor([0.6])
    out = interpolate_amplitude(images, target, lam, ratio, clip=(-math.inf, math.inf))
    amp_in, phase_in = amplitude_phase(images)
    amp_out, phase_out = amplitude_phase(out)
    rows, cols = band_slices(64, 64, ratio)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[rows, cols] = True
    assert inside.sum() == 7 * 7  # half-width floor(64 * 0.05) = 3
    assert torch.allclose(amp_out[..., ~inside], amp_in[..., ~inside], atol=1e-8)
    expected = 0.4 * amp_in[..., rows, cols] + 0.6 * target.double()
    assert torch.allclose(amp_out[..., rows, cols], expected, atol=1e-6)
    keep = amp_in > 1e-6
    dphase = torch.remainder(phase_out - phase_in + math.pi, 2 * math.pi) - math.pi
    assert float(dphase[keep].abs().max()) < 1e-5


def test_dc_swap_changes_only_the_mean() -> None:
    images = _image(3, 32).unsqueeze(0)
    other = _image(4, 32).unsqueeze(0) * 0.5
    out = interpolate_amplitude(images, low_band(other, 0.0), torch.ones(1), 0.0)
    assert torch.allclose(out - out.mean(), images - images.mean(), atol=1e-6)
    assert math.isclose(float(out.mean()), float(other.mean()), rel_tol=1e-5)


def test_fedavg_averages_client_weights() -> None:
    models = [torch.nn.Linear(2, 1) for _ in range(3)]
    for i, m in enumerate(models):
        torch.nn.init.constant_(m.weight, float(i))
        torch.nn.init.constant_(m.bias, 2.0 * i)
    avg = fedavg(models)
    assert torch.allclose(avg["weight"], torch.ones(1, 2)) and torch.allclose(avg["bias"],
                                                                               torch.tensor([2.0]))
    weighted = fedavg(models[:2], [1.0, 3.0])
    assert torch.allclose(weighted["weight"], torch.full((1, 2), 0.75))


def test_feddg_round_ends_with_the_client_average() -> None:
    hp = resolve_hparams(FedDGMethod.hparam_space(), "smoke")
    torch.manual_seed(0)
    method = FedDGMethod(hp, torch.device("cpu"), 32)
    gen = torch.Generator().manual_seed(0)
    for step in range(2):
        logs = method.update({g: method.make_view(g, _batch(step, n=2), gen)
                              for g in method.training_groups()})
    assert all(math.isfinite(v) for v in logs.values()) and logs["original/boundary"] > 0
    assert all(len(method.banks[c]) == 4 for c in method.clients)
    expected = fedavg(list(method.models))
    w0, w1 = (m.down[0][0][0].weight for m in method.models[:2])
    assert not torch.equal(w0, w1)  # the clients trained apart
    method.end_epoch(0)
    for model in [method.global_model, *method.models]:
        for k, v in model.state_dict().items():
            assert torch.allclose(v, expected[k], atol=1e-6)


def test_boundary_masks_and_nt_xent() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:18, 10:18] = 1
    contour, ring = boundary_masks(mask)
    assert float(contour.sum()) == 28 and float((contour * (1 - mask)).sum()) == 0
    assert float((ring * mask).sum()) == 0 and float(ring[0, 0, 13, 5]) == 1.0  # 5 px out
    assert float(ring[0, 0, 13, 4]) == 0.0
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 0, 0])
    tau = 0.5
    # each positive pair: similarity 1 against two negatives of similarity 0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2.0))
    assert math.isclose(float(nt_xent(emb, labels, tau)), expected, rel_tol=1e-6)
    assert float(nt_xent(emb, torch.tensor([1, 0, 2, 3]), tau)) == 0.0  # no positives


@pytest.mark.parametrize("mode", ["dc_swap", "centralised"])
def test_feddg_options_train(mode: str) -> None:
    hp = resolve_hparams(FedDGMethod.hparam_space(), "smoke")
    hp = {**hp, "freq_mode": "dc_swap"} if mode == "dc_swap" else {**hp, "federated": False}
    method = FedDGMethod(hp, torch.device("cpu"), 32)
    gen = torch.Generator().manual_seed(0)
    before = [p.clone() for p in method.global_model.parameters()]
    logs = method.update({g: method.make_view(g, _batch(0, n=2), gen)
                          for g in method.training_groups()})
    method.end_epoch(0)
    assert math.isfinite(logs["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, method.global_model.parameters(),
                                                      strict=True))


# --- bench data show --augment ---------------------------------------------------------------
def test_data_show_augment_writes_view_rows(tmp_path: Path, session_cache: Path) -> None:
    from typer.testing import CliRunner

    from benchmark.cli import app

    runner = CliRunner()
    png = tmp_path / "bigaug.png"
    res = runner.invoke(app, ["data", "show", "ffdm", "--image-size", "32", "--augment", "bigaug",
                              "--out", str(png), "--no-progress"])
    assert res.exit_code == 0, res.output
    plain = tmp_path / "plain.png"
    res = runner.invoke(app, ["data", "show", "ffdm", "--image-size", "32", "--out", str(plain),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(png).height > 1.8 * Image.open(plain).height  # one more row of views
    res = runner.invoke(app, ["data", "show", "ffdm", "--image-size", "32", "--augment", "unet",
                              "--out", str(tmp_path / "x.png"), "--no-progress"])
    assert res.exit_code == 2 and "does not augment" in res.output
