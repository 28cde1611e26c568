"""`bench run` / `bench eval`: train once per source, evaluate every requested target.

A run is identified by a hash of (method, source data, profile, resolved hparams, seed, code
version). A finished training is reused when only new targets are asked for; a training that
died resumes from its last checkpoint. An inference-time variant (a method whose class sets
`shares_training_with`) takes its checkpoints from that method's run, training it if needed.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import inspect
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark import numerics
from benchmark.accel import accelerate
from benchmark.aggregate import summarize
from benchmark.collect import target_label
from benchmark.config import (
    Profile,
    seed_hash,
)
from benchmark.errors import UserError
from benchmark.evaluate import evaluate
from benchmark.paths import default_cache_dir, default_results_dir
from benchmark.progress import NullReporter, Reporter
from benchmark.registry import MethodInfo, get_method, resolve_domain, stand_in_note
from benchmark.store import ResultsStore, RunRecord, now_iso
from benchmark.trainer import load_checkpoint, seed_everything, train
from benchmark.validate import resolve_config
from datasets.domain import Domain, DomainData
from datasets.splits import make_split, split_hash
from methods.networks.formula_weights import (
    FORMULA,
    rebuild_command,
    using_cache,
    weights_identity,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a user error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec not in {"cpu", "cuda"} and not spec.startswith("cuda:"):
        raise UserError(f"--device '{spec}': expected auto, cpu or cuda")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available on this machine")
    return torch.device(spec)


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _methods_imports(path: Path, seen: set[Path]) -> None:
    """Add `path` and, recursively, every `methods.*` module it imports to `seen`."""
    if path in seen or not path.is_file():
        return
    seen.add(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name == "methods" or name.startswith("methods."):
                rel = Path(*name.split("."))
                for cand in (REPO_ROOT / rel.with_suffix(".py"), REPO_ROOT / rel / "__init__.py"):
                    _methods_imports(cand, seen)


def code_version(info: MethodInfo) -> str:
    """Package version + a hash of the code that determines a run's numbers: the harness
    files below, the method's module and every `methods.*` module it imports (transitively)."""
    files: set[Path] = set()
    _methods_imports(Path(inspect.getsourcefile(info.cls) or __file__).resolve(), files)
    here = Path(__file__).resolve().parent
    files |= {here / n for n in ("trainer.py", "config.py", "metrics.py", "evaluate.py",
                                 "runner.py")}
    methods_dir = REPO_ROOT / "methods"
    files |= {methods_dir / "base.py", methods_dir / "losses.py"}
    files = {f for f in files if f.is_file()}
    return f"{info.provider.version}+{_hash_files(sorted(files))}"


def git_commit() -> str | None:
    """The checkout's commit (with '-dirty' when modified), or None outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
                               ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("calcbench", "torch", "numpy", "scipy", "timm", "segmentation-models-pytorch",
                "medpy", "pydicom"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


@dataclass
class RunRequest:
    """Everything `bench run` was asked for."""

    method: str
    source: str
    targets: list[str] = field(default_factory=list)
    profile: str = "quick"
    seed: int = 0
    device: str = "auto"
    sets: list[str] = field(default_factory=list)
    results_dir: Path = field(default_factory=default_results_dir)
    cache_dir: Path = field(default_factory=default_cache_dir)
    trial: int = 0  # hparam trial: 0 = the profile defaults, n > 0 = the n-th random draw
    checkpoint_every: int | None = None  # also save last.pt every N steps (None: per epoch)
    compile: bool = False  # torch.compile the networks (opt-in; not part of the run id)
    eval_last: bool = False  # also evaluate last.pt (opt-in: it doubles evaluation time)
    command: list[str] | None = None  # the user's command for run.json (None: this sys.argv)


@dataclass
class RunPlan:
    """What a request resolves to before anything runs: method, budget, hparams and run id."""

    info: MethodInfo
    profile: Profile
    hparams: dict[str, Any]
    version: str
    domains: dict[str, Domain]
    run_id: str


class RunBusyError(UserError):
    """The run is being trained by another process right now (sweeps defer such jobs)."""


@dataclass
class RunOutcome:
    """The run id, whether training was reused, and one summary row per evaluated domain."""

    run_id: str
    reused: bool
    summary: pd.DataFrame
    run_dir: Path


class DataCache:
    """Loads each domain once per process, with its split, at the profile's image size."""

    def __init__(self, profile: Profile, cache_dir: Path, reporter: Reporter) -> None:
        self.profile = profile
        self.cache_dir = cache_dir
        self.reporter = reporter
        self._loaded: dict[str, tuple[DomainData, dict[str, np.ndarray]]] = {}

    def get(self, spec: str, domain: Domain) -> tuple[DomainData, dict[str, np.ndarray]]:
        if spec not in self._loaded:
            data = domain.load(self.profile.image_size, self.cache_dir, self.reporter)
            split = make_split(data, domain.fingerprint(), self.profile.split_fractions,
                               self.profile.split_seed, self.cache_dir)
            if self.profile.max_images:
                split = {k: v[: self.profile.max_images.get(k, len(v))]
                         for k, v in split.items()}
            self._loaded[spec] = (data, split)
        return self._loaded[spec]


def _domains(specs: list[str], reporter: Reporter) -> dict[str, Domain]:
    """Resolve every domain up front so a bad target fails before any training."""
    out: dict[str, Domain] = {}
    for spec in specs:
        if spec in out:
            continue
        domain = resolve_domain(spec)
        note = stand_in_note(spec, domain)
        if note:
            reporter.log(f"[yellow]{note}[/yellow]")
        out[spec] = domain
    return out


def target_key(spec: str, domain: Domain, checkpoint: str = "best") -> str:
    """Per-case rows are keyed by the target name and its data fingerprint (and '#last' for
    the rows of the last-epoch checkpoint)."""
    return f"{spec}@{domain.fingerprint()}" + ("" if checkpoint == "best" else f"#{checkpoint}")


@contextlib.contextmanager
def training_lock(folder: Path) -> Iterator[None]:
    """Refuse to train a run that another process is training right now."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".train.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(f"run '{folder.name}' is being trained by another process"
                               ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def plan_run(req: RunRequest, reporter: Reporter) -> RunPlan:
    """Resolve method, profile, hparams (trial draw + --set) and domains into the run id.

    The id hashes (method, source data, profile, hparams, seed, code version), so sweeps use
    this same function to name their jobs.
    """
    info = get_method(req.method)
    with using_cache(req.cache_dir):
        profile, hparams = resolve_config(info.cls, req.profile, req.sets, req.trial)
        weights = formula_identity(info.cls, hparams, profile)
    domains = _domains([req.source, *req.targets], reporter)
    source = domains[req.source]
    version = code_version(info)
    identity = {
        "method": info.name, "source": req.source, "source_fingerprint": source.fingerprint(),
        "profile": profile.to_dict(), "hparams": hparams, "seed": req.seed,
        "code_version": version,
    }
    if weights is not None:  # other formula weights, another run (absent otherwise: old ids hold)
        identity["formula_weights_sha256"] = weights
    # The readable prefix is cut (long TOML paths), never the hash that makes the id unique.
    prefix = f"{info.name}-{req.source}-{profile.name}-s{req.seed}"[:70]
    run_id = f"{prefix}-{seed_hash(identity):08x}"
    run_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return RunPlan(info, profile, hparams, version, domains, run_id)


def formula_identity(cls: type, hparams: dict[str, Any], profile: Profile) -> str | None:
    """The SHA-256 of the formula weights a run starts from (`pretrained=formula`), else None."""
    if str(hparams.get("pretrained") or "").strip().lower() != FORMULA:
        return None
    return weights_identity(cls, hparams, profile.image_size,
                            rebuild_command(cls.name, profile.image_size))


def weights_from_checkpoint(hparams: dict[str, Any]) -> dict[str, Any]:
    """`hparams` for rebuilding a trained method whose checkpoint is loaded next: its start
    weights (ImageNet, formula) are overwritten anyway, so none are read or required."""
    return {**hparams, "pretrained": "none"} if "pretrained" in hparams else hparams


def run(req: RunRequest, reporter: Reporter) -> RunOutcome:
    """Train (or reuse) `req.method` on `req.source` and evaluate the source and each target."""
    with using_cache(req.cache_dir):
        return _run(req, reporter)


def _run(req: RunRequest, reporter: Reporter) -> RunOutcome:
    plan = plan_run(req, reporter)
    info, profile, hparams, version, domains, run_id = (
        plan.info, plan.profile, plan.hparams, plan.version, plan.domains, plan.run_id)
    device = resolve_device(req.device)
    store = ResultsStore(req.results_dir)
    store.ensure_writable()
    source = domains[req.source]
    for spec, dom in domains.items():
        if dom.kind != source.kind:
            reporter.log(f"[yellow]note: target '{spec}' is {dom.kind} while the source is "
                         f"{source.kind}; these results are kept apart from the leaderboards "
                         "[/yellow]")
    folder = store.run_dir(run_id)
    cache = DataCache(profile, req.cache_dir, reporter)
    data, split = cache.get(req.source, source)

    # Seed before building the networks: their initialisation is part of the run's identity.
    seed_everything(seed_hash(req.seed, "init"))
    method = info.cls(hparams, device, profile.image_size, amp=device.type == "cuda")
    accelerate(method, device, req.compile)  # CUDA-only speed-ups, and the opt-in compile
    existing = _existing(store, run_id)
    reused = existing is not None and existing.trained and (folder / "checkpoints" /
                                                            "best.pt").is_file()
    if reused:
        reporter.log(f"reusing the finished training of run {run_id}")
    elif shared_training_request(req) is not None:
        _take_shared_training(store, plan, req, source, split, method, reporter)
    else:
        with training_lock(folder):
            _train_run(store, run_id, folder, info, req, profile, hparams, version, source,
                       data, split, method, device, reporter)
    method.load_state_dict(load_checkpoint(folder / "checkpoints" / "best.pt")["method"])

    evaluated = {req.source: (source, data, split)}
    for spec in req.targets:
        if spec not in evaluated:
            tdata, tsplit = cache.get(spec, domains[spec])
            evaluated[spec] = (domains[spec], tdata, tsplit)
    _evaluate_checkpoints(store, run_id, method, evaluated, profile, device, reporter,
                          skip_done=True, eval_last=req.eval_last)
    summary = summary_table(store, run_id, [target_key(s, d) for s, (d, _, _) in
                                            evaluated.items()])
    return RunOutcome(run_id, reused, summary, folder)


def _existing(store: ResultsStore, run_id: str) -> RunRecord | None:
    if not store.run_dir(run_id).is_dir() or not (store.run_dir(run_id) / "run.json").is_file():
        return None
    return store.read(run_id)


def _run_info(run_id: str, info: MethodInfo, req: RunRequest, profile: Profile,
              hparams: dict[str, Any], version: str, source: Domain,
              split: dict[str, np.ndarray], method: Any, device: torch.device) -> dict[str, Any]:
    """The provenance block of run.json: what produced this run's numbers."""
    return {
        "run_id": run_id, "method": info.name, "method_display": info.display_name,
        "group": info.group, "citation": info.citation, "provider": str(info.provider),
        "source": req.source, "source_name": source.name, "data_kind": source.kind,
        "overrides": list(req.sets),  # the configuration: a non-default one is its own row
        "data_fingerprints": {req.source: source.fingerprint()},
        "source_describe": source.describe(),
        "profile": profile.name, "profile_settings": profile.to_dict(), "hparams": hparams,
        "seed": req.seed, "hparam_trial": req.trial, "device": str(device),
        # CPU results depend on it (summation order), so it is recorded beside the seed
        "torch_threads": torch.get_num_threads(),
        "numerics": numerics.describe(),  # the SIMD kernels in effect, and CALCBENCH_PORTABLE
        "code_version": version,
        "git_commit": git_commit(), "versions": versions(), "created": now_iso(),
        "split_hash": split_hash(split), "split_sizes": {k: len(v) for k, v in split.items()},
        "num_parameters": method.num_parameters(),
        "init": getattr(method, "init", "scratch"),  # scratch | imagenet (timm ...) | file ...
        "compile": req.compile,
        # a sweep worker passes the `bench sweep` command, not its own worker argv
        "command": list(req.command) if req.command else sys.argv,
    }


def _train_run(store: ResultsStore, run_id: str, folder: Path, info: MethodInfo,
               req: RunRequest, profile: Profile, hparams: dict[str, Any], version: str,
               source: Domain, data: DomainData, split: dict[str, np.ndarray],
               method: Any, device: torch.device, reporter: Reporter) -> None:
    """Write run.json, train with status updates, and record the outcome."""
    run_info = _run_info(run_id, info, req, profile, hparams, version, source, split, method,
                         device)
    store.write_info(run_id, run_info)
    store.update_status(run_id, state="training", error=None)
    reporter.log(f"training {info.display_name} on '{req.source}' ({len(split['train'])} "
                 f"train / {len(split['val'])} val images, {profile.epochs} epochs, "
                 f"{device}) -> run {run_id}")
    seed_everything(req.seed)
    try:
        result = train(method, data, split["train"], split["val"], profile, req.seed,
                       folder / "checkpoints", reporter, device,
                       checkpoint_every=req.checkpoint_every)
    except (Exception, KeyboardInterrupt) as exc:
        store.update_status(run_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run_info["timings"] = {"train_seconds": round(result.seconds, 2)}
    run_info["training"] = {"best_epoch": result.best_epoch,
                            "best_val_dsc": result.best_val_dsc, "history": result.history,
                            # an all-empty prediction's validation DSC: "not learned" below it
                            "all_background_val_dsc": all_background_dsc(data, split["val"])}
    store.write_info(run_id, run_info)
    store.update_status(run_id, state="trained", error=None)


def all_background_dsc(data: DomainData, index: np.ndarray) -> float:
    """Mean per-image DSC of an all-empty prediction on `index` (both-empty counts 1): the
    share of images without any reference pixel, the score a model that never learned gets."""
    if len(index) == 0:
        return float("nan")
    return float(np.mean([not data.masks[int(i)].any() for i in index]))


def shared_training_request(req: RunRequest) -> RunRequest | None:
    """The request whose training `req.method` reuses (None when it trains itself).

    A variant (`shares_training_with`) reuses its owner's training. `--set` values of hparams
    only the variant declares (inference-only ones a plugin variant may add) are dropped,
    since the owner would reject them, and so are the inference-only hparams either method
    declares (`Method.inference_hparams`): they never change the owner's weights, so they
    never enter its run id. Profile overrides and shared training hparams are kept, so both
    runs train alike. A method run with one of its own inference-only hparams set reuses, the
    same way, the training of the same request without them.
    """
    cls = get_method(req.method).cls
    owner = cls.shares_training_with
    if not owner:
        sets = [s for s in req.sets if s.partition("=")[0].strip() not in cls.inference_hparams]
        return (dataclasses.replace(req, targets=[], sets=sets) if len(sets) < len(req.sets)
                else None)
    owner_cls = get_method(owner).cls
    only_mine = ({h.name for h in cls.hparam_space()}
                 - {h.name for h in owner_cls.hparam_space()})
    only_mine |= set(cls.inference_hparams) | set(owner_cls.inference_hparams)
    sets = [s for s in req.sets if s.partition("=")[0].strip() not in only_mine]
    return dataclasses.replace(req, method=owner, targets=[], sets=sets)


def _take_shared_training(store: ResultsStore, plan: RunPlan, req: RunRequest, source: Domain,
                          split: dict[str, np.ndarray], method: Any,
                          reporter: Reporter) -> None:
    """Give the variant run `plan.run_id` the checkpoints of the run it shares training with.

    The other run is trained first when needed (under its own training lock, so concurrent
    sweep jobs never train it twice); its checkpoints are hard-linked (copied where links are
    impossible) and its training record is repeated, marked `trained_by`. Model selection is
    therefore the owner's: best.pt is the epoch with the owner's best validation DSC.
    """
    owner_req = shared_training_request(req)
    assert owner_req is not None
    owner_id = plan_run(owner_req, NullReporter()).run_id
    owner = _existing(store, owner_id)
    owner_dir = store.run_dir(owner_id)
    if owner is None or not owner.trained or not (owner_dir / "checkpoints" / "best.pt").is_file():
        reporter.log(f"{plan.info.display_name} evaluates the weights of "
                     f"{get_method(owner_req.method).display_name}: training run {owner_id}")
        run(owner_req, reporter)
        owner = store.read(owner_id)
    else:
        reporter.log(f"{plan.info.display_name} evaluates the weights of finished run "
                     f"{owner_id}")
    folder = store.run_dir(plan.run_id)
    with training_lock(folder):
        ckpts = folder / "checkpoints"
        ckpts.mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "last.pt"):
            src = owner_dir / "checkpoints" / name
            if not src.is_file():
                continue
            tmp = ckpts / f".{name}.link.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:  # another filesystem or no link support
                shutil.copy2(src, tmp)
            os.replace(tmp, ckpts / name)
        run_info = _run_info(plan.run_id, plan.info, req, plan.profile, plan.hparams,
                             plan.version, source, split, method, torch.device(
                                 owner.info.get("device", "cpu")))
        run_info["trained_by"] = owner_id
        run_info["trained_by_method"] = get_method(owner_req.method).display_name
        run_info["torch_threads"] = owner.info.get("torch_threads")
        for key in ("timings", "training"):
            if key in owner.info:
                run_info[key] = owner.info[key]
        store.write_info(plan.run_id, run_info)
        store.update_status(plan.run_id, state="trained", error=None, trained_by=owner_id)


def _evaluate_checkpoints(store: ResultsStore, run_id: str, method: Any,
                          evaluated: dict[str, tuple[Domain, DomainData, dict[str, np.ndarray]]],
                          profile: Profile, device: torch.device, reporter: Reporter,
                          skip_done: bool, eval_last: bool = False) -> None:
    """Evaluate every domain with best.pt (source-val selection; `method` holds it already),
    then, with `eval_last`, with last.pt when it exists (the 'last' model-selection strategy),
    best restored. `eval_last` is opt-in: it doubles the evaluation time of every run."""
    folder = store.run_dir(run_id) / "checkpoints"
    status = store.read(run_id).status
    same_weights = False  # last.pt holds best.pt's weights: the best epoch was the last one
    for checkpoint in ("best", "last") if eval_last else ("best",):
        if checkpoint == "last":
            if not (folder / "last.pt").is_file():
                continue
            last = load_checkpoint(folder / "last.pt")
            same_weights = (last.get("step") is None
                            and int(last["best_epoch"]) == int(last["epoch"]))
            if not same_weights:
                method.load_state_dict(last["method"])
        for spec, (dom, tdata, tsplit) in evaluated.items():
            key = target_key(spec, dom, checkpoint)
            if skip_done and status.get("targets", {}).get(key, {}).get("state") == "done":
                continue
            if same_weights:
                _copy_best_rows(store, run_id, spec, dom)
                continue
            _evaluate_target(store, run_id, method, spec, dom, tdata, tsplit, profile, device,
                             reporter, checkpoint)
    if eval_last and (folder / "last.pt").is_file() and not same_weights:
        method.load_state_dict(load_checkpoint(folder / "best.pt")["method"])


def _copy_best_rows(store: ResultsStore, run_id: str, spec: str, dom: Domain) -> None:
    """Store best.pt's rows of `spec` as the last checkpoint's too: with identical weights a
    second evaluation would only repeat the same predictions (and double evaluation time)."""
    best_key, last_key = target_key(spec, dom), target_key(spec, dom, "last")
    cases = store.cases(run_id)
    cases = cases[cases["target_key"] == best_key].drop(columns="target_key")
    candidates = store.candidates(run_id)
    if len(candidates):
        candidates = candidates[candidates["target_key"] == best_key].drop(
            columns="target_key")
    store.add_cases(run_id, last_key, cases.assign(checkpoint="last"))
    store.add_candidates(run_id, last_key, candidates.assign(checkpoint="last"))
    store.update_status(run_id, targets={last_key: {
        "state": "done", "n_cases": len(cases), "seconds": 0.0, "finished": now_iso(),
        "copied_from": "best (same weights)"}})


def _evaluate_target(store: ResultsStore, run_id: str, method: Any, spec: str, dom: Domain,
                     data: DomainData, split: dict[str, np.ndarray], profile: Profile,
                     device: torch.device, reporter: Reporter, checkpoint: str = "best") -> None:
    """Evaluate one domain's test split and store its rows, FROC candidates and status."""
    key = target_key(spec, dom, checkpoint)
    t0 = time.monotonic()
    candidates: list[pd.DataFrame] = []
    try:
        cases = evaluate(method, data, split["test"], profile, device, reporter,
                         spec if checkpoint == "best" else f"{spec} ({checkpoint})", candidates)
    except (Exception, KeyboardInterrupt) as exc:
        store.update_status(run_id, targets={key: {"state": "failed",
                                                   "error": f"{type(exc).__name__}: {exc}"}})
        raise
    record = store.read(run_id).info
    cases = cases.assign(
        run_id=run_id, method=record["method"], method_display=record["method_display"],
        group=record["group"], source=record["source"], target=spec, target_name=dom.name,
        target_kind=dom.kind, target_fingerprint=dom.fingerprint(), split="test",
        checkpoint=checkpoint, profile=record["profile"], seed=record["seed"],
    )
    store.add_cases(run_id, key, cases)
    store.add_candidates(run_id, key, candidates[0].assign(
        run_id=run_id, target=spec, checkpoint=checkpoint))
    store.update_status(run_id, targets={key: {
        "state": "done", "n_cases": len(cases), "seconds": round(time.monotonic() - t0, 2),
        "finished": now_iso()}})


def summary_table(store: ResultsStore, run_id: str, keys: list[str]) -> pd.DataFrame:
    """One row per evaluated target: mean ± std of the reported metrics."""
    cases = store.cases(run_id)
    rows = []
    for key in keys:
        sub = cases[cases["target_key"] == key] if len(cases) else cases
        if not len(sub):
            continue
        spec = str(sub["target"].iloc[0])
        name = sub["target_name"].iloc[0] if "target_name" in sub else None
        rows.append({"target": target_label(spec, name), **summarize(sub)})
    return pd.DataFrame(rows)


def eval_run(run_id: str, targets: list[str], results_dir: Path, cache_dir: Path,
             device_spec: str, reporter: Reporter, eval_last: bool = False) -> RunOutcome:
    """`bench eval`: evaluate a stored, trained run on more target domains."""
    store = ResultsStore(results_dir)
    record = store.read(run_id)
    store.cases(run_id)  # a damaged results table fails here, before any evaluation
    if not record.trained:
        raise UserError(f"run '{run_id}' has no finished training (state: "
                        f"{record.status.get('state')}); rerun `bench run` to finish it")
    ckpt = record.path / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise UserError(f"run folder '{record.path}' is incomplete: {ckpt.name} is missing")
    info = get_method(record.info["method"])
    profile = Profile(**{**record.info["profile_settings"],
                         "split_fractions": tuple(record.info["profile_settings"]
                                                  ["split_fractions"])})
    device = resolve_device(device_spec)
    domains = _domains(targets, reporter)
    method = info.cls(weights_from_checkpoint(record.info["hparams"]), device,
                      profile.image_size, amp=device.type == "cuda")
    try:
        method.load_state_dict(load_checkpoint(ckpt)["method"])
    except (RuntimeError, KeyError, EOFError) as exc:
        raise UserError(f"checkpoint '{ckpt}' does not load: {exc}") from None
    cache = DataCache(profile, cache_dir, reporter)
    evaluated = {spec: (dom, *cache.get(spec, dom)) for spec, dom in domains.items()}
    _evaluate_checkpoints(store, run_id, method, evaluated, profile, device, reporter,
                          skip_done=False, eval_last=eval_last)
    keys = [target_key(s, d) for s, d in domains.items()]
    return RunOutcome(run_id, True, summary_table(store, run_id, keys), record.path)
