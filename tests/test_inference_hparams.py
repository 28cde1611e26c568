"""Inference-only hparams (`Method.inference_hparams`) never enter the owner's run id, so an
inference-time option on a variant reuses the owner's default training."""

from __future__ import annotations

from benchmark.progress import NullReporter
from benchmark.registry import METHODS
from benchmark.runner import RunRequest, plan_run, shared_training_request
from methods.base import Method


def _owner_id(method: str, sets: list[str]) -> str:
    req = RunRequest(method=method, source="ffdm", targets=["dbt"], profile="smoke", sets=sets)
    owner = shared_training_request(req)
    assert owner is not None
    return plan_run(owner, NullReporter()).run_id


def test_selection_override_on_a_variant_keeps_the_owners_run() -> None:
    """`bench run --method mlnnet-e --set selection=paper-literal` must not train a second
    MLN-net: the owner's run id is the default one, while the variant's own id changes."""
    default = _owner_id("mlnnet-e", [])
    assert _owner_id("mlnnet-e", ["selection=paper-literal"]) == default
    assert _owner_id("mlnnet-e", ["epochs=1"]) != default  # a training override still counts
    plain = RunRequest(method="mlnnet-e", source="ffdm", profile="smoke")
    literal = RunRequest(method="mlnnet-e", source="ffdm", profile="smoke",
                         sets=["selection=paper-literal"])
    assert plan_run(plain, NullReporter()).run_id != plan_run(literal, NullReporter()).run_id


def test_inference_hparams_are_declared_where_they_exist() -> None:
    """The base class declares none, so plain methods are unaffected; the selection-rule
    methods declare `selection`, which they also expose as an hparam."""
    assert Method.inference_hparams == frozenset()
    assert METHODS.all()["unet"].cls.inference_hparams == frozenset()
    for name in ("mlnnet", "mlnnet-e", "unet-star"):
        cls = METHODS.all()[name].cls
        assert "selection" in cls.inference_hparams
        assert "selection" in {h.name for h in cls.hparam_space()}


def test_selection_override_on_the_owner_reuses_its_default_training() -> None:
    """`bench run --method mlnnet --set selection=paper-literal` evaluates the default
    MLN-net's weights: its training request is the plain one, its own run id differs."""
    plain = RunRequest(method="mlnnet", source="ffdm", profile="smoke")
    literal = RunRequest(method="mlnnet", source="ffdm", targets=["dbt"], profile="smoke",
                         sets=["selection=paper-literal", "epochs=1"])
    assert shared_training_request(plain) is None
    owner = shared_training_request(literal)
    assert owner is not None and owner.method == "mlnnet" and owner.sets == ["epochs=1"]
    one_epoch = RunRequest(method="mlnnet", source="ffdm", profile="smoke", sets=["epochs=1"])
    assert plan_run(owner, NullReporter()).run_id == plan_run(one_epoch, NullReporter()).run_id
    assert plan_run(literal, NullReporter()).run_id != plan_run(one_epoch, NullReporter()).run_id
