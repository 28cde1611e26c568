"""Profiles (smoke / quick / paper), method hyper-parameters and `--set key=value` overrides.

A profile fixes the harness-owned budget (image size, epochs, batch, subset sizes); a method
declares its hyper-parameters with per-profile defaults and an optional random sampler. Each
hparam draws from its own seeded generator (DomainBed's rule), so adding one never reshuffles
the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.errors import UserError, closest
from benchmark.lr_schedule import SCHEDULES
from benchmark.valid import Valid, parse_structured


@dataclass(frozen=True)
class Profile:
    """Harness-owned training/evaluation budget shared by every method (the fair protocol)."""

    name: str
    image_size: int
    epochs: int
    batch_size: int
    eval_batch_size: int = 16
    steps_per_epoch: int | None = None  # None: one pass over the training split
    max_images: dict[str, int] | None = None  # cap per split (smoke only)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/val/test, patients
    split_seed: int = 0  # fixed across methods and seeds so every method sees the same test set
    geometric_aug: bool = True  # random flips + 90-degree rotations, image and mask together
    threshold: float = 0.5
    # poly: Swin-Unet's per-step decay (see benchmark.lr_schedule); constant: no schedule
    lr_schedule: str = "poly"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The valid values of every profile field (checked for `--set` and for every profile). The
#: upper bounds only reject typos and overflow (e.g. 1e30); they are far above any real budget.
PROFILE_VALID: dict[str, Valid] = {
    "image_size": Valid.integer(16, 8192),
    "epochs": Valid.integer(1, 100_000),
    "batch_size": Valid.integer(1, 4096),
    "eval_batch_size": Valid.integer(1, 4096),
    "steps_per_epoch": Valid.integer(1, 10_000_000, none_means="one pass over the training split"),
    "max_images": Valid.split_caps(1, 10_000_000),
    "split_fractions": Valid.fractions(),
    "split_seed": Valid.integer(0, 2**31 - 1),
    "geometric_aug": Valid.flag(),
    "threshold": Valid.number(0.0, 1.0, low_open=True, high_open=True),
    "lr_schedule": Valid.choice(*SCHEDULES),
}

PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", image_size=32, epochs=2, batch_size=4, eval_batch_size=8,
                     steps_per_epoch=2, max_images={"train": 16, "val": 6, "test": 6}),
    # quick: CPU default; every method's ffdm<->dbt row in under an hour on 2 cores.
    "quick": Profile("quick", image_size=128, epochs=12, batch_size=8, eval_batch_size=16),
    # paper: section 4.1.3 of the MLN-net paper (512x512, batch 4, 100 epochs).
    # Evaluation runs without gradients, so on a GPU it affords 4x the training batch.
    "paper": Profile("paper", image_size=512, epochs=100, batch_size=4, eval_batch_size=16),
}


def get_profile(name: str) -> Profile:
    """Look up a profile by name (UserError naming the closest one if unknown)."""
    if name not in PROFILES:
        raise UserError(f"unknown profile '{name}'{closest(name, PROFILES)}; "
                        f"known: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class HParam:
    """One method hyper-parameter: per-profile defaults and an optional random sampler."""

    name: str
    default: Any  # a value, or a {profile_name: value} mapping (missing profiles use "quick")
    sampler: Callable[[np.random.RandomState], Any] | None = None
    help: str = ""
    valid: Valid | None = None  # the valid values (None: the default's type, no range)

    def default_for(self, profile: str) -> Any:
        if isinstance(self.default, Mapping):
            return self.default.get(profile, self.default.get("quick"))
        return self.default

    def spec(self) -> Valid:
        """The declared valid values, or a type-only check inferred from the default."""
        return self.valid or Valid.infer(self.default_for("quick"))


def seed_hash(*args: Any) -> int:
    """A stable 31-bit seed from any JSON-serialisable arguments."""
    blob = json.dumps(args, sort_keys=True, default=str).encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16) % (2**31)


def resolve_hparams(space: list[HParam], profile: str, trial: int = 0) -> dict[str, Any]:
    """Defaults for `profile` (trial 0) or a random draw per hparam (trial > 0)."""
    out: dict[str, Any] = {}
    for hp in space:
        if trial > 0 and hp.sampler is not None:
            out[hp.name] = hp.sampler(np.random.RandomState(seed_hash(trial, hp.name)))
        else:
            out[hp.name] = hp.default_for(profile)
    return out


def parse_value(text: str) -> Any:
    """Parse a --set value: JSON when it parses (numbers, bools, lists), otherwise a string."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class Overrides:
    """`--set` overrides split into profile fields and method hparams."""

    profile: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)


def split_overrides(pairs: list[str], profile: Profile, hparam_names: list[str]) -> Overrides:
    """Parse `key=value` strings; each key must be a profile field or a method hparam."""
    profile_fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    result = Overrides()
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        value = parse_value(raw)
        if key in hparam_names:
            result.hparams[key] = value
        elif key in profile_fields:
            valid = PROFILE_VALID[key]
            if isinstance(value, str):  # structured syntax: train:16,val:6 / 0.7,0.1,0.2 / none
                value = parse_structured(valid, raw)
            problem = valid.problem(value)
            if problem:
                raise UserError(f"--set {key}={raw or repr(raw)}: {problem}; "
                                f"expected {valid.describe()}")
            result.profile[key] = value
        else:
            known = sorted(profile_fields | set(hparam_names))
            raise UserError(f"--set: unknown key '{key}'{closest(key, known)}; "
                            f"known: {', '.join(known)}")
    return result


def apply_profile_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    """A copy of `profile` with `overrides` applied (validated by split_overrides)."""
    if "split_fractions" in overrides:
        overrides = {**overrides, "split_fractions": tuple(overrides["split_fractions"])}
    new = dataclasses.replace(profile, **overrides)
    check_profile(new, set(overrides))
    return new


def check_profile(profile: Profile, set_keys: set[str] | None = None) -> None:
    """UserError naming the first profile field outside its declared valid values."""
    for key, valid in PROFILE_VALID.items():
        value = getattr(profile, key)
        problem = valid.problem(value)
        if problem:
            where = "--set" if key in (set_keys or set()) else f"profile '{profile.name}':"
            raise UserError(f"{where} {key}={show_value(value)}: {problem}; "
                            f"expected {valid.describe()}")


def show_value(value: Any) -> str:
    """A value as it would be typed after --set (JSON for numbers and lists, raw strings)."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{show_value(v)}" for k, v in value.items())
    if isinstance(value, tuple):
        return ",".join(show_value(v) for v in value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
