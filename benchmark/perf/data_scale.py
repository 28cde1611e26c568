"""`bench perf data --scale N`: the shard store at realistic size, at N and 4N frames.

Writes N DICOM frames at full-field size (default 1996 x 2457, 12 bits stored in 16): half as
single-frame FFDM images with PNG masks, half as multi-frame DBT volumes (Breast Tomosynthesis
Image Storage); every other file of each kind is JPEG 2000 lossless. A few templates are encoded
once and copied, so writing the set costs disk time rather than encoder time. Then, each phase
in a fresh Python process (its own peak RSS: VmHWM, which unlike `ru_maxrss` does not carry
the parent's peak across exec):

- build the store with 1 worker, and with every available core: frames/s and samples/s,
  next to the speed-up that pure-CPU jobs get from as many processes at that moment (a
  machine whose cores are busy with other work cannot show the pool's speed-up);
- read paper-profile epochs (batch 4, shuffled rows, one reader thread per core, no
  model; whole epochs until at least `min_samples` rows): samples/s, counting every DICOM
  decode (must be 0);
- the same at 4N, and the peak-RSS ratios 4N / N (targets: within 10 %, below 2 GB).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasets.domain import progress_task
from datasets.real.bindings import Binding

TEMPLATES = 2  # distinct phantoms per kind and encoding


def _mib(kib: float) -> float:
    """ru_maxrss (KiB on Linux) in MiB."""
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def own_peak_mib() -> float:
    """This process's own peak RSS in MiB. Linux keeps `ru_maxrss` across exec, so a phase
    started from a big parent would report the parent's peak; the VmHWM of /proc/self/status
    belongs to the new process image alone. Elsewhere: ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def scale_files(frames: int, dbt_frames: int) -> int:
    """Files of a scale set: frames // 2 FFDM images, the rest as DBT volumes (at least one)."""
    return frames // 2 + max(1, (frames - frames // 2) // dbt_frames)


def write_scale_set(folder: Path, frames: int, rows: int, cols: int, dbt_frames: int,
                    progress: Any = None) -> dict[str, Any]:
    """Write `frames` DICOM frames (FFDM singles + DBT volumes) and a folder manifest."""
    from PIL import Image

    from datasets.real.dicom_write import phantom, write_dbt, write_mg

    folder.mkdir(parents=True, exist_ok=True)
    tpl = folder / "templates"
    tpl.mkdir()
    made: dict[tuple[str, int, bool], Path] = {}
    for t in range(TEMPLATES):
        img, mask = phantom(rows, cols, seed=t, spots=6, laterality="LR"[t % 2])
        stored = np.round(img * 4095).astype(np.uint16)
        Image.fromarray(mask * 255).save(tpl / f"mask{t}.png")
        for compress in (False, True):
            made["ffdm", t, compress] = write_mg(
                tpl / f"ffdm{t}{'-j2k' if compress else ''}.dcm", stored, bits_stored=12,
                compress=compress, PixelSpacing=["0.085", "0.085"])
            volume = np.stack([np.roll(stored, 7 * k, axis=0) for k in range(dbt_frames)])
            made["dbt", t, compress] = write_dbt(
                tpl / f"dbt{t}{'-j2k' if compress else ''}.dcm", volume, spacing=(0.085, 0.085),
                window=(2048, 4096), compress=compress)
    lines = ["image,mask,patient_id,view"]
    n_ffdm = frames // 2
    n_volumes = scale_files(frames, dbt_frames) - n_ffdm
    files = n_ffdm + n_volumes
    for i in range(files):
        kind = "ffdm" if i < n_ffdm else "dbt"
        src = made[kind, i % TEMPLATES, bool(i // TEMPLATES % 2)]
        dst = folder / f"{kind}{i:05d}.dcm"
        shutil.copyfile(src, dst)
        mask = f"templates/mask{i % TEMPLATES}.png" if kind == "ffdm" else ""
        lines.append(f"{dst.name},{mask},P{i // 4:05d},{'CC' if i % 2 else 'MLO'}")
        if progress is not None:
            progress.advance(1)
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    raw = sum(p.stat().st_size for p in folder.glob("*.dcm"))
    return {"frames": n_ffdm + n_volumes * dbt_frames, "files": files, "raw_bytes": raw}


def _phase_build(root: str, cache: str, image_size: int, workers: int) -> dict[str, Any]:
    """Child process: build the store; time, samples and peak RSS (self, largest worker)."""
    from datasets.real.domain import RealDomain

    dom = RealDomain(Binding("scale", "folder", root, {}))
    dom.workers = workers
    t0 = time.perf_counter()
    data = dom.load(image_size, Path(cache))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples": len(data), "decode_count": dom.decode_count,
            "rss_mib": own_peak_mib(),
            "worker_rss_mib": _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}


def _phase_load(root: str, cache: str, image_size: int, workers: int, min_samples: int
                ) -> dict[str, Any]:
    """Child process: open the store (counting DICOM decodes) and stream paper-profile epochs
    of every row through the reader threads; samples/s and peak RSS."""
    import pydicom
    import torch

    from benchmark.config import get_profile
    from benchmark.feed import batch_stream
    from datasets.real import dicom_io
    from datasets.real.domain import RealDomain

    decodes = {"n": 0}

    def counted(fn: Any) -> Any:
        """`fn`, counting its calls in `decodes`."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            """Count one decode, then decode."""
            decodes["n"] += 1
            return fn(*args, **kwargs)
        return wrapper

    # every DICOM read goes through pydicom.dcmread, every pixel decode through pixel_array
    pydicom.dcmread = counted(pydicom.dcmread)
    dicom_io.pixel_array = counted(dicom_io.pixel_array)
    dom = RealDomain(Binding("scale", "folder", root, {}))
    data = dom.load(image_size, Path(cache))
    profile = get_profile("paper")
    rng = np.random.default_rng(0)
    epochs = max(1, -(-min_samples // len(data)))  # whole epochs, at least min_samples rows
    batches = []
    for _ in range(epochs):  # one stream over every epoch: thread start-up counted once
        order = rng.permutation(len(data))
        batches += [order[i:i + profile.batch_size]
                    for i in range(0, len(order), profile.batch_size)]
    samples, t0 = 0, time.perf_counter()
    for batch in batch_stream(data, batches, torch.device("cpu"), workers=workers):
        samples += int(batch["image"].shape[0])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples": samples, "epochs": epochs, "rows": len(data),
            "decodes": decodes["n"] + dom.decode_count,
            "rss_mib": own_peak_mib(),
            "worker_rss_mib": _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}


def phase_main(argv: list[str]) -> None:
    """Entry point of a phase subprocess: argv = [phase, json kwargs]; prints one JSON line."""
    kwargs = json.loads(argv[1])
    result = _phase_build(**kwargs) if argv[0] == "build" else _phase_load(**kwargs)
    print("RESULT " + json.dumps(result))


def _run_phase(phase: str, **kwargs: Any) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and return its JSON result."""
    code = "import sys; from benchmark.perf.data_scale import phase_main; phase_main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, phase, json.dumps(kwargs)],
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"perf phase {phase} failed: {' | '.join(tail)}")
    return json.loads(lines[-1][len("RESULT "):])


def _spin(n: int) -> int:
    """Pure-Python CPU work (the reference of what `workers` processes can gain here)."""
    total = 0
    for i in range(n):
        total += i
    return total


def cpu_reference(workers: int, n: int = 4_000_000) -> float:
    """Speed-up of `workers` processes over one on 2 x `workers` equal pure-CPU jobs, measured
    now: when other work holds cores, the build's speed-up cannot exceed this either."""
    import multiprocessing

    jobs = [n] * (2 * workers)
    t0 = time.perf_counter()
    for job in jobs:
        _spin(job)
    serial = time.perf_counter() - t0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, jobs)
        parallel = time.perf_counter() - t0
    return serial / parallel


def _du(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_scale_perf(scale: int, image_size: int = 512, rows: int = 2457, cols: int = 1996,
                   dbt_frames: int = 10, workers: int | None = None, min_samples: int = 2000,
                   reporter: Any = None) -> dict[str, Any]:
    """Measure at `scale` and 4 x `scale` frames; returns every number for `print_scale_perf`."""
    from datasets.shard_build import default_workers

    workers = workers or default_workers()
    out: dict[str, Any] = {"scale": scale, "image_size": image_size, "workers": workers,
                           "rows": rows, "cols": cols, "dbt_frames": dbt_frames, "levels": []}
    with tempfile.TemporaryDirectory(prefix="calcbench-perf-scale-") as tmp:
        for level in (scale, 4 * scale):
            src, c1, cw = (Path(tmp) / f"{name}-{level}" for name in ("src", "c1", "cw"))
            with progress_task(reporter, f"writing {level} DICOM frames",
                               scale_files(level, dbt_frames)) as task:
                made = write_scale_set(src, level, rows, cols, dbt_frames, task)
            row: dict[str, Any] = {"level": level, **made}
            steps = ["build, 1 worker", f"build, {workers} workers", "loader epoch"]
            with progress_task(reporter, f"{made['frames']} frames: build, loader", 3) as task:
                common = {"root": str(src), "image_size": image_size}
                if level == scale:
                    out["cpu_reference"] = cpu_reference(workers)
                    row["build1"] = _run_phase("build", cache=str(c1), workers=1, **common)
                _advance(task, steps[0])
                row["buildw"] = _run_phase("build", cache=str(cw), workers=workers, **common)
                _advance(task, steps[1])
                row["load"] = _run_phase("load", cache=str(cw), workers=workers,
                                         min_samples=min_samples, **common)
                _advance(task, steps[2])
            row["cache_bytes"] = _du(cw / "shards")
            out["levels"].append(row)
            for folder in (src, c1, cw):
                shutil.rmtree(folder, ignore_errors=True)
    return out


def _advance(task: Any, what: str) -> None:
    """One phase done."""
    if task is not None:
        task.advance(1, done=what)


def print_scale_perf(result: dict[str, Any], console: Any) -> None:
    """The measured table, then each target with its ratio and PASS / MISS."""
    from rich.table import Table

    first, big = result["levels"]
    table = Table(title=f"shard store at scale: {result['rows']}x{result['cols']} DICOM, "
                        f"{result['image_size']} px samples, DBT volumes of "
                        f"{result['dbt_frames']} frames, {result['workers']} workers")
    for col in ("frames", "files", "samples", "build 1 w frames/s",
                f"build {result['workers']} w frames/s", "build peak RSS MiB (main/worker)",
                "loader samples/s", "loader peak RSS MiB (main/worker)", "decodes on reread",
                "cache / raw DICOM"):
        table.add_column(col, justify="right")
    for row in (first, big):
        b1, bw, ld = row.get("build1"), row["buildw"], row["load"]
        table.add_row(
            str(row["frames"]), str(row["files"]), str(bw["samples"]),
            f"{row['frames'] / b1['seconds']:.2f}" if b1 else "-",
            f"{row['frames'] / bw['seconds']:.2f}",
            f"{bw['rss_mib']:.0f} / {bw['worker_rss_mib']:.0f}",
            f"{ld['samples'] / ld['seconds']:.0f}",
            f"{ld['rss_mib']:.0f} / {ld['worker_rss_mib']:.0f}", str(ld["decodes"]),
            f"{row['cache_bytes'] / 2**20:.0f} / {row['raw_bytes'] / 2**20:.0f} MiB "
            f"({row['cache_bytes'] / row['raw_bytes']:.2f}x)")
    console.print(table)
    for line in scale_targets(result):
        console.print(line, highlight=False)


def scale_targets(result: dict[str, Any]) -> list[str]:
    """One line per target: the measured ratio or value and PASS / MISS."""
    first, big = result["levels"]

    def peak(row: dict[str, Any], phase: str) -> float:
        """The larger of the phase's main-process and worker peaks."""
        return max(row[phase]["rss_mib"], row[phase]["worker_rss_mib"])

    speed = first["build1"]["seconds"] / first["buildw"]["seconds"]
    rates = [row["load"]["samples"] / row["load"]["seconds"] for row in (first, big)]
    lines = []
    for phase, label in (("buildw", "build"), ("load", "loader")):
        ratio = peak(big, phase) / peak(first, phase)
        top = max(peak(big, phase), peak(first, phase))
        ok = abs(ratio - 1) <= 0.10 and top < 2048
        lines.append(f"{label} peak RSS {big['frames']} vs {first['frames']} frames: "
                     f"{ratio:.3f}x (max {top:.0f} MiB; target within 10 % and < 2048 MiB): "
                     f"{'PASS' if ok else 'MISS'}")
    w = result["workers"]
    lines.append(f"build with {w} workers vs 1: {speed:.2f}x (target >= 1.7x with 2): "
                 f"{'PASS' if speed >= 1.7 else 'MISS'}; reference: pure-CPU jobs in {w} "
                 f"processes vs 1, measured in this run: {result['cpu_reference']:.2f}x")
    lines.append(f"loader: {min(rates):.0f} samples/s at {result['image_size']} px, the slower "
                 f"of {first['frames']} and {big['frames']} frames ({rates[0]:.0f} / "
                 f"{rates[1]:.0f}; target >= 1000): {'PASS' if min(rates) >= 1000 else 'MISS'}")
    decodes = first["load"]["decodes"] + big["load"]["decodes"]
    lines.append(f"DICOM decodes when reading the built cache: {decodes} (target 0): "
                 f"{'PASS' if decodes == 0 else 'MISS'}")
    return lines
