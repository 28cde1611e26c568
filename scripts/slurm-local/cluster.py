#!/usr/bin/env python3
"""A throw-away single-node Slurm cluster on loopback, with accounting, for integration tests.

    python scripts/slurm-local/cluster.py start DIR   # prints `export ...` lines to source
    python scripts/slurm-local/cluster.py stop DIR

`start` runs munged, MariaDB, slurmdbd, slurmctld and slurmd, each with its config, state,
log and pid file under DIR and on private TCP ports of 127.0.0.1, registers the cluster in
the accounting database, and waits until the node is idle and `sacct` answers. Clients find
the cluster through SLURM_CONF (written to DIR/env.sh). `stop` ends every daemon by the pid
in its pid file (never by name: another cluster on the machine is left alone). Needs root and
Debian's `slurm-wlm munge slurmdbd mariadb-server` (`make slurm-local` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MUNGE_SOCKET = "/run/munge/munge.socket.2"  # munge's default, the one Slurm's clients use
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged")  # stop order
TOOLS = ("munge", "munged", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld",
         "slurmd", "sacctmgr", "sacct", "sinfo", "sbatch", "srun", "squeue", "scancel")


class ClusterError(RuntimeError):
    """The cluster could not be started; the message names the daemon and its log."""


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 now (the kernel picks them)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def missing_tools() -> list[str]:
    """The daemons and client tools that are not installed."""
    return [t for t in TOOLS if not shutil.which(t)]


def _wait(what: str, check: Callable[[], bool], log: Path | None,
          timeout: float = 60.0) -> None:
    """Poll `check` until it holds; ClusterError with the log's last lines otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace").splitlines()[-5:] if log and log.is_file() else []
    raise ClusterError(f"{what} did not come up within {timeout:.0f}s"
                       + (f"; {log}: " + " | ".join(tail) if tail else ""))




def _ok(cmd: list[str], env: dict[str, str]) -> bool:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _memory_mb() -> int:
    """Memory to declare for the node: a bit below what is available now."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(512, int(line.split()[1]) // 1024 - 1024)
    return 1024


def write_configs(d: Path, ports: dict[str, int]) -> dict[str, str]:
    """slurm.conf and slurmdbd.conf under `d`; returns the environment clients need."""
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    # Slurm's clients (sacct, sacctmgr) ignore AuthInfo=socket=... on their connections to
    # slurmdbd, so every part uses munge's default socket (see `start_munge`).
    common = "AuthType=auth/munge\n"
    (d / "slurm.conf").write_text(f"""\
ClusterName=calcbench{ports['slurmctld']}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
{common}StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    dbd = d / "slurmdbd.conf"
    dbd.write_text(f"""\
{common}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
PidFile={d}/slurmdbd.pid
LogFile={d}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=slurm
StoragePass={ports['password']}
StorageLoc=slurm_acct_db
""")
    dbd.chmod(0o600)
    return {"SLURM_CONF": str(d / "slurm.conf")}


def start(d: Path) -> dict[str, str]:
    """Start every daemon under `d` (created) and return the clients' environment."""
    if os.geteuid() != 0:
        raise ClusterError("needs root (the daemons run as root and munged as 'munge')")
    missing = missing_tools()
    if missing:
        raise ClusterError(f"not installed: {', '.join(missing)} (make slurm-local)")
    d = d.absolute()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o711)  # munged (user 'munge') must reach its key folder inside
    closed = [p for p in d.parents if not os.stat(p).st_mode & stat.S_IXOTH]
    if closed:
        raise ClusterError(f"'{closed[0]}' is closed to other users, so munged (user 'munge') "
                           f"cannot reach its key under '{d}': chmod o+x it or use another folder")
    for sub in ("state", "spool", "munge", "mysql"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    names = ("slurmctld", "slurmd", "slurmdbd", "mariadb")
    ports: dict[str, int] = dict(zip(names, free_ports(len(names)), strict=True))
    password = secrets.token_hex(8)
    env = {**os.environ, **write_configs(d, {**ports, "password": password})}  # type: ignore[dict-item]

    start_munge(d)

    # MariaDB on a private port and socket, with a user for slurmdbd
    subprocess.run(["mariadb-install-db", f"--datadir={d / 'mysql'}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   check=True, capture_output=True)
    mysock = d / "mysql.sock"
    log = d / "mariadb.log"
    with open(log, "ab") as fh:
        subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={d / 'mysql'}", "--user=root",
                          f"--socket={mysock}", f"--port={ports['mariadb']}",
                          "--bind-address=127.0.0.1", f"--pid-file={d / 'mariadb.pid'}",
                          "--innodb-buffer-pool-size=32M", "--skip-log-bin"],
                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    sql = ["mariadb", "--no-defaults", f"--socket={mysock}", "-uroot"]
    _wait("mariadb", lambda: _ok([*sql, "-e", "select 1"], env), log)
    subprocess.run([*sql, "-e", f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY "
                    f"'{password}'; CREATE DATABASE IF NOT EXISTS slurm_acct_db; GRANT ALL ON "
                    "slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"],
                   check=True, capture_output=True)

    subprocess.run(["slurmdbd"], env=env, check=True)
    _wait("slurmdbd", lambda: _ok(["sacctmgr", "-n", "list", "cluster"], env),
          d / "slurmdbd.log")
    cluster = f"calcbench{ports['slurmctld']}"
    subprocess.run(["sacctmgr", "-i", "add", "cluster", cluster], env=env, capture_output=True)
    subprocess.run(["slurmctld"], env=env, check=True)
    _wait("slurmctld", lambda: _ok(["scontrol", "ping"], env), d / "slurmctld.log")
    subprocess.run(["slurmd"], env=env, check=True)
    _wait("slurmd (node idle)", lambda: "idle" in subprocess.run(
        ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout,
        d / "slurmd.log")
    _wait("sacct", lambda: _ok(["sacct", "-n", "-X"], env), d / "slurmdbd.log")
    out = {"SLURM_CONF": env["SLURM_CONF"]}
    (d / "env.sh").write_text("".join(f"export {k}={v}\n" for k, v in out.items()))
    return out


def start_munge(d: Path) -> None:
    """Use the munged already answering on the default socket, else start one there with a
    fresh key under `d` (owner 'munge', mode 0400), running as 'munge'; its pid goes to
    d/munged.pid only when we started it, so `stop` never ends a munged it did not start."""
    if _ok(["munge", "-n"], dict(os.environ)):
        return
    munge = pwd.getpwnam("munge")
    run = Path(MUNGE_SOCKET).parent
    run.mkdir(parents=True, exist_ok=True)
    os.chown(run, munge.pw_uid, munge.pw_gid)
    run.chmod(0o755)  # clients need search permission to reach the socket
    key = d / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    os.chmod(d / "munge", 0o700)
    os.chown(d / "munge", munge.pw_uid, munge.pw_gid)
    os.chown(key, munge.pw_uid, munge.pw_gid)
    subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--key-file={key}",
                    f"--socket={MUNGE_SOCKET}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                    f"--log-file={d / 'munge' / 'munged.log'}",
                    f"--seed-file={d / 'munge' / 'munged.seed'}"], check=True)
    _copy_pid(d / "munge" / "munged.pid", d / "munged.pid")


def _copy_pid(src: Path, dst: Path, timeout: float = 10.0) -> None:
    """munged writes its pid file inside its private folder; keep a copy beside the others."""
    deadline = time.monotonic() + timeout
    while not src.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not src.is_file():
        raise ClusterError(f"munged did not start: see {src.parent / 'munged.log'}")
    dst.write_text(src.read_text())


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie child of ours counts as ended)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(d: Path, timeout: float = 20.0) -> list[str]:
    """End every daemon of the cluster in `d` by its pid file (SIGTERM, then SIGKILL);
    returns what was stopped."""
    stopped = []
    for name in DAEMONS:
        pidfile = d / f"{name}.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reap it if we are its parent
            os.waitpid(pid, os.WNOHANG)
        stopped.append(f"{name} ({pid})")
    return stopped


def main() -> int:
    """CLI: start DIR (prints the exports) or stop DIR."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    if args.action == "stop":
        print("stopped:", ", ".join(stop(args.dir)) or "nothing")
        return 0
    try:
        env = start(args.dir)
    except (ClusterError, subprocess.CalledProcessError) as exc:
        if not os.environ.get("SLURM_LOCAL_KEEP"):  # keep the daemons to debug them
            stop(args.dir)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for k, v in env.items():
        print(f"export {k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
