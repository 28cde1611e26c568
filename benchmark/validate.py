"""The validation layer: a run's hparams and profile checked before anything is created.

`plan_run` calls `validate_run` right after it resolves the profile and hparams, so a bad
`--set` value (or a plugin default outside its own declaration) fails as one line, exit 2,
before data generation, a run folder or a training lock exists. Profile fields are checked by
`benchmark.config.check_profile`; each hparam against its `HParam.valid` declaration; then the
method's own cross-checks (`Method.check_config`: divisibility, window vs grid, ...).
"""

from __future__ import annotations

from typing import Any

from benchmark.config import HParam, Profile, check_profile, show_value
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


def validate_run(cls: Any, profile: Profile, hparams: dict[str, Any],
                 set_keys: set[str]) -> None:
    """Every check of a resolved run configuration (`cls` is the method class)."""
    check_profile(profile, set_keys)
    check_hparams(cls.name, cls.hparam_space(), hparams, set_keys)
    cls.check_config(hparams, profile)
