"""Sweeps on real engines (issue 14): a single-node Slurm cluster with accounting
(scripts/slurm-local/cluster.py) and a `ray start --head` cluster, both on loopback with
private ports and temp folders. Each runs a 2-job smoke sweep with the default RELATIVE
`results` folder, loses one job mid-run (scancel; kill -9 of the Ray worker), and is launched
again: nothing is lost or run twice, and `bench sweep status` and `bench leaderboard` see every
run. Every daemon is stopped by its pid at the end, also when a test fails."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
BENCH = Path(sys.executable).parent / "bench"
# Long enough (2 x 600 steps, ~15 s on an idle core; a checkpoint every 5) to stop a job
# mid-training even after Slurm's KillWait.
SWEEP = ["sweep", "--profile", "smoke", "--methods", "unet", "--sources",
         str(DATA / "tiny-ffdm.toml"), "--targets", str(DATA / "tiny-dbt.toml"), "--seeds",
         "0,1", "--set", "steps_per_epoch=600", "--checkpoint-every", "5", "--no-progress"]


def _load_cluster_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "slurm_local_cluster", ROOT / "scripts" / "slurm-local" / "cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without CALCBENCH_RESULTS (so `results` is relative), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "CALCBENCH_RESULTS"}
    return {**env, "COLUMNS": "250", **extra}


def _bench(args: list[str], cwd: Path, env: dict[str, str],
           timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BENCH), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[str] | None,
              timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the sweep ended before {what}: {out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _records(cwd: Path) -> dict[str, dict[str, object]]:
    out = {}
    for path in (cwd / "results").glob("sweeps/*/jobs/*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:  # being replaced this instant
            continue
    return out


def _checkpointed(cwd: Path) -> str | None:
    """The run id of a job that is training and has saved a checkpoint, if any."""
    for last in (cwd / "results").glob("runs/*/checkpoints/last.pt"):
        run_id = last.parent.parent.name
        if not (last.parent / "best.pt").exists():
            return run_id
    return None


def _sweep_id(cwd: Path) -> str:
    return next(p.name for p in (cwd / "results" / "sweeps").iterdir()
                if not p.name.startswith("."))


def _check_everything_kept(cwd: Path, env: dict[str, str], stopped: str) -> str:
    """Both jobs done once: two runs, the stopped one resumed, status and leaderboard see them.
    Returns the sweep id."""
    runs = sorted(p.name for p in (cwd / "results" / "runs").iterdir())
    assert len(runs) == 2 and stopped in runs
    [sweep] = [p for p in (cwd / "results" / "sweeps").iterdir() if not p.name.startswith(".")]
    records = _records(cwd)
    assert {r: records[r]["state"] for r in runs} == {r: "done" for r in runs}
    assert records[stopped]["attempts"] == 2
    assert [records[r]["attempts"] for r in runs if r != stopped] == [1]
    log = (sweep / "logs" / f"{stopped}.log").read_text()
    assert log.count("resuming from") == 1 and log.count("training Unet") == 2
    for run in runs:
        info = json.loads((cwd / "results" / "runs" / run / "run.json").read_text())
        assert info["torch_threads"] == 1 and info["command"][1] == "sweep" \
            and "--launcher" in info["command"]  # the user's command, not the worker's
    status = _bench(["sweep", "status", "--sweep", sweep.name], cwd, env)
    assert status.returncode == 0 and status.stdout.strip().endswith("2 done"), status.stdout
    board = _bench(["leaderboard", "--table", "matrix"], cwd, env)
    assert board.returncode == 0 and "(2 seeds)" in board.stdout, board.stdout + board.stderr
    return sweep.name


@contextlib.contextmanager
def _sweep_until_a_checkpoint(cmd: list[str], cwd: Path, env: dict[str, str]
                              ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start `bench <cmd>` and wait until one of its runs has a checkpoint; yields the process
    and that run's id, and kills the process afterwards if it is still running."""
    proc = subprocess.Popen([str(BENCH), *cmd], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for("a checkpoint", lambda: _checkpointed(cwd) is not None, proc)
        stopped = _checkpointed(cwd)
        assert stopped
        yield proc, stopped
    finally:
        if proc.poll() is None:
            proc.kill()


# --- Slurm ------------------------------------------------------------------------------------

def _skip_outside_ci(reason: str) -> None:
    """Skip a developer's run that lacks root or the packages, but fail in CI, where `make
    test` installs them as root: there a skip would hide a broken install step."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the cluster tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """A running single-node Slurm cluster (stopped by pid afterwards); its client env."""
    if os.geteuid() != 0:
        _skip_outside_ci("the Slurm test cluster needs root (its daemons run as root)")
    cluster = _load_cluster_script()
    missing = cluster.missing_tools()
    if missing:
        _skip_outside_ci(f"Slurm is not installed here ({', '.join(missing)}): "
                         "`make slurm-local`")
    folder = Path(tempfile.mkdtemp(prefix="calcbench-slurm-"))
    try:
        try:
            env = cluster.start(folder)
        except (cluster.ClusterError, subprocess.CalledProcessError) as exc:
            _skip_outside_ci(f"the Slurm daemons cannot run here: {exc}")
        yield env
    finally:
        cluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _refused(cmd: list[str], cwd: Path, env: dict[str, str], reason: str) -> None:
    """The sweep stops at once with exit code 2 and one line naming `reason`."""
    done = _bench(cmd, cwd, env, timeout=120)
    assert done.returncode == 2 and reason in done.stderr, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_slurm_sweep_survives_scancel(slurm_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(slurm_env)
    cmd = [*SWEEP, "--launcher", "slurm", "--cpus-per-job", "1", "--time", "10"]
    _refused([*cmd, "--partition", "nope"], tmp_path, env, "the job array was refused")
    _refused([*cmd, "--gpus-per-job", "1"], tmp_path, env, "the job array was refused")
    with _sweep_until_a_checkpoint(cmd, tmp_path, env) as (proc, stopped):
        slurm_job = str(_records(tmp_path)[stopped]["slurm_job"])
        # status sees the tasks in Slurm's hands (squeue), so a relaunch would not resubmit
        live = _bench(["sweep", "status", "--sweep", _sweep_id(tmp_path)], tmp_path, env)
        assert f"Slurm job {slurm_job} running" in " ".join(live.stdout.split()), live.stdout
        subprocess.run(["scancel", slurm_job], env=env, check=True)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out  # not everything finished
    assert f"interrupted {stopped}" in out and f"Slurm job {slurm_job} CANCELLED" in out, out
    sweep_id = _sweep_id(tmp_path)
    detail = _bench(["sweep", "status", "--sweep", sweep_id], tmp_path, env).stdout
    assert "1 incomplete" in detail and "1 done" in detail and "CANCELLED" in detail, detail
    again = _bench(cmd, tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 were done, 1 ran now" in again.stdout, again.stdout
    _check_everything_kept(tmp_path, env, stopped)
    # Slurm ran three array tasks in all: two, then the one resumed (no duplicate submitted)
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "--name",
                           f"calcbench-{sweep_id}"], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert len(acct) == 3, acct


# --- Ray --------------------------------------------------------------------------------------

def _session_pids(sid: int) -> list[int]:
    """Processes of the session `sid` (the `ray start` we ran, and every daemon it left)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # the 6th field of /proc/PID/stat: the session id
            pids.append(int(stat.parent.name))
    return pids


def _free_ports(n: int) -> list[int]:
    return _load_cluster_script().free_ports(n)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str], Path, int]]:
    """`ray start --head` on private ports in a short temp folder, started in a folder of its
    own; yields (address, driver env, its folder, session id). Ended by pid afterwards."""
    ray_bin = Path(sys.executable).parent / "ray"
    folder = Path(tempfile.mkdtemp(prefix="cbray-", dir="/tmp"))  # Ray's socket paths are short
    head_cwd = folder / "head-cwd"
    head_cwd.mkdir()
    port, agent, dash, metrics = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--num-cpus", "2", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--temp-dir", str(folder / "t"),
         "--include-dashboard=false", "--dashboard-port", str(dash),
         "--dashboard-agent-listen-port", str(agent),
         "--metrics-export-port", str(metrics), "--disable-usage-stats"],
        cwd=head_cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            pytest.fail(f"ray start failed: {out[-2000:]}")
        yield f"127.0.0.1:{port}", env, head_cwd, proc.pid
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_pids(proc.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (5 if sig == signal.SIGTERM else 15)
            while _session_pids(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.3)
        shutil.rmtree(folder, ignore_errors=True)


def test_ray_sweep_survives_a_killed_worker(ray_head: tuple[str, dict[str, str], Path, int],
                                            tmp_path: Path) -> None:
    address, head_env, head_cwd, sid = ray_head
    env = _env({k: head_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
    env.pop("RAY_ADDRESS", None)
    cmd = [*SWEEP, "--launcher", "ray", "--address", address, "--cpus-per-job", "1"]
    _refused([*cmd, "--gpus-per-job", "1"], tmp_path, env, "no node of the Ray cluster")
    _refused([*cmd, "--opt", "num_cpus=1"], tmp_path, env, "--opt num_cpus")
    with _sweep_until_a_checkpoint(cmd, tmp_path, env) as (proc, stopped):
        pid = int(_records(tmp_path)[stopped]["pid"])  # type: ignore[call-overload]
        assert pid in _session_pids(sid)  # a worker of our head, not some other process
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out  # Ray retried the task, which resumed
    assert "2 ran now" in out, out
    again = _bench(cmd, tmp_path, env)
    assert again.returncode == 0 and "2 were done, 0 ran now" in again.stdout, again.stdout
    _check_everything_kept(tmp_path, env, stopped)
    assert not (head_cwd / "results").exists()  # workers wrote where the driver asked


def test_ray_jobs_take_the_drivers_portable_pins(
        ray_head: tuple[str, dict[str, str], Path, int], tmp_path: Path) -> None:
    """CALCBENCH_PORTABLE=1 on the driver reaches the Ray workers before they load numpy and
    torch: the sweep's run.json files record the AVX2 kernels."""
    from benchmark.numerics import PORTABLE_ENV

    address, head_env, _head_cwd, _sid = ray_head
    env = _env({**{k: head_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")},
                "CALCBENCH_PORTABLE": "1"})
    for key in ("RAY_ADDRESS", *PORTABLE_ENV):
        env.pop(key, None)
    cmd = ["sweep", "--profile", "smoke", "--methods", "unet", "--sources",
           str(DATA / "tiny-ffdm.toml"), "--targets", str(DATA / "tiny-dbt.toml"), "--seeds",
           "0", "--no-progress", "--launcher", "ray", "--address", address,
           "--cpus-per-job", "1"]
    done = _bench(cmd, tmp_path, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    infos = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/run.json")]
    assert len(infos) == 1
    numerics = infos[0]["numerics"]
    assert numerics["portable"] is True and numerics["pinned_env"] == PORTABLE_ENV
    assert numerics["avx2_kernels"] is True


def test_missing_slurm_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the cluster tests"):
        _skip_outside_ci("Slurm is not installed here")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _skip_outside_ci("Slurm is not installed here")
