"""Profiles, hparam resolution and --set parsing."""

from __future__ import annotations

import pytest

from benchmark.config import (
    HParam,
    apply_profile_overrides,
    get_profile,
    parse_value,
    resolve_hparams,
    split_overrides,
)
from benchmark.errors import UserError


def test_profile_defaults_and_unknown_profile() -> None:
    assert get_profile("paper").image_size == 512
    assert get_profile("paper").batch_size == 4  # paper 4.1.3
    assert get_profile("paper").epochs == 100
    with pytest.raises(UserError, match="did you mean 'quick'"):
        get_profile("quik")


def test_per_profile_defaults() -> None:
    space = [HParam("w", {"smoke": 4, "paper": 64, "quick": 16}), HParam("lr", 0.1)]
    assert resolve_hparams(space, "smoke") == {"w": 4, "lr": 0.1}
    assert resolve_hparams(space, "paper") == {"w": 64, "lr": 0.1}


def test_adding_an_hparam_does_not_reshuffle_others() -> None:
    a = HParam("a", 1, lambda r: float(r.uniform()))
    b = HParam("b", 2, lambda r: float(r.uniform()))
    c = HParam("c", 3, lambda r: float(r.uniform()))
    first = resolve_hparams([a, b], "quick", trial=3)
    second = resolve_hparams([c, a, b], "quick", trial=3)
    assert first["a"] == second["a"] and first["b"] == second["b"]
    assert first["a"] != resolve_hparams([a], "quick", trial=4)["a"]


def test_parse_value() -> None:
    assert parse_value("3") == 3
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("bezier") == "bezier"


def test_split_overrides_routes_keys() -> None:
    prof = get_profile("quick")
    ov = split_overrides(["epochs=3", "lr=0.01"], prof, ["lr"])
    assert ov.profile == {"epochs": 3} and ov.hparams == {"lr": 0.01}
    assert apply_profile_overrides(prof, ov.profile).epochs == 3


@pytest.mark.parametrize(("pair", "message"), [
    ("epoch=3", "did you mean 'epochs'"),
    ("epochs", "expected key=value"),
    ("epochs=abc", "epochs=abc: not an integer; expected an integer in"),
])
def test_split_overrides_errors(pair: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        split_overrides([pair], get_profile("quick"), ["lr"])


def test_profile_override_validation() -> None:
    with pytest.raises(UserError, match="image_size"):
        apply_profile_overrides(get_profile("quick"), {"image_size": 4})
