"""The profile's learning-rate schedule, which the trainer applies before every step.

`poly` is the per-iteration decay lr = base * (1 - it / max_it) ** 0.9 of the official
Swin-Unet trainer (and nnU-Net's default). At a constant rate the quick profile's 252 steps end
mid-oscillation: over the last three epochs of ten seeds the U-Net's validation DSC still moved
by 10.7 points per epoch on average (up to 30), so which epoch the 20 validation images happen
to favour decides the test score. The decay lets the last epochs settle. `constant` keeps each
optimizer's own rate.

The factor is a pure function of the global step, and each parameter group's starting rate is
kept in the group itself (`initial_lr`, saved with the optimizer), so a resumed run sets the
same rates as an uninterrupted one. A method whose published recipe has its own schedule
(`Method.own_lr_schedule`, e.g. SADN's exponential decay) is left alone.

Written here rather than with `torch.optim.lr_scheduler.PolynomialLR`: that scheduler is a
stateful object per optimizer, updated multiplicatively step by step, which every method would
have to create, save and restore; the harness owns the steps and needs none of that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCHEDULES = ("poly", "constant")
POLY_POWER = 0.9  # the official Swin-Unet trainer's exponent (nnU-Net uses the same)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The multiplier of every starting rate at 0-based global `step` of `total_steps`."""
    if schedule == "constant":
        return 1.0
    if schedule != "poly":
        raise ValueError(f"unknown lr_schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
    if total_steps < 1 or not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside a schedule of {total_steps} steps")
    return (1.0 - step / total_steps) ** POLY_POWER


def apply_lr(optimizers: Iterable[torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's rate to its starting rate times `factor`."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
