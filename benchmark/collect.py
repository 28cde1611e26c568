"""Collect stored runs for the reports: per-case rows, FROC candidates, run provenance, and
model selection (which run and which checkpoint stand for a cell) applied at collect time.

Checkpoint strategies: `source-val` (default: best.pt, chosen on the source validation split,
what the runner evaluates first), `last` (last.pt), and `oracle` (per run and target, the
checkpoint with the higher target-test DSC: an upper bound that peeks at the test set, only
ever shown in a separately labelled table). Rows stored before the `checkpoint` column existed
count as `best`.

Run selection (DomainBed's training-domain validation): runs are first split by
*configuration*, the `--set` overrides a run was started with; a non-default configuration
becomes its own row, labelled `Method [key=value, ...]`, so it never replaces the default one.
Within one configuration only the newest code version (code hash + source data fingerprint +
the networks' initialisation, run.json's `init`) is shown, so two code versions, or a run from
ImageNet weights and one from scratch, never mix in one cell. Then, per (method, source, seed), the
hyper-parameter trial with the best source-validation DSC stands for the seed (best.pt's DSC
under `source-val`, the last epoch's under `last`; under `oracle`, per target, the trial with
the best target-test DSC); a re-run of the same trial replaces the older one.

Test-set versions: a run re-evaluated after a stand-in or binding changed keeps the rows of
both versions of that test set (one `target@fingerprint` key each). Only the version evaluated
last counts, per run (status.json's `finished`), and per cell only the newest version among its
runs; a run whose rows are of an older version is listed in `left_out` (per cell) instead of
being mixed in, because image ids repeat across versions and averaging them would blend two
test sets.

"Not learned": a run whose source-validation DSC never beat the all-background score (the DSC
of an all-empty prediction on the validation split, both-empty images counting 1) is flagged.
Runs trained before that score was recorded use the source's own test split instead: the
in-domain test DSC of best.pt against the share of empty reference masks there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.errors import UserError
from benchmark.store import ResultsStore

SELECTIONS = ("source-val", "last", "oracle")
SELECTION_LABEL = {"source-val": "source-validation model selection (best.pt; per seed, the "
                                 "hyper-parameter trial with the best validation DSC)",
                   "last": "last-epoch checkpoint (last.pt; per seed, the trial with the best "
                           "last-epoch validation DSC)",
                   "oracle": "ORACLE selection on the target test set (not a valid protocol; "
                             "an upper bound only)"}
PROVENANCE_KEYS = ("run_id", "method", "source", "seed", "profile", "hparam_trial", "init",
                   "code_version", "git_commit", "created")
LEARNED_EPS = 1e-9  # a validation DSC must exceed the all-background score by more than this


@dataclass
class RunChoice:
    """How one run fared in run selection: its configuration, scores and whether it is shown."""

    label: str  # the row it belongs to: display name, plus ' [overrides]' when not default
    configuration: str  # '' for the default configuration, else 'k=v, ...'
    version: str
    trial: int
    val_dsc: float
    all_background: float
    learned: bool | None  # None: not enough recorded to tell
    shown: str = ""  # '' when the run stands for its seed, else why another run does


@dataclass
class Collected:
    """Everything the reports read from the store, after model selection."""

    cases: pd.DataFrame
    candidates: pd.DataFrame
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> run.json
    failed: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    run_methods: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    choices: dict[str, RunChoice] = field(default_factory=dict)  # run_id -> selection record
    left_out: dict[tuple[str, str, str, str, str], list[tuple[str, str]]] = field(
        default_factory=dict)
    # (data kind, profile, row, source, target) -> (run id, target spec) of each run left out
    # of that cell for an older test-set version

    def stale_lines(self, kind: str, profile: str) -> list[str]:
        """One line per run left out of a (kind, profile) table for an older test-set
        version, with the command that re-evaluates it."""
        return [f"{rid}: evaluated on an older version of '{spec}' than its cell's other runs, "
                f"so left out; `bench eval --run {rid} --target {spec}` re-evaluates it"
                for (k, p, *_), runs in self.left_out.items() if (k, p) == (kind, profile)
                for rid, spec in runs]

    def not_learned(self, run_id: str) -> bool:
        """True when the run is known not to have beaten the all-background score."""
        choice = self.choices.get(run_id)
        return choice is not None and choice.learned is False


def check_selection(selection: str) -> str:
    """Return `selection` or raise a one-line UserError naming the allowed values."""
    if selection not in SELECTIONS:
        raise UserError(f"--select '{selection}': expected one of {', '.join(SELECTIONS)}")
    return selection


def run_overrides(info: dict[str, Any]) -> list[str]:
    """The `--set key=value` overrides a run was started with (recorded since run.json has
    `overrides`; older runs: parsed from the recorded command line)."""
    if "overrides" in info:
        return [str(s) for s in info["overrides"]]
    argv = [str(a) for a in info.get("command") or []]
    out = []
    for i, arg in enumerate(argv):
        if arg == "--set" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--set="):
            out.append(arg[len("--set="):])
    return out


def configuration(info: dict[str, Any]) -> str:
    """A run's configuration label: its sorted `--set` overrides ('' = the default)."""
    pairs = sorted({s.partition("=")[0].strip() + "=" + s.partition("=")[2].strip()
                    for s in run_overrides(info)})
    return ", ".join(pairs)


def target_label(spec: str, name: Any = None) -> str:
    """A domain's table label: a TOML path is shown by its domain `name` (the file's stem
    for runs that did not record it); the path stays in provenance. Other specs as given."""
    if not str(spec).endswith(".toml"):
        return str(spec)
    if isinstance(name, str) and name:
        return name
    return Path(str(spec)).stem


def not_learned_line(info: dict[str, Any]) -> str | None:
    """The one line `bench run` prints under its table when the run never beat the
    all-background validation score (None when it did, or when nothing was recorded)."""
    training = info.get("training") or {}
    best = float(training.get("best_val_dsc", math.nan))
    background = float(training.get("all_background_val_dsc", math.nan))
    if math.isnan(best) or math.isnan(background) or best > background + LEARNED_EPS:
        return None
    return (f"NOT LEARNED: best source-validation DSC {best:.4f} never beat the all-background "
            f"score {background:.4f}; the model does no better than predicting nothing "
            "(why: docs/guide/not-learned.md)")


def collect(store: ResultsStore, selection: str = "source-val") -> Collected:
    """Read every run; keep one run per (row, source, seed) and one checkpoint's rows per
    (run, target) under `selection`."""
    check_selection(selection)
    records, problems = store.list_runs()
    out = Collected(pd.DataFrame(), pd.DataFrame(), problems=list(problems))
    frames, cand_frames = [], []
    for rec in records:
        info = rec.info
        kind, profile = info.get("data_kind", "?"), info["profile"]
        config = configuration(info)
        source = target_label(info["source"], info.get("source_name"))
        display = info.get("method_display", info["method"])
        display = f"{display} [{config}]" if config else display
        out.runs[rec.run_id] = info
        out.run_methods.setdefault((kind, profile), {})[display] = info.get("group", "plugin")
        if rec.status.get("state") == "failed":
            out.failed[(kind, profile, display, source)] = "failed"
        for key, t in rec.status.get("targets", {}).items():
            if t.get("state") == "failed":
                out.failed[(kind, profile, display, source + "->" + target_label(
                    key.split("@")[0]))] = "failed (evaluation)"
        cases = store.cases(rec.run_id)
        if len(cases):
            if "checkpoint" not in cases:
                cases["checkpoint"] = "best"
            cases["checkpoint"] = cases["checkpoint"].fillna("best")
            names = cases["target_name"] if "target_name" in cases else [None] * len(cases)
            cases["target_spec"] = cases["target"]
            cases["target"] = [target_label(str(t), n) for t, n in
                               zip(cases["target"], names, strict=True)]
            cases = newest_evaluations(cases, rec.status, "target")
            if "target_key" in cases:
                cases["evaluated"] = _finished(_evaluated_keys(cases), rec.status)
            cases["source"] = source
            out.choices[rec.run_id] = _choice(info, display, config, cases, selection)
            frames.append(cases.assign(created=info.get("created", ""), data_kind=kind,
                                       run_id=rec.run_id, method_display=display))
        cands = store.candidates(rec.run_id)
        if len(cands):
            if "target" in cands and len(cases):
                labels = dict(zip(cases["target_spec"], cases["target"], strict=False))
                cands["target"] = [labels.get(t, target_label(str(t))) for t in cands["target"]]
            cand_frames.append(cands.assign(run_id=rec.run_id))
    cases = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cands = pd.concat(cand_frames, ignore_index=True) if cand_frames else pd.DataFrame()
    if len(cases):
        cases = _select(cases, selection)
        cases = _select_runs(cases, out.choices, selection)
        cases = _one_test_version(cases, out)
    if len(cands) and len(cases):
        if "checkpoint" not in cands:
            cands["checkpoint"] = "best"
        kept = cases[["run_id", "target", "checkpoint"]].drop_duplicates()
        cands = cands.merge(kept, on=["run_id", "target", "checkpoint"])
    out.cases, out.candidates = cases, cands
    return out


def _evaluated_keys(cases: pd.DataFrame) -> pd.Series:
    """status.json's key of each row's evaluation: `target@fingerprint`, `#last` for last.pt."""
    suffix = cases["checkpoint"].map(lambda c: "#last" if c == "last" else "")
    return cases["target_key"].astype(str) + suffix


def _finished(keys: pd.Series, status: dict[str, Any]) -> pd.Series:
    """When each evaluation key finished (status.json; '' when not recorded)."""
    done = status.get("targets", {})
    return keys.map(lambda k: str(done.get(k, {}).get("finished", "")))


def newest_evaluations(cases: pd.DataFrame, status: dict[str, Any], by: str) -> pd.DataFrame:
    """One run's rows, keeping per (`by` label, checkpoint) only the test-set version it was
    evaluated on last (status.json's `finished`; ties: the rows written last)."""
    if "target_key" not in cases or not len(cases):
        return cases
    if "checkpoint" not in cases:
        cases = cases.assign(checkpoint="best")
    keys = _evaluated_keys(cases)
    if keys.nunique() == cases[[by, "checkpoint"]].drop_duplicates().shape[0]:
        return cases  # one version per target and checkpoint: the common case
    order = {k: i for i, k in enumerate(dict.fromkeys(keys))}  # newer rows are appended
    rank = pd.DataFrame({"label": cases[by].astype(str), "ckpt": cases["checkpoint"],
                         "key": keys, "finished": _finished(keys, status),
                         "order": keys.map(order)}).drop_duplicates("key")
    newest = rank.sort_values(["finished", "order"]).drop_duplicates(["label", "ckpt"],
                                                                      keep="last")
    return cases[keys.isin(set(newest["key"]))]


def _one_test_version(cases: pd.DataFrame, out: Collected) -> pd.DataFrame:
    """Per cell, keep the runs evaluated on the test-set version evaluated last; name the
    others in `out.left_out` and in their `shown`."""
    if "target_key" not in cases or not len(cases):
        return cases
    version = (cases["target_fingerprint"] if "target_fingerprint" in cases
               else cases["target_key"]).astype(str)
    cell = ["data_kind", "method_display", "source", "profile", "target"]
    keep = pd.Series(True, index=cases.index)
    mixed = version.groupby([cases[c] for c in cell]).transform("nunique") > 1
    if not mixed.any():
        return cases  # every cell on one version: the common case, no per-cell loop
    for (kind, row, source, profile, target), idx in cases[mixed].groupby(cell).groups.items():
        latest = cases.loc[idx, "evaluated"].groupby(version.loc[idx]).max()
        old = idx[version.loc[idx] != latest.sort_values(kind="stable").index[-1]]
        keep.loc[old] = False
        for rid, spec in cases.loc[old, ["run_id", "target_spec"]].drop_duplicates().values:
            out.left_out.setdefault((str(kind), str(profile), str(row), str(source),
                                     str(target)), []).append((str(rid), str(spec)))
            if rid in out.choices:  # the provenance table says it too, per left-out target
                out.choices[rid].shown = (out.choices[rid].shown or "yes") + (
                    f"; not for '{spec}' (an older version of its test set)")
    return cases[keep]


def _choice(info: dict[str, Any], label: str, config: str, cases: pd.DataFrame,
            selection: str) -> RunChoice:
    """A run's selection record: validation score, all-background score, learned or not."""
    training = info.get("training") or {}
    history = training.get("history") or []
    if selection == "last" and history:
        val = float(history[-1].get("val_dsc", math.nan))
    else:
        val = float(training.get("best_val_dsc", math.nan))
    best_val = float(training.get("best_val_dsc", math.nan))
    background = float(training.get("all_background_val_dsc", math.nan))
    learned: bool | None = None
    if not math.isnan(background) and not math.isnan(best_val):
        learned = best_val > background + LEARNED_EPS
    else:  # older runs: the source's own test split stands in for the validation split
        own = cases[(cases["target_spec"] == str(info["source"]))
                    & (cases["checkpoint"] == "best")]
        if len(own) and {"TP", "FN", "DSC"} <= set(own.columns):
            background = float(((own["TP"] + own["FN"]) == 0).mean())
            learned = float(own["DSC"].mean()) > background + LEARNED_EPS
    fingerprint = (info.get("data_fingerprints") or {}).get(info["source"], "")
    # runs from before run.json recorded `init` trained from scratch or from a --set file
    version = f"{info.get('code_version', '')}|{fingerprint}|{info.get('init', 'scratch')}"
    return RunChoice(label, config, version, int(info.get("hparam_trial", 0) or 0), val,
                     background, learned)


def _select(cases: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Keep one checkpoint's rows per (run, target)."""
    if selection == "source-val":
        return cases[cases["checkpoint"] == "best"]
    if selection == "last":
        last = cases[cases["checkpoint"] == "last"]
        if len(cases) and not len(last):
            raise UserError("--select last: no run was evaluated with its last-epoch checkpoint "
                            "(opt-in); rerun with `bench run ... --eval-last`, `bench sweep ... "
                            "--eval-last` or `bench eval --run ID --target ... --eval-last`")
        return last
    dsc = cases.groupby(["run_id", "target", "checkpoint"])["DSC"].mean().reset_index()
    dsc = dsc.sort_values(["run_id", "target", "DSC", "checkpoint"],
                          ascending=[True, True, False, True])
    chosen = dsc.drop_duplicates(["run_id", "target"])[["run_id", "target", "checkpoint"]]
    return cases.merge(chosen, on=["run_id", "target", "checkpoint"])


def _select_runs(cases: pd.DataFrame, choices: dict[str, RunChoice], selection: str
                 ) -> pd.DataFrame:
    """Per (kind, row, source, profile): the newest code version; per seed: the best trial
    by validation DSC (a re-run of one trial: the newest). Records why a run is not shown."""
    runs = cases.drop_duplicates("run_id")[
        ["run_id", "data_kind", "method_display", "source", "profile", "seed", "created"]
    ].copy()
    runs["version"] = runs["run_id"].map(lambda r: choices[r].version)
    runs["trial"] = runs["run_id"].map(lambda r: choices[r].trial)
    runs["val"] = runs["run_id"].map(lambda r: choices[r].val_dsc).fillna(-math.inf)
    cell = ["data_kind", "method_display", "source", "profile"]
    newest_of_version = runs.groupby([*cell, "version"])["created"].transform("max")
    newest = runs.groupby(cell)["created"].transform("max")
    current = runs.loc[newest_of_version == newest, [*cell, "version"]].drop_duplicates(cell)
    runs = runs.merge(current.rename(columns={"version": "current"}), on=cell)
    for rid in runs.loc[runs["version"] != runs["current"], "run_id"]:
        choices[rid].shown = "no: an older code, data or initialisation version of this row"
    runs = runs[runs["version"] == runs["current"]]
    runs = runs.sort_values("created", ascending=False, kind="stable")
    dup = runs.duplicated([*cell, "seed", "trial"])
    for rid in runs.loc[dup, "run_id"]:
        choices[rid].shown = "no: a newer run of the same trial"
    runs = runs[~dup]
    if selection == "oracle":  # per target, the trial with the best target-test DSC
        kept = cases[cases["run_id"].isin(runs["run_id"])]
        dsc = kept.groupby(["run_id", "target"])["DSC"].mean().rename("tdsc").reset_index()
        dsc = dsc.merge(runs, on="run_id").sort_values(["tdsc", "created"],
                                                       ascending=False, kind="stable")
        chosen = dsc.drop_duplicates([*cell, "seed", "target"])[["run_id", "target"]]
        return kept.merge(chosen, on=["run_id", "target"]).reset_index(drop=True)
    runs = runs.sort_values(["val", "created"], ascending=False, kind="stable")
    best = runs.drop_duplicates([*cell, "seed"])
    winner = {tuple(r[c] for c in [*cell, "seed"]): (r["run_id"], r["trial"])
              for r in best.to_dict("records")}
    for r in runs.to_dict("records"):
        rid, trial = winner[tuple(r[c] for c in [*cell, "seed"])]
        if rid != r["run_id"]:
            choices[r["run_id"]].shown = (f"no: trial {trial} has the better validation DSC "
                                          f"(run {rid})")
    return cases[cases["run_id"].isin(best["run_id"])].reset_index(drop=True)


def provenance(runs: dict[str, dict[str, Any]], run_ids: list[str],
               choices: dict[str, RunChoice] | None = None) -> list[dict[str, Any]]:
    """One record per run id: what produced it (code version, commit, data fingerprints,
    configuration) and how run selection treated it (validation DSC, learned, shown)."""
    out = []
    for rid in run_ids:
        info = runs.get(rid, {})
        rec = {k: info.get(k, "") for k in PROVENANCE_KEYS}
        rec["run_id"] = rid
        rec["init"] = info.get("init") or "not recorded"
        rec["configuration"] = configuration(info) or "default"
        rec["data_fingerprints"] = ", ".join(f"{k}={v}" for k, v in sorted(
            (info.get("data_fingerprints") or {}).items()))
        choice = (choices or {}).get(rid)
        if choice is not None:
            rec["val_dsc"] = choice.val_dsc
            rec["all_background_val_dsc"] = choice.all_background
            rec["learned"] = {True: "yes", False: "NOT LEARNED", None: "unknown"}[
                choice.learned]
            rec["shown"] = choice.shown or "yes"
        out.append(rec)
    return out
