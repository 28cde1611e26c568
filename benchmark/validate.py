"""The validation layer: a run's hparams and profile checked before anything is created.

`plan_run` calls `validate_run` right after it resolves the profile and hparams, so a bad
`--set` value (or a plugin default outside its own declaration) fails as one line, exit 2,
before data generation, a run folder or a training lock exists. Profile fields are checked by
`benchmark.config.check_profile`; each hparam against its `HParam.valid` declaration; then the
method's own cross-checks (`Method.check_config`: divisibility, window vs grid, ...).
"""

from __future__ import annotations

from typing import Any

from benchmark.config import (
    HParam,
    Profile,
    apply_profile_overrides,
    check_profile,
    get_profile,
    resolve_hparams,
    show_value,
    split_overrides,
)
from benchmark.errors import UserError


def check_hparams(method: str, space: list[HParam], hparams: dict[str, Any],
                  set_keys: set[str]) -> None:
    """UserError naming the first hparam whose value is outside its declared valid values."""
    for hp in space:
        valid = hp.spec()
        value = hparams.get(hp.name)
        problem = valid.problem(value)
        if problem:
            where = "--set" if hp.name in set_keys else f"{method} hparam"
            raise UserError(f"{where} {hp.name}={show_value(value)}: {problem}; "
                            f"expected {valid.describe()}")


def resolve_config(cls: Any, profile_name: str, sets: list[str], trial: int = 0
                   ) -> tuple[Profile, dict[str, Any]]:
    """The profile and hparams of a run (profile defaults, the trial's draw, then `--set`),
    validated; `plan_run` calls it first, so a bad value fails before anything exists."""
    base = get_profile(profile_name)
    space = cls.hparam_space()
    overrides = split_overrides(sets, base, [h.name for h in space])
    profile = apply_profile_overrides(base, overrides.profile)
    hparams = {**resolve_hparams(space, profile.name, trial), **overrides.hparams}
    validate_run(cls, profile, hparams, set(overrides.hparams) | set(overrides.profile))
    return profile, hparams


def validate_run(cls: Any, profile: Profile, hparams: dict[str, Any],
                 set_keys: set[str]) -> None:
    """Every check of a resolved run configuration (`cls` is the method class)."""
    check_profile(profile, set_keys)
    check_hparams(cls.name, cls.hparam_space(), hparams, set_keys)
    cls.check_config(hparams, profile)
