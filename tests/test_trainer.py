"""The harness training loop: determinism, resume equivalence, checkpoints, augmentation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import get_profile, resolve_hparams
from benchmark.lr_schedule import POLY_POWER, lr_factor
from benchmark.progress import NullReporter
from benchmark.registry import get_method
from benchmark.trainer import geometric_augment, load_checkpoint, train
from tests.toy import ToyDomain

PROFILE = get_profile("smoke")


def _train(ckpt: Path, epochs: int = 2, schedule: str = "poly", die_at: int | None = None,
           spy: list[float] | None = None) -> tuple[object, object]:
    """Train the smoke U-Net on a toy domain; `die_at` kills it at that update call, `spy`
    collects the rate each step ran with."""
    import dataclasses

    profile = dataclasses.replace(PROFILE, epochs=epochs, lr_schedule=schedule)
    data = ToyDomain(n_patients=6).load(32, ckpt)
    info = get_method("unet")
    torch.manual_seed(0)
    method = info.cls(resolve_hparams(info.cls.hparam_space(), "smoke"), torch.device("cpu"), 32)
    update, calls = method.update, {"n": 0}

    def watched_update(views: dict) -> dict:
        calls["n"] += 1
        if calls["n"] == die_at:
            raise _Killed
        if spy is not None:
            spy.append(method.optimizer.param_groups[0]["lr"])
        return update(views)

    method.update = watched_update  # type: ignore[method-assign]
    result = train(method, data, np.arange(8), np.arange(8, 12), profile, seed=7,
                   ckpt_dir=ckpt, reporter=NullReporter(), device=torch.device("cpu"))
    return method, result


def _params(method: object) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.network.parameters()]  # type: ignore[attr-defined]


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a, ra = _train(tmp_path / "a")
    b, rb = _train(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))
    assert ra.history == rb.history
    assert (tmp_path / "a" / "best.pt").is_file() and (tmp_path / "a" / "last.pt").is_file()


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """A run killed at the first step of epoch 2 resumes from epoch 1's last.pt with the
    uninterrupted run's weights (the poly schedule's rates included)."""
    full, _ = _train(tmp_path / "full", epochs=2)
    steps = PROFILE.steps_per_epoch
    assert steps is not None
    try:
        _train(tmp_path / "cut", epochs=2, die_at=steps + 1)
    except _Killed:
        pass
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 0
    resumed, result = _train(tmp_path / "cut", epochs=2)
    assert len(result.history) == 2
    assert all(torch.equal(x, y) for x, y in zip(_params(full), _params(resumed), strict=True))
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert state["epoch"] == 1


def test_poly_schedule_sets_each_steps_rate(tmp_path: Path) -> None:
    """The profile's poly schedule runs the rate down step by step; `constant` leaves it."""
    rates: dict[str, list[float]] = {}
    for schedule in ("poly", "constant"):
        seen: list[float] = []
        _train(tmp_path / schedule, epochs=2, schedule=schedule, spy=seen)
        rates[schedule] = seen
    steps = 2 * PROFILE.steps_per_epoch  # type: ignore[operator]
    lr = resolve_hparams(get_method("unet").cls.hparam_space(), "smoke")["lr"]
    assert rates["constant"] == [lr] * steps
    assert rates["poly"] == [lr * (1 - i / steps) ** POLY_POWER for i in range(steps)]


def test_method_with_its_own_schedule_is_left_alone(tmp_path: Path) -> None:
    """SADN steps its ExponentialLR once per epoch; the profile's schedule must not touch it."""
    import dataclasses

    profile = dataclasses.replace(PROFILE, epochs=2)
    data = ToyDomain(n_patients=6).load(32, tmp_path)
    info = get_method("sadn")
    assert info.cls.own_lr_schedule
    hparams = resolve_hparams(info.cls.hparam_space(), "smoke")
    method = info.cls(hparams, torch.device("cpu"), 32)
    train(method, data, np.arange(8), np.arange(8, 12), profile, seed=7, ckpt_dir=tmp_path / "c",
          reporter=NullReporter(), device=torch.device("cpu"))
    gamma = method.scheduler.gamma  # type: ignore[attr-defined]
    for group in method.optimizer.param_groups:  # type: ignore[attr-defined]
        assert group["lr"] == float(hparams["lr"]) * gamma ** 2


def test_lr_factor_values_and_bad_input() -> None:
    assert lr_factor("constant", 5, 10) == 1.0
    assert lr_factor("poly", 0, 10) == 1.0
    values = [lr_factor("poly", i, 10) for i in range(10)]
    assert all(a > b > 0 for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'"):
        lr_factor("cosine", 0, 10)
    with pytest.raises(ValueError, match="outside a schedule of 10 steps"):
        lr_factor("poly", 10, 10)


def test_geometric_augment_moves_image_and_mask_together() -> None:
    img = torch.zeros(6, 1, 8, 8)
    img[:, :, 0, 1] = 1.0
    batch = {"image": img, "mask": img.clone()}
    out = geometric_augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["image"], out["mask"])
    assert not torch.equal(out["image"], img)  # at least one sample was transformed
    assert torch.equal(out["image"].sum((1, 2, 3)), img.sum((1, 2, 3)))


def test_neighbour_index_uses_real_slices_and_replicates_otherwise() -> None:
    import numpy as np

    from datasets.domain import DomainData

    n = 5
    meta = [{"volume_id": "v1", "slice": s} for s in (2, 0, 1)] + [{}, {"volume_id": "v2",
                                                                        "slice": 0}]
    data = DomainData("d", np.zeros((n, 4, 4), np.float32), np.zeros((n, 4, 4), np.uint8),
                      np.ones((n, 2)), [f"p{i}" for i in range(n)], [f"i{i}" for i in range(n)],
                      meta)
    idx, real = data.neighbour_index(2, 3)  # slice 1 of v1: neighbours slice 0 and 2
    assert real and idx.tolist() == [1, 2, 0]
    idx, real = data.neighbour_index(1, 3)  # slice 0 at the edge: repeated
    assert real and idx.tolist() == [1, 1, 2]
    idx, real = data.neighbour_index(3, 3)  # no volume: the image itself, flagged
    assert not real and idx.tolist() == [3, 3, 3]
    idx, real = data.neighbour_index(4, 3)  # a one-slice volume is no context either
    assert not real and idx.tolist() == [4, 4, 4]


class _Killed(Exception):
    """Stands in for a process killed in the middle of an epoch."""


def test_mid_epoch_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """checkpoint_every: a run killed mid-epoch resumes at its step with identical weights."""
    import dataclasses

    profile = dataclasses.replace(PROFILE, epochs=2, steps_per_epoch=4)
    data = ToyDomain(n_patients=6).load(32, tmp_path)
    info = get_method("unet")
    hparams = resolve_hparams(info.cls.hparam_space(), "smoke")

    def fresh(die_at: int | None = None) -> object:
        torch.manual_seed(0)
        method = info.cls(hparams, torch.device("cpu"), 32)
        if die_at is not None:
            calls = {"n": 0}
            update = method.update

            def dying_update(views: dict) -> dict:
                calls["n"] += 1
                if calls["n"] == die_at:
                    raise _Killed
                return update(views)

            method.update = dying_update  # type: ignore[method-assign]
        return method

    def run(method: object, ckpt: Path, every: int | None) -> object:
        return train(method, data, np.arange(8), np.arange(8, 12), profile, seed=7,
                     ckpt_dir=ckpt, reporter=NullReporter(), device=torch.device("cpu"),
                     checkpoint_every=every)

    full = fresh()
    full_result = run(full, tmp_path / "full", None)
    dying = fresh(die_at=7)  # epoch 2, step 3: the last checkpoint holds epoch 2 step 2
    try:
        run(dying, tmp_path / "cut", 2)
    except _Killed:
        pass
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    resumed = fresh()
    result = run(resumed, tmp_path / "cut", 2)
    assert all(torch.equal(x, y) for x, y in zip(_params(full), _params(resumed), strict=True))
    assert result.history == full_result.history  # epoch-mean losses include pre-kill steps
    assert "step" not in load_checkpoint(tmp_path / "cut" / "last.pt")  # ends on an epoch
