"""Formula-driven pretraining: the generator, `bench pretrain` (resume after kill -9), and
`pretrained=formula` (LN branches filled, missing or damaged files, run identity, shipped files).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import formula
from benchmark.cli import run_app
from benchmark.config import get_profile, resolve_hparams
from benchmark.errors import UserError
from benchmark.pretrain import PretrainRequest, pretrain
from benchmark.progress import NullReporter
from benchmark.registry import METHODS
from methods.mlnnet import MlnNet
from methods.networks.formula_weights import (
    SHIPPED_DIR,
    arch_key,
    sha256_file,
    using_cache,
)
from methods.networks.multinorm import MultiLayerNorm
from methods.swinunet import SwinUnetMethod
from methods.unet import UnetMethod

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


def test_generator_is_deterministic_per_seed_and_order_free() -> None:
    a_img, a_mask = formula.sample(3, 7, 64)
    b_img, b_mask = formula.sample(3, 7, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    c_img, _ = formula.sample(4, 7, 64)
    assert not np.array_equal(a_img, c_img)  # another seed, another image
    images, masks = formula.batch(3, 5, 4, 64)
    assert images.shape == masks.shape == (4, 1, 64, 64)
    assert np.array_equal(images[2, 0], formula.sample(3, 7, 64)[0])  # index, not call order
    val, _ = formula.sample(3, 7, 64, stream=formula.VAL_STREAM)
    assert not np.array_equal(val, a_img)  # the held-out stream is disjoint


def test_generator_draws_generic_targets_at_a_few_percent() -> None:
    pairs = [formula.sample(0, i, 128) for i in range(60)]
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) <= {0, 1}
    share = masks.mean()
    assert 0.01 < share < 0.12, share
    # both polarities: some shapes brighter than their surroundings, some darker
    inside = [float(im[m > 0].mean() - im[m == 0].mean()) for im, m in pairs if m.any()]
    assert min(inside) < 0 < max(inside)
    assert sum(m.any() for m in masks) >= 50  # nearly every image has a target


@pytest.mark.parametrize("pretext", formula.PRETEXTS)
def test_every_pretext_is_deterministic_and_in_range(pretext: str) -> None:
    a = formula.batch(1, 0, 6, 64, pretext=pretext)
    b = formula.batch(1, 0, 6, 64, pretext=pretext)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert 0.0 <= a[0].min() and a[0].max() <= 1.0 and set(np.unique(a[1])) <= {0.0, 1.0}
    if pretext != "shapes":  # the added pretexts never reuse the seeds of `shapes`
        assert not np.array_equal(a[0], formula.batch(1, 0, 6, 64)[0])


def test_textures_pretext_leaves_plain_shapes_out_of_the_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`textures`: the mask covers textured regions only; plain shapes are drawn but unmarked."""
    monkeypatch.setattr(formula, "MAX_TEXTURED", 0)  # plain shapes only
    pairs = [formula.sample(0, i, 64, pretext="textures") for i in range(10)]
    assert all(not m.any() for _, m in pairs)
    rng = np.random.default_rng([formula.GENERATOR_VERSION, 0, 0, 0, 2])
    plain, _ = formula.background(rng, 64)  # what image 0 would be with nothing drawn on it
    assert float(np.abs(pairs[0][0] - plain).max()) > 0.05  # ...but shapes were drawn
    monkeypatch.undo()
    masks = [formula.sample(0, i, 128, pretext="textures")[1] for i in range(40)]
    shapes = [formula.sample(0, i, 128, pretext="shapes")[1] for i in range(40)]
    assert 0.005 < np.mean(masks) < np.mean(shapes)  # fewer targets than objects drawn


def test_an_unknown_pretext_is_a_one_line_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(["pretrain", "--method", "swinunet", "--profile", "smoke", "--pretext",
                    "imagenet", "--cache-dir", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--pretext must be one of shapes, regions, textures, fractals" in err


def _pretrain(cache: Path, steps: int = 6, method: str = "swinunet", **kw: object) -> Path:
    out = pretrain(PretrainRequest(method=method, profile="smoke", steps=steps,
                                   cache_dir=cache, **kw), NullReporter())  # type: ignore[arg-type]
    assert out.weights is not None and out.weights.is_file()
    return out.weights


def test_pretrain_writes_weights_and_a_manifest(tmp_path: Path) -> None:
    weights = _pretrain(tmp_path)
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["sha256"] == sha256_file(weights)
    assert manifest["steps"] == 6 and manifest["generator_version"] == formula.GENERATOR_VERSION
    assert manifest["rebuild"].startswith("CALCBENCH_PORTABLE=1 bench pretrain --method swinunet")
    assert manifest["curve"] and all(0.0 <= p["val_dsc"] <= 1.0 for p in manifest["curve"])
    assert weights.parent == tmp_path / "pretrained"


def _bench(cache: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CALCBENCH_PORTABLE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "pretrain", "--method", "swinunet", "--profile",
         "smoke", "--threads", "1", "--no-progress", "--cache-dir", str(cache), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_pretraining_killed_and_resumed_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    args = ("--steps", "120", "--checkpoint-every", "5")
    whole = _bench(tmp_path / "a", *args)
    assert whole.wait(300) == 0, whole.stdout.read() if whole.stdout else ""
    killed = _bench(tmp_path / "b", *args)
    work = tmp_path / "b" / "pretrained" / "work"
    deadline = time.monotonic() + 120
    while not list(work.glob("*/state.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few checkpoints further, mid-run
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not list((tmp_path / "b" / "pretrained").glob("*.pt"))
    resumed = _bench(tmp_path / "b", *args)
    text = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, text
    assert "resuming the formula pretraining of swinunet at step" in text
    (a,) = (tmp_path / "a" / "pretrained").glob("*.pt")
    (b,) = (tmp_path / "b" / "pretrained").glob("*.pt")
    assert a.read_bytes() == b.read_bytes()
    curve_a = json.loads(a.with_suffix(".json").read_text())["curve"]
    curve_b = json.loads(b.with_suffix(".json").read_text())["curve"]
    assert [(p["step"], p["loss"], p["val_dsc"]) for p in curve_a] == [
        (p["step"], p["loss"], p["val_dsc"]) for p in curve_b]


def test_formula_path_fills_every_key_of_every_ln_branch(tmp_path: Path) -> None:
    weights = _pretrain(tmp_path)
    pre = torch.load(weights, weights_only=True)["state_dict"]
    hp = resolve_hparams(MlnNet.hparam_space(), "smoke")
    with using_cache(tmp_path):
        method = MlnNet(hp, CPU, 32)
    assert method.init.startswith("formula (")
    state = method.network.state_dict()
    norms = {n for n, m in method.network.named_modules() if isinstance(m, MultiLayerNorm)}
    assert norms, "MLN-net has multiplied LayerNorms"
    branches = method.num_branches
    assert branches == 2
    assert set(pre) <= set(state)  # the same names: a multiplied norm keeps weight and bias
    extra = {k for k in set(state) - set(pre)}  # and adds only its recorded statistics
    assert all(k.rpartition(".")[0] in norms and k.rpartition(".")[2].startswith(
        ("acc_", "stat_")) for k in extra), sorted(extra)[:3]
    for key, value in pre.items():
        if key.rpartition(".")[0] not in norms:  # loaded as it is
            assert torch.equal(state[key], value.to(state[key].dtype)), key
            continue
        multi = state[key]  # (branches, C): the pretrained norm in every branch
        assert multi.shape == (branches, *value.shape)
        for k in range(branches):
            assert torch.equal(multi[k], value.to(multi.dtype)), (key, k)
    for name in norms:  # and no branch is left at its random or default value
        assert f"{name}.weight" in pre and f"{name}.bias" in pre


def test_missing_weights_are_one_line_naming_the_file_and_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(["run", "--method", "mlnnet", "--profile", "smoke", "--source", "ffdm",
                    "--set", "embed_dim=24", "--results-dir", str(tmp_path / "r"),
                    "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2
    line = " ".join(err.split())
    assert "pretrained=formula: no formula weights" in line
    assert str(tmp_path / "c" / "pretrained") in line
    assert "bench pretrain --method mlnnet --profile smoke" in line
    assert "Traceback" not in err


def test_damaged_weights_are_one_line_naming_the_file_and_the_command(tmp_path: Path) -> None:
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    key = arch_key(SwinUnetMethod.formula_network(hp, 32), 32)
    bad = tmp_path / "pretrained" / f"{key}.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with using_cache(tmp_path), pytest.raises(UserError) as info:
        SwinUnetMethod(hp, CPU, 32)
    text = str(info.value)
    assert str(bad) in text and "damaged" in text
    assert "bench pretrain --method swinunet --profile smoke" in text
    assert "\n" not in text


def test_other_weights_make_another_run(tmp_path: Path) -> None:
    from benchmark.runner import RunRequest, plan_run

    def run_id(cache: Path) -> str:
        req = RunRequest(method="swinunet", source="ffdm", profile="smoke", cache_dir=cache,
                         results_dir=tmp_path / "r")
        return plan_run(req, NullReporter()).run_id

    shipped = run_id(tmp_path / "empty")  # no cache weights: the shipped file
    _pretrain(tmp_path / "own", steps=3)
    assert run_id(tmp_path / "own") != shipped  # the cache's own weights take precedence
    assert run_id(tmp_path / "empty") == shipped


def test_unet_takes_formula_weights_for_the_fairness_row(tmp_path: Path) -> None:
    hp = {**resolve_hparams(UnetMethod.hparam_space(), "smoke"), "pretrained": "formula"}
    with using_cache(tmp_path), pytest.raises(UserError, match="bench pretrain --method unet"):
        UnetMethod(hp, CPU, 32)
    weights = _pretrain(tmp_path, method="unet")
    with using_cache(tmp_path):
        method = UnetMethod(hp, CPU, 32)
    pre = torch.load(weights, weights_only=True)["state_dict"]
    assert all(torch.equal(method.network.state_dict()[k], v) for k, v in pre.items())
    assert method.init.startswith("formula (")
    assert UnetMethod(resolve_hparams(UnetMethod.hparam_space(), "smoke"), CPU, 32).init \
        == "scratch"


def test_pretrain_refuses_a_method_without_a_formula_network(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_app(["pretrain", "--method", "feddg", "--profile", "smoke", "--cache-dir",
                    str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "method 'feddg' has no network that takes formula weights" in err
    assert "swinunet" in err and "mlnnet" in err and "unet" in err


def test_minutes_alone_fixes_its_step_count_once(tmp_path: Path) -> None:
    req = PretrainRequest(method="swinunet", profile="smoke", minutes=0.02, cache_dir=tmp_path)
    first = pretrain(req, NullReporter())
    (plan,) = (tmp_path / "pretrained" / "work").glob("*-m0.02.json")
    steps = json.loads(plan.read_text())["steps"]
    assert first.total == steps >= 1
    again = pretrain(req, NullReporter())  # same command: the same plan, already finished
    assert again.total == steps and again.weights == first.weights


def test_shipped_weights_match_their_manifests() -> None:
    files = sorted(SHIPPED_DIR.glob("*.pt"))
    assert files, "the repository ships formula weights"
    for path in files:
        manifest = json.loads(path.with_suffix(".json").read_text())
        assert manifest["sha256"] == sha256_file(path), path.name
        assert manifest["arch_key"] == path.stem
        assert manifest["generator_version"] == formula.GENERATOR_VERSION, path.name
        assert manifest["rebuild"].startswith("CALCBENCH_PORTABLE=1 bench pretrain "), path.name
        assert "/tmp" not in json.dumps(manifest) and str(Path.home()) not in manifest["rebuild"]


@pytest.mark.slow
def test_shipped_smoke_weights_rebuild_bit_for_bit(tmp_path: Path) -> None:
    """The rebuild command in the smoke manifest gives the shipped file again, byte for byte."""
    hp = resolve_hparams(SwinUnetMethod.hparam_space(), "smoke")
    key = arch_key(SwinUnetMethod.formula_network(hp, 32), 32)
    manifest = json.loads((SHIPPED_DIR / f"{key}.json").read_text())
    args = manifest["rebuild"].split()
    assert args[:4] == ["CALCBENCH_PORTABLE=1", "bench", "pretrain", "--method"]
    args = [a for a in args[3:]]
    out = args.index("--out-dir")
    args[out + 1] = str(tmp_path / "out")
    proc = _bench(tmp_path / "cache", *[a for a in args if a not in
                                        ("--method", "swinunet", "--profile", "smoke")])
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text
    assert sha256_file(tmp_path / "out" / f"{key}.pt") == manifest["sha256"]


def test_list_pretrained_shows_cache_shipped_and_given_files_and_plots_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = _pretrain(tmp_path / "cache", steps=4)
    given = _pretrain(tmp_path / "other", steps=2, pretext="textures")
    code = run_app(["list", "pretrained", str(given), "--plot", str(tmp_path / "c.png"),
                    "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    assert own.stem in out and "cache" in out and "shipped" in out and "given" in out
    assert "textures" in out and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert run_app(["list", "pretrained", str(tmp_path / "nothing.pt")]) == 2


def test_resnet_and_dofe_start_from_their_shipped_formula_weights(tmp_path: Path) -> None:
    """Resnet's whole smp.Unet and DoFE's plain DeepLabv3+ come from the shipped smoke files;
    DoFE's knowledge pool is left at zero for its own initialisation."""
    from methods.dofe import DofeMethod
    from methods.resnet import ResnetMethod

    with using_cache(tmp_path):  # an empty cache: the shipped files are found
        resnet = ResnetMethod(resolve_hparams(ResnetMethod.hparam_space(), "smoke"), CPU, 32)
        dofe = DofeMethod(resolve_hparams(DofeMethod.hparam_space(), "smoke"), CPU, 32)
    for method, prefix in ((resnet, ""), (dofe, "net.")):
        assert method.init.startswith("formula (")
        key = method.init.split("(")[1].split(",")[0]
        shipped = torch.load(SHIPPED_DIR / f"{key}.pt", weights_only=True)["state_dict"]
        own = method.network.state_dict()
        assert {prefix + k for k in own} == set(shipped)
        for k, v in own.items():
            assert torch.equal(v, shipped[prefix + k].to(v.dtype)), k
    assert not dofe.network.memory.any()


def test_every_formula_default_finds_its_shipped_weights(tmp_path: Path) -> None:
    """A method whose smoke or quick default is pretrained=formula runs from a clean checkout:
    its weights file is in the repository (an empty cache, so only the shipped files count)."""
    found = []
    with using_cache(tmp_path):
        for name, info in sorted(METHODS.all().items()):
            for profile in ("smoke", "quick"):
                hp = resolve_hparams(info.cls.hparam_space(), profile)
                if hp.get("pretrained") == "formula":
                    info.cls.check_config(hp, get_profile(profile))  # raises when missing
                    found.append((name, profile))
    assert {("swinunet", "quick"), ("mlnnet", "smoke"), ("resnet", "quick"),
            ("dofe", "quick"), ("dofe", "smoke")} <= set(found)
