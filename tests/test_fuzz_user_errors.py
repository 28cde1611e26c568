"""Fuzz test of issue 18: no user mistake ends in a traceback.

A table-driven generator (deterministic, so a failure names its case) tries bad values for
every registered method x every hparam and profile key (wrong type, out of range, zero,
negative, NaN, inf, empty, huge), unknown / missing / badly typed / conflicting options of every
CLI command, broken `folder` manifests and corrupted results. Each case must end in a one-line
error naming the input with exit code 2 (1 for `bench data verify` findings), and leave no run
folder or partial file behind. The validation layer is called directly; the CLI through
`run_app` (the console script's own entry) plus a few real subprocesses. Every test adds its
case count to COUNTS; the last test prints the total.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.cli import app, run_app
from benchmark.config import PROFILE_VALID, PROFILES, resolve_hparams
from benchmark.errors import UserError
from benchmark.registry import METHODS
from benchmark.store import ResultsStore
from benchmark.valid import Valid
from benchmark.validate import resolve_config
from datasets.real.dicom_write import phantom

COUNTS: Counter[str] = Counter()

#: Raw `--set` texts: wrong type, zero, negative, NaN, inf, empty, huge, structure mistakes.
BAD_RAWS = ("abc", "", "nan", "NaN", "inf", "Infinity", "-Infinity", "0", "-1", "-0.5", "1.5",
            "1e30", "1" + "0" * 30, "true", "[]", "[1,2]", "{}", "null", "train:0", "x:1",
            "0.5,0.5", "0.7,0.1,0.3", "[0,1,0]")


def must_reject(valid: Valid, raw: str) -> bool:
    """Whether `raw` is invalid for `valid` by the meaning of the words alone (an oracle
    written independently of Valid.problem: the fuzz must not only check itself)."""
    kind = valid.kind
    numeric = kind in ("int", "float")
    if raw in ("nan", "NaN", "inf", "Infinity", "-Infinity", "1e30", "1" + "0" * 30):
        return True  # nothing may be infinite, NaN or astronomically large
    if raw == "":
        return kind not in ("path", "choice_or_path")  # '' means "none" for files only
    if raw in ("abc", "{}", "x:1", "0.5,0.5", "0.7,0.1,0.3", "[1,2]"):
        return True  # no declaration accepts these (no file 'abc'; short lists; bad sums)
    if raw == "[0,1,0]":
        return True  # zero fraction / zero width / not a scalar
    if raw == "null":
        return not valid.none_ok
    if raw == "true":
        return kind != "bool"
    if raw == "[]":
        return True
    if raw == "train:0":
        return True  # a zero cap, or not a value of any other kind
    if raw in ("0", "-1", "-0.5"):
        if not numeric:
            return True
        value = float(raw)
        low = valid.low if valid.low is not None else -math.inf
        return value < low or (valid.low_open and value == low) or (
            kind == "int" and not float(raw).is_integer())
    if raw == "1.5":
        return kind != "float" or (valid.high is not None and valid.high < 1.5)
    raise AssertionError(raw)


def one_line_naming(message: str, *names: str) -> None:
    """The message is a single line and names every one of `names`."""
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message, message
    for name in names:
        assert name in message, (name, message)


# --- the validation layer, called directly ------------------------------------------------------

def _keys(cls: type) -> Iterator[tuple[str, Valid]]:
    """Every `--set` key of a method: its hparams, then the profile fields."""
    for hp in cls.hparam_space():
        yield hp.name, hp.spec()
    yield from PROFILE_VALID.items()


@pytest.mark.parametrize("method", sorted(METHODS.all()))
def test_every_key_of_every_method(method: str) -> None:
    cls = METHODS.all()[method].cls
    # a valid shape override (embed_dim=1) has no formula weights: whether the start weights
    # exist is this machine's state, which tests/test_formula_pretrain.py covers
    init = ["pretrained=none"] if "pretrained" in {h.name for h in cls.hparam_space()} else []
    for key, valid in _keys(cls):
        for raw in BAD_RAWS:
            COUNTS["validation layer"] += 1
            sets = [f"{key}={raw}", *(init if key != "pretrained" else [])]
            try:
                profile, hparams = resolve_config(cls, "smoke", sets)
            except UserError as exc:
                one_line_naming(str(exc), key)
                continue
            assert not must_reject(valid, raw), f"{method}: {key}={raw!r} was accepted"
            value = hparams[key] if key in hparams else getattr(profile, key)
            assert valid.problem(value) is None


def test_every_profile_and_trial_draw_is_valid() -> None:
    """The shipped profiles, defaults and random trials satisfy their own declarations and
    the methods' cross-checks (a sampler must never draw what check_config refuses)."""
    for info in METHODS.all().values():
        # whether pretrained=imagenet (paper's default for some) can load depends on this
        # machine's Hugging Face cache, which tests/test_pretrained_imagenet.py covers
        sets = (["pretrained=none"] if "pretrained" in {h.name for h in info.cls.hparam_space()}
                else [])
        for name in PROFILES:
            for trial in range(6):
                COUNTS["defaults and trial draws"] += 1
                resolve_config(info.cls, name, sets, trial)


@pytest.mark.parametrize("size", [24, 40, 48])
def test_method_constraints_match_the_networks(size: int) -> None:
    """Where check_config accepts an image size the network builds and predicts; where it
    refuses, one line names the size (so the declaration is neither too loose nor missing)."""
    for method, info in sorted(METHODS.all().items()):
        if info.cls.shares_training_with:
            continue  # the owner's network and checks
        COUNTS["method constraints"] += 1
        try:
            profile, hparams = resolve_config(info.cls, "smoke", [f"image_size={size}"])
        except UserError as exc:
            one_line_naming(str(exc), "image_size", str(size))
            continue
        torch.manual_seed(0)
        model = info.cls(hparams, torch.device("cpu"), profile.image_size)
        batch = {"image": torch.rand(2, 1, size, size)}
        depth = int(getattr(model, "context_slices", 0))
        if depth:
            batch["slices"] = batch["image"].expand(-1, depth, -1, -1)
            batch["slices_real"] = torch.zeros(2, dtype=torch.bool)
        out = model.predict_batch(batch)
        assert out.shape == (2, 1, size, size), method


def test_issue_table_cases_name_key_value_and_range() -> None:
    """The table of issue 18, through the validation layer."""
    cls = METHODS.all()["unet"].cls
    table = {"max_images=16": "train:16,val:6,test:6", "lr=-1": "(0, 1]",
             "weight_decay=-5": "[0, 1]", "base_channels=0": "[1, 1024]",
             "eval_batch_size=0": "[1, 4096]", "image_size=100": "divisible by 16",
             "threshold=2": "(0, 1)", "steps_per_epoch=0": "[1, 10000000]"}
    for pair, valid_range in table.items():
        COUNTS["issue table"] += 1
        with pytest.raises(UserError) as info:
            resolve_config(cls, "smoke", [pair])
        key, value = pair.split("=")
        one_line_naming(str(info.value), key, value, valid_range)
    profile, _ = resolve_config(cls, "smoke", ["max_images=train:8,val:2,test:2",
                                                "split_fractions=0.6,0.2,0.2",
                                                "steps_per_epoch=none"])
    assert profile.max_images == {"train": 8, "val": 2, "test": 2}
    assert profile.split_fractions == (0.6, 0.2, 0.2) and profile.steps_per_epoch is None


def test_valid_values_keep_their_run_identity() -> None:
    """A --set equal to the default gives the same profile and hparams (same run id)."""
    cls = METHODS.all()["unet"].cls
    default = resolve_config(cls, "smoke", [])
    same = resolve_config(cls, "smoke", ["max_images=train:16,val:6,test:6",
                                         "split_fractions=0.7,0.1,0.2", "lr=0.001"])
    assert dataclasses.asdict(default[0]) == dataclasses.asdict(same[0])
    assert default[1] == same[1]
    assert resolve_hparams(cls.hparam_space(), "smoke") == default[1]


# --- CLI options: unknown, missing, badly typed, conflicting -------------------------------------

def _leaf_commands() -> Iterator[tuple[list[str], object]]:
    """(path, click command) of every `bench` command."""
    import typer.main

    def walk(cmd: object, path: list[str]) -> Iterator[tuple[list[str], object]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `bench ARGS` through the console-script entry; (exit code, stdout, stderr)."""
    code = run_app(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_rejects_bad_options(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may appear here (e.g. ./results)
    commands = list(_leaf_commands())
    assert len(commands) >= 15
    for path, cmd in commands:
        params = [p for p in cmd.params if p.param_type_name == "option"]
        required = [p for p in params if p.required]
        cases: list[tuple[list[str], str]] = [([*path, "--no-such-option"], "--no-such-option")]
        if required:
            cases.append((path, "Missing"))
        for p in params:
            descriptor = getattr(p, "type_descriptor", None)
            annotation = getattr(descriptor, "annotation", None)
            if annotation in (int, float, int | None, float | None):
                long_opt = next(o for o in p.opts if o.startswith("--"))
                cases.append(([*path, long_opt, "not-a-number"], long_opt))
                if not required:  # out of range: refused before any work starts
                    cases.append(([*path, long_opt, "-99999999999"], long_opt))
        for args, named in cases:
            COUNTS["CLI options"] += 1
            code, out, err = _cli(args, capsys)
            assert code == 2, (args, code, out, err)
            one_line_naming(err, named)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "named"), [
    (["data", "add", "x", "--format", "cbis-ddsm", "--root", ".", "--manifest", "m.csv"],
     "--manifest"),
    (["data", "add", "x", "--format", "folder", "--root", ".", "--spacing-mm", "nan"],
     "--spacing-mm"),
    (["data", "add", "x", "--format", "folder", "--root", ".", "--tiles", "0"], "--tiles"),
    (["data", "add", "x", "--format", "nope", "--root", "."], "--format"),
    (["run", "--method", "unet", "--source", "ffdm", "--set", "lr"], "lr"),
    (["run", "--method", "unet", "--source", "ffdm", "--set", "nope=1"], "nope"),
    (["run", "--method", "unet", "--source", "ffdm", "--device", "tpu"], "--device"),
    (["run", "--method", "unet", "--source", "ffdm", "--profile", "smoke", "--set",
      "image_size=24", "--set", "lr=inf"], "lr"),
    (["leaderboard", "--aggregate", "breast"], "--aggregate"),
    (["leaderboard", "--n-boot", "0"], "--n-boot"),
    (["sweep", "--methods", "unet"], "--sources"),
])
def test_conflicting_and_out_of_range_options(args: list[str], named: str,
                                              capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALCBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CALCBENCH_CONFIG", str(tmp_path / "bindings.toml"))
    COUNTS["CLI conflicts"] += 1
    code, out, err = _cli(args, capsys)
    assert code == 2, (args, out, err)
    one_line_naming(err, named)
    assert not (tmp_path / "results" / "runs").exists() or not any(
        (tmp_path / "results" / "runs").iterdir())
    assert not (tmp_path / "bindings.toml").exists()


def test_issue_table_through_real_subprocesses(tmp_path: Path) -> None:
    """A sample of real `bench run` calls: one line on stderr, exit 2, no run folder."""
    env = {**os.environ, "CALCBENCH_RESULTS": str(tmp_path / "results")}
    for pair in ("max_images=16", "image_size=100", "threshold=2"):
        COUNTS["real subprocesses"] += 1
        proc = subprocess.run(
            [sys.executable, "-m", "benchmark.cli", "run", "--method", "unet", "--source",
             "ffdm", "--target", "dbt", "--profile", "smoke", "--set", pair, "--no-progress"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 2, proc.stderr
        one_line_naming(proc.stderr, pair.split("=")[0])
        assert not (tmp_path / "results").exists()


# --- the folder manifest ------------------------------------------------------------------------

def _folder(root: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> None:
    """A folder dataset: two good PNG images plus `rows` appended to the manifest."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    good = []
    for k in range(2):
        img, mask = phantom(32, 32, seed=k, spots=1)
        Image.fromarray((img * 65535).astype(np.uint16)).save(root / "img" / f"g{k}.png")
        Image.fromarray(mask * 255).save(root / "img" / f"g{k}_mask.png")
        good.append({"image": f"img/g{k}.png", "mask": f"img/g{k}_mask.png",
                     "patient_id": f"P{k}", "view": "CC", "spacing_mm": "0.1", "slice": ""})
    frame = pd.DataFrame(good + rows)
    if columns is not None:
        frame = frame[columns]
    frame.to_csv(root / "manifest.csv", index=False)


BAD_ROWS = {
    "bad spacing text": {"spacing_mm": "abc"},
    "negative spacing": {"spacing_mm": "-0.1"},
    "zero spacing": {"spacing_mm": "0"},
    "NaN spacing": {"spacing_mm": "nan"},
    "inf spacing": {"spacing_mm": "inf"},
    "three spacings": {"spacing_mm": "0.1 0.1 0.1"},
    "NaN slice": {"slice": "nan"},
    "path outside the root": {"image": "../outside.png"},
    "absolute path": {"image": "/etc/hostname"},
    "missing file": {"image": "img/none.png"},
    "empty patient": {"patient_id": ""},
    "duplicate image id": {},
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_folder_manifest_bad_rows(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALCBENCH_CONFIG", str(tmp_path / "bindings.toml"))
    root = tmp_path / "data"
    row = {"image": "img/g0.png", "mask": "", "patient_id": "P9", "view": "MLO",
           "spacing_mm": "", "slice": "", **BAD_ROWS[case]}
    _folder(root, [row])
    Image.fromarray(np.zeros((32, 32), np.uint16)).save(tmp_path / "outside.png")
    COUNTS["folder manifest"] += 2
    code, out, err = _cli(["data", "add", "fz", "--format", "folder", "--root", str(root)],
                          capsys)
    assert code == 0, (case, out, err)  # the good rows bind; the bad one is a problem
    assert "1 problem(s)" in " ".join(out.split()), (case, out)
    code, out, err = _cli(["data", "verify", "fz", "--no-progress"], capsys)
    assert code == 1, (case, out, err)
    assert "Traceback" not in out + err
    named = {"path outside the root": "outside", "absolute path": "outside",
             "missing file": "none.png", "empty patient": "patient_id"}.get(
                 case, "manifest.csv line 4")
    assert named in " ".join(out.split()), (case, out)


@pytest.mark.parametrize("column", ["image", "mask", "patient_id", "view"])
def test_folder_manifest_missing_column(column: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALCBENCH_CONFIG", str(tmp_path / "bindings.toml"))
    root = tmp_path / "data"
    _folder(root, [], columns=[c for c in ("image", "mask", "patient_id", "view")
                               if c != column])
    COUNTS["folder manifest"] += 1
    code, out, err = _cli(["data", "add", "fz", "--format", "folder", "--root", str(root)],
                          capsys)
    assert code == 2, (out, err)
    one_line_naming(err, "manifest.csv", column)
    assert not (tmp_path / "bindings.toml").exists()


# --- corrupted results ----------------------------------------------------------------------------

def _fake_run(results: Path) -> tuple[ResultsStore, str]:
    """A trained-looking unet smoke run folder: run.json, status.json and a real best.pt."""
    from benchmark.trainer import save_checkpoint

    cls = METHODS.all()["unet"].cls
    profile, hparams = resolve_config(cls, "smoke", [])
    store = ResultsStore(results)
    store.ensure_writable()
    run_id = "unet-ffdm-smoke-s0-fuzz"
    store.write_info(run_id, {"method": "unet", "source": "ffdm", "profile": "smoke", "seed": 0,
                              "profile_settings": dataclasses.asdict(profile),
                              "hparams": hparams, "method_display": "Unet", "group": "P1"})
    store.update_status(run_id, state="trained")
    model = cls(hparams, torch.device("cpu"), profile.image_size)
    save_checkpoint(store.run_dir(run_id) / "checkpoints" / "best.pt",
                    {"method": model.state_dict(), "epoch": 0, "best_epoch": 0})
    return store, run_id


def _damage(kind: str, folder: Path) -> str:
    """Damage one file of a run folder; returns the file name an error must name."""
    if kind == "truncated run.json":
        text = (folder / "run.json").read_text()
        (folder / "run.json").write_text(text[: len(text) // 2])
        return "run.json"
    if kind == "per_case.parquet of another schema":
        pd.DataFrame({"a": [1], "b": ["x"]}).to_parquet(folder / "per_case.parquet")
        return "per_case.parquet"
    if kind == "per_case.parquet not parquet":
        (folder / "per_case.parquet").write_text("not parquet")
        return "per_case.parquet"
    if kind == "half-written checkpoint":
        ckpt = folder / "checkpoints" / "best.pt"
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
        return "best.pt"
    if kind == "status.json not an object":
        (folder / "status.json").write_text(json.dumps([1, 2]))
        return "status.json"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated run.json", "per_case.parquet of another schema",
                                  "per_case.parquet not parquet", "half-written checkpoint",
                                  "status.json not an object"])
def test_corrupted_results(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                           ) -> None:
    store, run_id = _fake_run(tmp_path / "results")
    folder = store.run_dir(run_id)
    named = _damage(kind, folder)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args in (["eval", "--run", run_id, "--target", "dbt", "--no-progress",
                  "--results-dir", str(tmp_path / "results")],
                 ["leaderboard", "--results-dir", str(tmp_path / "results"),
                  "--out-dir", str(tmp_path / "boards")]):
        COUNTS["corrupted results"] += 1
        code, out, err = _cli(args, capsys)
        assert "Traceback" not in out + err
        if args[0] == "eval" or named != "best.pt":  # the leaderboard reads no checkpoint
            assert code == 2, (kind, args[0], out, err)
            one_line_naming(err, named)
        else:
            assert code in (0, 2) and len(err.strip().splitlines()) <= 1, (kind, out, err)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                   if not p.is_relative_to(tmp_path / "boards"))
    assert after == before  # nothing new or partial in the run folder
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_zz_report_case_count(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many cases the fuzz tried (all with 0 tracebacks, or a test above failed)."""
    total = sum(COUNTS.values())
    assert total > 0
    with capsys.disabled():
        parts = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
        print(f"\nissue-18 fuzz: {total} cases, 0 tracebacks ({parts})")
