"""Inference-time variants (Table 3's selection rules) reuse their owner's training.

MLN-net-E/+/E+/R are MLN-net's trained weights under another test-time rule, Unet-R/E are
Unet*'s: the runner trains (or finds) the owner's run and evaluates its checkpoints, and a
sweep lists the variants after the trainings and costs them as evaluation only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmark.collect import collect
from benchmark.progress import NullReporter
from benchmark.registry import METHODS, get_method
from benchmark.runner import RunRequest, plan_run, run, shared_training_request
from benchmark.sections import cost_table, render_cost_markdown
from benchmark.store import ResultsStore
from benchmark.sweep import SweepSpec, estimate_costs, expand
from benchmark.trainer import load_checkpoint


def _req(method: str, results: Path, cache: Path, **kw: object) -> RunRequest:
    return RunRequest(method=method, source="toy", targets=["toy-inv"], profile="smoke",
                      results_dir=results, cache_dir=cache, **kw)  # type: ignore[arg-type]


class Log(NullReporter):
    """Keeps the logged lines so a test can see what the runner did."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_owners_are_registered_and_train_alike() -> None:
    """Every owner is registered, trains itself, and declares every hparam its variants
    declare, so a variant's training hparams are the owner's."""
    variants = [m for m in METHODS.all().values() if m.cls.shares_training_with]
    assert {m.name for m in variants} == {"mlnnet-plus", "mlnnet-e", "mlnnet-e-plus",
                                          "mlnnet-r", "unet-r", "unet-e"}
    for info in variants:
        owner = get_method(info.cls.shares_training_with)
        assert owner.cls.shares_training_with is None
        theirs = {h.name for h in owner.cls.hparam_space()}
        extra = {h.name for h in info.cls.hparam_space()} - theirs
        assert not extra, (info.name, extra)
        for attr in ("backbone", "augment", "branched"):
            assert getattr(info.cls, attr) == getattr(owner.cls, attr), (info.name, attr)


def test_variant_evaluates_the_owners_weights(toy_domains: dict[str, object],
                                             results_dir: Path, session_cache: Path) -> None:
    log = Log()
    variant = run(_req("mlnnet-e", results_dir, session_cache), log)
    owner_id = plan_run(_req("mlnnet", results_dir, session_cache), NullReporter()).run_id
    assert any(f"training run {owner_id}" in line for line in log.lines)
    owner_dir = results_dir / "runs" / owner_id
    for name in ("best.pt", "last.pt"):
        mine, theirs = variant.run_dir / "checkpoints" / name, owner_dir / "checkpoints" / name
        assert mine.read_bytes() == theirs.read_bytes()
    info = json.loads((variant.run_dir / "run.json").read_text())
    owner_info = json.loads((owner_dir / "run.json").read_text())
    assert info["trained_by"] == owner_id and info["method"] == "mlnnet-e"
    assert info["training"] == owner_info["training"]
    assert info["timings"] == owner_info["timings"]
    assert set(variant.summary["target"]) == {"toy", "toy-inv"}
    # the correctional means the "+" variants need are recorded by the owner's training
    extra = load_checkpoint(owner_dir / "checkpoints" / "best.pt")["method"]["extra"]
    assert bool((extra["pixel_mean"] > 0).all())

    # a second variant and the owner itself only evaluate: no training is logged
    log2 = Log()
    plus = run(_req("mlnnet-plus", results_dir, session_cache), log2)
    assert not any(line.startswith("training ") for line in log2.lines)
    assert any(f"finished run {owner_id}" in line for line in log2.lines)
    log3 = Log()
    owner = run(_req("mlnnet", results_dir, session_cache), log3)
    assert owner.reused and owner.run_id == owner_id
    assert len(list((results_dir / "runs").iterdir())) == 3

    # same weights, different test-time rule: the "+" variant's scores carry the extra term
    a = pd.read_parquet(variant.run_dir / "per_case.parquet")
    b = pd.read_parquet(plus.run_dir / "per_case.parquet")
    assert len(a) == len(b)
    assert not a["info_score_similar"].equals(b["info_score_similar"])

    # the cost table shows the owner's training time, marked as the owner's
    costs = cost_table(collect(ResultsStore(results_dir))).set_index("method")
    assert costs.loc["MLN-net-E", "trained_by"] == "MLN-net"
    assert costs.loc["MLN-net", "trained_by"] == ""
    assert costs.loc["MLN-net-E", "train_seconds"] == costs.loc["MLN-net", "train_seconds"]
    assert "(MLN-net's)" in render_cost_markdown(costs.reset_index())


def test_owner_request_keeps_profile_sets_and_drops_inference_only_hparams() -> None:
    req = RunRequest(method="mlnnet-r", source="ffdm", targets=["dbt"], profile="smoke",
                     sets=["epochs=1", "lr=0.01"], seed=3, trial=2)
    owner = shared_training_request(req)
    assert owner is not None and owner.method == "mlnnet" and owner.targets == []
    assert owner.sets == ["epochs=1", "lr=0.01"] and (owner.seed, owner.trial) == (3, 2)
    assert shared_training_request(RunRequest(method="mlnnet", source="ffdm")) is None


def test_owner_request_drops_a_plugin_variants_own_hparams() -> None:
    """A plugin variant may add an inference-only hparam; the owner would reject it."""
    from benchmark.config import HParam
    from benchmark.registry import register_method
    from methods.mlnnet import MlnNetE

    class Thresholded(MlnNetE):
        @classmethod
        def hparam_space(cls) -> list[HParam]:
            return [*super().hparam_space(), HParam("cut", 0.5, None, "test-time threshold")]

    register_method("mlnnet-cut", display_name="MLN-net-cut", group="plugin")(Thresholded)
    try:
        owner = shared_training_request(RunRequest(
            method="mlnnet-cut", source="ffdm", sets=["cut=0.3", "epochs=1",
                                                      "selection=paper-literal"]))
        assert owner is not None and owner.method == "mlnnet"
        assert owner.sets == ["epochs=1"]  # `selection` is inference-only: not the owner's
    finally:
        METHODS._entries.pop("mlnnet-cut", None)


def test_sweep_orders_variants_last_and_costs_them_as_evaluation(
        toy_domains: dict[str, object], results_dir: Path) -> None:
    owner, variant = "unet-star", "unet-r"
    spec = SweepSpec((variant, owner, "unet"), ("toy",), ("toy-inv",), (0,), 1, "smoke")
    jobs = expand(spec)
    assert [j.method for j in jobs][-1] == variant
    costs = estimate_costs(jobs, results_dir)
    by_method = {j.method: costs[j.run_id] for j in jobs}
    owner_id = next(j.run_id for j in jobs if j.method == owner)
    assert by_method[variant].how == f"evaluation only (trained by {owner_id})"
    assert 0 < by_method[variant].seconds < by_method[owner].seconds
