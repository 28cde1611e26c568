"""End-to-end CLI tests on the smoke profile, and the one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app

runner = CliRunner()
BENCH = [sys.executable, "-m", "benchmark.cli"]


def bench(*args: str, results: Path) -> object:
    """Invoke the CLI in-process with an isolated results folder."""
    return runner.invoke(app, [*args[:1], *args[1:], "--results-dir", str(results)]
                         if args[0] in {"run", "eval", "leaderboard"} else list(args))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> dict:
    """One smoke-profile unet run ffdm -> dbt shared by the tests below."""
    results = tmp_path_factory.mktemp("results")
    res = bench("run", "--method", "unet", "--source", "ffdm", "--target", "dbt",
                "--profile", "smoke", "--no-progress", results=results)
    assert res.exit_code == 0, res.output
    run_id = next((results / "runs").iterdir()).name
    return {"results": results, "output": res.output, "run_id": run_id}


def test_run_prints_table_and_stores_results(smoke_run: dict) -> None:
    out = smoke_run["output"]
    assert "SYNTHETIC stand-in" in out
    assert "DSC (%)" in out and "dbt" in out
    folder = smoke_run["results"] / "runs" / smoke_run["run_id"]
    info = json.loads((folder / "run.json").read_text())
    assert info["method"] == "unet" and info["profile"] == "smoke"
    assert info["versions"]["torch"] and info["data_fingerprints"]["ffdm"]
    assert info["torch_threads"] >= 1
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "trained"
    assert {k.split("@")[0] for k in status["targets"]} == {"ffdm", "dbt"}
    import pandas as pd

    cases = pd.read_parquet(folder / "per_case.parquet")
    assert set(cases["target"]) == {"ffdm", "dbt"}
    assert {"TP", "HD95", "ASSD", "ref_empty", "patient_id", "view"} <= set(cases.columns)
    assert (folder / "checkpoints" / "best.pt").is_file()


def test_rerun_reuses_training_and_is_deterministic(smoke_run: dict) -> None:
    res = bench("run", "--method", "unet", "--source", "ffdm", "--target", "dbt",
                "--profile", "smoke", "--no-progress", results=smoke_run["results"])
    assert res.exit_code == 0, res.output
    assert "reusing the finished training" in res.output
    assert len(list((smoke_run["results"] / "runs").iterdir())) == 1


def test_reusing_a_run_trained_with_other_threads_says_so(smoke_run: dict,
                                                          tmp_path: Path) -> None:
    """Reuse keeps the stored numbers, and says that a fresh training with this process's
    thread count would not reproduce them; with the same count there is no note."""
    import shutil

    import torch

    results = tmp_path / "results"
    shutil.copytree(smoke_run["results"], results)
    args = ("run", "--method", "unet", "--source", "ffdm", "--target", "dbt", "--profile",
            "smoke", "--no-progress")
    same = bench(*args, results=results)
    assert same.exit_code == 0 and "thread(s)" not in same.output, same.output
    path = results / "runs" / smoke_run["run_id"] / "run.json"
    info = json.loads(path.read_text())
    info["torch_threads"] = torch.get_num_threads() + 3
    path.write_text(json.dumps(info))
    res = bench(*args, results=results)
    assert res.exit_code == 0 and "reusing the finished training" in res.output, res.output
    flat = " ".join(res.output.split())
    assert f"trained with {torch.get_num_threads() + 3} CPU thread(s)" in flat
    assert f"--threads {torch.get_num_threads() + 3} reproduces them" in flat
    assert "would give different ones" in flat and "SIMD" not in flat
    info["torch_threads"] = torch.get_num_threads()  # same threads, other kernels
    info["numerics"]["numpy_simd"] = ["SSE-only machine"]
    path.write_text(json.dumps(info))
    res = bench(*args, results=results)
    flat = " ".join(res.output.split())
    assert res.exit_code == 0 and "on other SIMD kernels" in flat, res.output
    assert "SSE-only machine" in flat and "CALCBENCH_PORTABLE=1" in flat
    assert "thread(s)" not in flat


def test_threads_option_reproduces_a_one_thread_process(tmp_path: Path) -> None:
    """`--threads 1` gives the numbers of a process that has one thread (as a sweep job on
    a 2-core machine with 2 workers), and run.json records it."""
    import pandas as pd
    import torch

    args = ["run", "--method", "unet", "--source", "ffdm", "--profile", "smoke", "--no-progress"]
    before = torch.get_num_threads()
    try:
        res = bench(*args, "--threads", "1", results=tmp_path / "a")
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*BENCH, *args, "--results-dir", str(tmp_path / "b")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    frames = []
    for name in ("a", "b"):
        folder = next((tmp_path / name / "runs").iterdir())
        assert json.loads((folder / "run.json").read_text())["torch_threads"] == 1
        cols = ["image_id", "target", "DSC", "HD", "TP", "FP"]
        frames.append(pd.read_parquet(folder / "per_case.parquet")[cols].sort_values(
            ["target", "image_id"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(*frames)


def test_same_seed_same_metrics(smoke_run: dict, tmp_path: Path) -> None:
    import pandas as pd

    res = bench("run", "--method", "unet", "--source", "ffdm", "--target", "dbt",
                "--profile", "smoke", "--no-progress", results=tmp_path)
    assert res.exit_code == 0, res.output
    a = pd.read_parquet(next((tmp_path / "runs").iterdir()) / "per_case.parquet")
    b = pd.read_parquet(smoke_run["results"] / "runs" / smoke_run["run_id"] / "per_case.parquet")
    cols = ["image_id", "target", "DSC", "HD", "ASSD", "TP", "FP"]
    a = a[cols].sort_values(["target", "image_id"]).reset_index(drop=True)
    b = b[cols].sort_values(["target", "image_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_last_checkpoint_rows_copied_when_best_is_last(tmp_path: Path) -> None:
    """With one epoch, best.pt and last.pt hold the same weights: the 'last' rows are the
    best rows (copied, not evaluated twice); with two epochs and a different best epoch they
    are evaluated."""
    import pandas as pd

    args = ("run", "--method", "unet", "--source", "ffdm", "--profile", "smoke", "--set",
            "epochs=1", "--no-progress")
    res = bench(*args, results=tmp_path)
    assert res.exit_code == 0, res.output
    folder = next((tmp_path / "runs").iterdir())
    status = json.loads((folder / "status.json").read_text())
    assert not [k for k in status["targets"] if k.endswith("#last")]  # last.pt is opt-in
    board = bench("leaderboard", "--select", "last", results=tmp_path)
    assert board.exit_code == 2 and "--eval-last" in board.output, board.output
    assert len(board.output.strip().splitlines()) == 1
    res = bench(*args, "--eval-last", results=tmp_path)  # reuses the training, adds last rows
    assert res.exit_code == 0 and "reusing the finished training" in res.output, res.output
    status = json.loads((folder / "status.json").read_text())
    last = [v for k, v in status["targets"].items() if k.endswith("#last")]
    assert len(last) == 1 and last[0]["copied_from"] == "best (same weights)"
    cases = pd.read_parquet(folder / "per_case.parquet")
    cols = ["image_id", "DSC", "HD", "ASSD", "TP", "FP", "FN"]
    best = cases[cases["checkpoint"] == "best"][cols].sort_values("image_id")
    copied = cases[cases["checkpoint"] == "last"][cols].sort_values("image_id")
    assert len(best) > 0
    pd.testing.assert_frame_equal(best.reset_index(drop=True), copied.reset_index(drop=True))
    cands = pd.read_parquet(folder / "froc_candidates.parquet")
    assert (cands["checkpoint"] == "last").sum() == (cands["checkpoint"] == "best").sum()


def test_eval_adds_a_target(smoke_run: dict) -> None:
    res = bench("eval", "--run", smoke_run["run_id"], "--target", "cbis-ddsm", "--no-progress",
                results=smoke_run["results"])
    assert res.exit_code == 0, res.output
    assert "cbis-ddsm" in res.output


def test_leaderboard_formats(smoke_run: dict) -> None:
    for fmt in ("md", "csv", "tex"):
        res = bench("leaderboard", "--format", fmt, "--with-paper", results=smoke_run["results"])
        assert res.exit_code == 0, res.output
    out_dir = smoke_run["results"] / "leaderboards"
    md = (out_dir / "table1-synthetic-smoke.md").read_text()
    assert "| P1 | Unet |" in md and "*Unet (paper)*" in md
    assert (out_dir / "table1-synthetic-smoke.csv").is_file()
    assert (out_dir / "table1-synthetic-smoke.tex").is_file()


def test_list_commands() -> None:
    res = runner.invoke(app, ["list", "methods"])
    assert res.exit_code == 0 and "Unet" in res.output and "P1" in res.output
    res = runner.invoke(app, ["list", "domains"])
    assert res.exit_code == 0 and "ffdm" in res.output and "cbis-ddsm" in res.output


def test_data_show_writes_contact_sheet(tmp_path: Path, session_cache: Path) -> None:
    png = tmp_path / "sheet.png"
    res = runner.invoke(app, ["data", "show", "ffdm", "dbt", "--image-size", "32",
                              "--out", str(png), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000 and "spacing" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--method", "unte", "--source", "ffdm"], "unknown method 'unte' (did you mean 'unet'"),
    (["run", "--method", "unet", "--source", "ffdn"], "unknown domain 'ffdn' (did you mean 'ffdm'"),
    (["run", "--method", "unet", "--source", "ffdm", "--target", "nowhere"],
     "unknown domain 'nowhere'"),
    (["run", "--method", "unet", "--source", "missing.toml"], "does not exist"),
    (["run", "--method", "unet", "--source", "ffdm", "--set", "epoch=2"], "did you mean 'epochs'"),
    (["run", "--method", "unet", "--source", "ffdm", "--profile", "fast"], "unknown profile"),
    (["eval", "--run", "nope", "--target", "dbt"], "no run 'nope'"),
    (["leaderboard", "--format", "xls"], "--format 'xls'"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    res = bench(*args, results=tmp_path / "results")
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_bad_toml_names_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    text = (Path(__file__).resolve().parent.parent / "datasets" / "synthetic" / "domains"
            / "ffdm.toml").read_text()
    toml.write_text(text + "\n[bogus_table]\nx = 1\n")
    res = bench("run", "--method", "unet", "--source", str(toml), results=tmp_path / "r")
    assert res.exit_code == 2 and "bogus_table" in res.output, res.output


def test_corrupt_run_folder(smoke_run: dict, tmp_path: Path) -> None:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(smoke_run["results"] / "runs", results / "runs")
    (results / "runs" / smoke_run["run_id"] / "status.json").write_text("{truncated")
    res = bench("eval", "--run", smoke_run["run_id"], "--target", "dbt", results=results)
    assert res.exit_code == 2 and "corrupt" in res.output


def test_unwritable_results_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = bench("run", "--method", "unet", "--source", "ffdm", "--profile", "smoke",
                results=blocker / "results")
    assert res.exit_code == 2 and "not writable" in res.output


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The real `bench` entry point (not the in-process runner) exits 2 with one line."""
    exe = Path(sys.executable).parent / "bench"
    cmd = [str(exe)] if exe.exists() else BENCH
    proc = subprocess.run([*cmd, "run", "--method", "nope", "--source", "ffdm"],
                          capture_output=True, text=True, env={**os.environ},
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "unknown method 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def _tiny_toml(tmp_path: Path, name: str, patients: int = 6) -> Path:
    """A built-in domain's TOML with fewer patients, for fast subprocess runs."""
    text = (Path(__file__).resolve().parent.parent / "datasets" / "synthetic" / "domains"
            / f"{name}.toml").read_text()
    text = text.replace(f'name = "{name}"', f'name = "tiny-{name}"')
    lines = [f"n_patients = {patients}" if line.startswith("n_patients")
             else "test_patients = 0" if line.startswith("test_patients") else line
             for line in text.splitlines()]
    path = tmp_path / f"tiny-{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_same_seed_same_metrics_across_processes(tmp_path: Path) -> None:
    """A fresh process that generates the data and one that reads it from the cache train
    identical models (initialisation must not depend on what ran before in the process)."""
    import pandas as pd

    src, tgt = _tiny_toml(tmp_path, "ffdm"), _tiny_toml(tmp_path, "dbt", 3)
    env = {**os.environ, "CALCBENCH_CACHE": str(tmp_path / "cache")}
    frames = []
    for i in range(2):  # run 0 generates the data, run 1 reads the cache
        proc = subprocess.run(
            [*BENCH, "run", "--method", "unet", "--source", str(src), "--target", str(tgt),
             "--profile", "smoke", "--no-progress", "--results-dir", str(tmp_path / f"r{i}")],
            capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = next((tmp_path / f"r{i}" / "runs").iterdir())
        cols = ["target", "image_id", "DSC", "HD", "ASSD", "TP", "FP"]
        frames.append(pd.read_parquet(run / "per_case.parquet")[cols]
                      .sort_values(["target", "image_id"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_portable_pins_kernels_before_numpy_and_warns_when_late() -> None:
    """CALCBENCH_PORTABLE=1 puts the AVX2 pins in the environment when calcbench is imported
    first, so numpy and torch load with them; imported after numpy, it says it came too late."""
    from benchmark.numerics import PORTABLE_ENV

    env = {**{k: v for k, v in os.environ.items() if k not in PORTABLE_ENV},
           "CALCBENCH_PORTABLE": "1"}
    first = ("import benchmark, json; from benchmark import numerics; "
             "print(json.dumps(numerics.describe()))")
    done = subprocess.run([sys.executable, "-c", first], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout.strip().splitlines()[-1])
    assert described["portable"] is True and described["pinned_env"] == PORTABLE_ENV
    assert described["avx2_kernels"] is True
    late = subprocess.run([sys.executable, "-c", "import numpy, benchmark, json; from benchmark "
                           "import numerics; print(json.dumps(numerics.describe()))"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert late.returncode == 0 and "came too late for numpy" in late.stderr, late.stderr
    if "avx512" in Path("/proc/cpuinfo").read_text():  # the record says the pin missed numpy
        assert json.loads(late.stdout.strip().splitlines()[-1])["avx2_kernels"] is False
