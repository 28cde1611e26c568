"""The encoder-only `fractals` pretext: FractalDB-style IFS categories (deterministic, distinct,
learnable), and `bench pretrain --pretext fractals` (encoder trained, head dropped, the decoder
left at its init but for Swin-Unet's mirrored blocks, loadable by every Swin method)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import fractals
from benchmark.config import resolve_hparams, seed_hash
from benchmark.errors import UserError
from benchmark.pretext_encoder import EncoderClassifier
from benchmark.pretrain import PretrainRequest, pretrain
from benchmark.progress import NullReporter
from methods.mlnnet import MlnNet
from methods.swinunet import SwinUnetMethod
from methods.unet import UnetMethod

CPU = torch.device("cpu")


def test_fractals_are_deterministic_per_seed_and_order_free() -> None:
    a_img, a_lab = fractals.batch(0, 10, 4, 64, classes=8)
    b_img, b_lab = fractals.batch(0, 12, 2, 64, classes=8)  # a later start, another order
    assert np.array_equal(a_img[2:], b_img) and np.array_equal(a_lab[2:], b_lab)
    c_img, _ = fractals.batch(1, 10, 4, 64, classes=8)
    assert not np.array_equal(a_img, c_img)
    val, _ = fractals.batch(0, 10, 4, 64, classes=8, stream=1)
    assert not np.array_equal(a_img, val)
    assert a_img.dtype == np.float32 and a_img.min() >= 0.0 and a_img.max() <= 1.0
    assert a_img.shape == (4, 1, 64, 64) and a_lab.dtype == np.int64


def test_categories_are_contractions_that_fill_and_differ() -> None:
    systems = [fractals.category(0, c) for c in range(16)]
    for mats, _, probs in systems:
        assert np.all(np.linalg.svd(mats, compute_uv=False).max(axis=1)
                      <= fractals.MAX_SINGULAR + 1e-9)
        assert abs(probs.sum() - 1.0) < 1e-9
    # every category drawn in 200 images, and at least a few distinct parameter sets
    labels = fractals.batch(0, 0, 200, 32, classes=16)[1]
    assert set(labels.tolist()) == set(range(16))
    assert len({systems[c][0].tobytes() for c in range(16)}) == 16
    fills = [fractals._fill_rate(fractals._chaos_game(np.random.default_rng(c), *systems[c]))
             for c in range(16)]
    assert np.mean(np.array(fills) >= fractals.MIN_FILL) >= 0.9


def test_categories_are_learnable_by_a_small_classifier() -> None:
    """The pretext carries signal: a nearest-centroid rule on downsampled images beats chance
    (1/4) on held-out images of 4 categories."""
    train, y = fractals.batch(0, 0, 400, 32, classes=4)
    test, yt = fractals.batch(0, 0, 200, 32, classes=4, stream=1)
    feats = lambda x: np.abs(np.fft.rfft2(x[:, 0] - x[:, 0].mean((1, 2), keepdims=True))  # noqa: E731
                             ).reshape(len(x), -1)
    ft, fv = feats(train), feats(test)
    cents = np.stack([ft[y == c].mean(0) for c in range(4)])
    pred = np.argmin(((fv[:, None] - cents[None]) ** 2).sum(-1), axis=1)
    assert (pred == yt).mean() > 0.35


def _fractal_weights(cache: Path, method: str = "swinunet", steps: int = 6) -> Path:
    out = pretrain(PretrainRequest(method=method, profile="smoke", steps=steps, cache_dir=cache,
                                   pretext="fractals"), NullReporter())
    assert out.weights is not None
    return out.weights


def test_encoder_only_pretraining_trains_the_encoder_and_mirrors_swin_blocks(
        tmp_path: Path) -> None:
    weights = _fractal_weights(tmp_path)
    payload = torch.load(weights, weights_only=True)
    state = payload["state_dict"]
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["pretext"] == "fractals" and manifest["trained"].startswith("encoder only")
    assert all(0.0 <= p["val_acc"] <= 1.0 for p in manifest["curve"])
    # the category count is recorded and spelled out in the rebuild command (smoke: 8)
    assert manifest["classes"] == 8 and "--classes 8" in manifest["rebuild"]
    assert not any(k.startswith("head.") for k in state)  # the classifier is dropped
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    torch.manual_seed(seed_hash(0, "formula-init"))  # the init bench pretrain starts from
    fresh = SwinUnetMethod.formula_network(hp, 32).state_dict()
    assert set(state) == set(fresh)
    assert not torch.equal(state["patch_embed.proj.weight"], fresh["patch_embed.proj.weight"])
    for key in ("output.weight", "up.expand.weight", "concat_back_dim.1.weight"):
        assert torch.equal(state[key], fresh[key]), key  # decoder-only: never trained
    n = len(hp["depths"])
    for i in range(n - 1):  # Swin-Unet's load_from: stage i's blocks into decoder n-1-i
        enc = state[f"layers.{i}.blocks.0.attn.qkv.weight"]
        assert torch.equal(state[f"layers_up.{n - 1 - i}.blocks.0.attn.qkv.weight"], enc)


def test_encoder_only_weights_start_a_swin_method_through_the_formula_path(
        tmp_path: Path) -> None:
    weights = _fractal_weights(tmp_path)
    state = torch.load(weights, weights_only=True)["state_dict"]
    hp = {**resolve_hparams(MlnNet.hparam_space(), "smoke"), "pretrained": str(weights)}
    method = MlnNet(hp, CPU, 32)
    assert method.init.startswith(f"file {weights.name} (")
    own = method.network.state_dict()
    for key in ("layers.0.blocks.0.norm1.weight", "layers_up.3.blocks.0.norm2.bias"):
        assert all(torch.equal(branch, state[key]) for branch in own[key]), key
    assert torch.equal(own["layers.1.blocks.0.attn.qkv.weight"],
                       state["layers.1.blocks.0.attn.qkv.weight"])


def test_unet_encoder_only_and_refusal_for_a_network_without_a_hook(tmp_path: Path) -> None:
    weights = _fractal_weights(tmp_path, method="unet", steps=3)
    hp = {**resolve_hparams(UnetMethod.hparam_space(), "smoke"), "pretrained": str(weights)}
    assert UnetMethod(hp, CPU, 32).init.startswith("file ")
    with pytest.raises(UserError, match="has no encoder hook"):
        EncoderClassifier(torch.nn.Conv2d(1, 1, 3), 4, "toy")


def test_encoder_only_pretraining_resumes_to_the_uninterrupted_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Died right after its second checkpoint, then run again: the head's state is in the
    checkpoint too, so the weights equal an uninterrupted run's, byte for byte."""
    import benchmark.pretrain as pre

    def run(cache: Path) -> Path:
        out = pretrain(PretrainRequest(method="swinunet", profile="smoke", steps=12,
                                       cache_dir=cache, pretext="fractals", checkpoint_every=4),
                       NullReporter())
        assert out.weights is not None
        return out.weights

    whole = run(tmp_path / "a")
    real, saved = pre.save_checkpoint, []

    def dying(path: Path, state: dict[str, object]) -> None:
        real(path, state)
        saved.append(state["step"])
        if len(saved) == 2:
            raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(pre, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(pre, "save_checkpoint", real)
    resumed = run(tmp_path / "b")
    assert saved == [4, 8]
    assert torch.load(whole, weights_only=True)["state_dict"].keys() == torch.load(
        resumed, weights_only=True)["state_dict"].keys()
    assert whole.read_bytes() == resumed.read_bytes()
