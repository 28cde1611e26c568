"""Per-method smoke test: every registered method trains a few steps, predicts, round-trips."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import resolve_hparams
from benchmark.registry import METHODS

SIZE = 32


def _batch(seed: int, context_slices: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 1, SIZE, SIZE, generator=g) * 0.3
    masks = torch.zeros(4, 1, SIZE, SIZE)
    masks[:, :, 8:16, 10:20] = 1
    images = images + 0.6 * masks
    batch = {"image": images, "mask": masks}
    if context_slices:  # what the harness adds for methods that want adjacent slices
        batch["slices"] = images.repeat(1, context_slices, 1, 1)
        batch["slices_real"] = torch.zeros(4, dtype=torch.bool)
    return batch


@pytest.mark.parametrize("name", sorted(METHODS.all()))
def test_method_smoke(name: str) -> None:
    info = METHODS.all()[name]
    torch.manual_seed(0)
    hparams = resolve_hparams(info.cls.hparam_space(), "smoke")
    method = info.cls(hparams, torch.device("cpu"), SIZE)
    assert method.num_parameters() > 0
    groups = method.training_groups()
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        batch = _batch(step, method.context_slices)
        logs = method.update({g: method.make_view(g, batch, gen) for g in groups})
        assert logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    method.train(False)
    test_batch = _batch(99, method.context_slices)
    images = test_batch["image"]
    probs = method.predict_batch(test_batch)
    assert probs.shape == images.shape
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0

    state = method.state_dict()
    torch.manual_seed(1)
    clone = info.cls(hparams, torch.device("cpu"), SIZE)
    assert not torch.equal(clone.predict_batch(test_batch), probs)  # a fresh model differs...
    clone.load_state_dict(state)
    clone.train(False)
    # ...until its state is loaded
    assert torch.allclose(clone.predict_batch(test_batch), probs, atol=1e-6)


def test_unet_parameter_count_matches_spec() -> None:
    from methods.networks.unet import UNet

    count = sum(p.numel() for p in UNet(base=64).parameters())
    assert abs(count - 31.04e6) / 31.04e6 < 0.005  # docs/methods/unet.md: 31.04M
