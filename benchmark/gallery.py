"""The case gallery (`bench show cases`, `bench leaderboard --format html --cases`): a grid of
test images (a row per case) with the reference and each method's prediction drawn as
contours, like Fig. 5 of the MLN-net paper.

Cases are chosen from the per-case rows the runs already stored (their DSC is what every cell
shows), by the reference method's DSC (worst / median / best) or by how much the methods
disagree; ties are broken by image id, so the same call always draws the same cases.
Predictions are regenerated from each run's best.pt (the leaderboard's model selection):
nothing new is stored per run. Images whose reference mask is empty are no candidates unless
`include_empty` is set: their DSC is trivially 0 or 100.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from benchmark.errors import UserError, closest
from benchmark.io import atomic_write
from benchmark.progress import Reporter
from benchmark.store import ResultsStore

RULES = ("worst", "median", "best", "disagree")
DEFAULT_CASES = "worst:3,median:3,best:3"
MAX_CASES = 60  # rows of one figure; more is unreadable (and a typo such as worst:300)
REFERENCE_COLOUR = "#00d5ff"  # cyan: the reference mask's contour
PREDICTION_COLOUR = "#ff3da0"  # magenta: a method's thresholded prediction's contour
DSC_TOLERANCE = 0.01  # percentage points between the stored and the recomputed DSC

# figure geometry in inches (fixed margins, no tight bbox: the PNG's size follows the grid)
CELL_IN = 2.0
LEFT_IN = 0.45
TOP_IN = 0.95
BOTTOM_IN = 0.1
DPI = 100


@dataclass(frozen=True)
class CaseRule:
    """One `--cases` term: `rule:k` (e.g. worst:3)."""

    rule: str
    k: int

    def __str__(self) -> str:
        """The term as the user writes it."""
        return f"{self.rule}:{self.k}"


@dataclass
class GalleryEntry:
    """One method column: its key in `dsc_labels`, its header and the run it comes from."""

    key: str
    label: str
    run_id: str


@dataclass
class GalleryLayout:
    """What was drawn: the case rows, the column headers, each method cell's DSC label
    (percent, from the stored per-case rows), the PNG path and the figure title."""

    rows: list[str]
    columns: list[str]
    dsc_labels: dict[tuple[str, str], float]
    path: Path
    title: str
    row_rules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class GalleryRequest:
    """Everything `bench show cases` was asked for."""

    source: str
    target: str
    methods: list[str]
    results_dir: Path
    cache_dir: Path
    seed: int = 0
    profile: str = "quick"
    sets: list[str] = field(default_factory=list)
    cases: str | None = None
    image_ids: list[str] | None = None
    reference: str | None = None
    include_empty: bool = False
    out: Path | None = None
    device: str = "auto"


def parse_cases(spec: str) -> list[CaseRule]:
    """'worst:3,median:3,best:3' -> rules; a malformed term, an unknown rule, a rule given
    twice or too many cases in all is a one-line UserError."""
    rules: list[CaseRule] = []
    for term in (t.strip() for t in spec.split(",")):
        name, sep, count = term.partition(":")
        name = name.strip().lower()
        if not term or not sep or name not in RULES:
            hint = closest(name, RULES) if name else ""
            raise UserError(f"--cases '{spec}': term '{term}' is not RULE:K with RULE one of "
                            f"{', '.join(RULES)}{hint} (e.g. {DEFAULT_CASES} or disagree:6)")
        try:
            k = int(count)
        except ValueError:
            k = 0
        if k < 1:
            raise UserError(f"--cases '{spec}': '{term}' needs a whole number of cases >= 1 "
                            "after the colon")
        if any(r.rule == name for r in rules):
            raise UserError(f"--cases '{spec}': rule '{name}' is given twice")
        rules.append(CaseRule(name, k))
    if sum(r.k for r in rules) > MAX_CASES:
        raise UserError(f"--cases '{spec}': {sum(r.k for r in rules)} cases in all; at most "
                        f"{MAX_CASES} fit one figure")
    return rules


def _ordered(values: pd.Series, rule: str) -> list[str]:
    """Candidate image ids in the order `rule` picks them (ties: by image id)."""
    items = [(str(i), float(v)) for i, v in values.items() if not math.isnan(float(v))]
    if rule == "worst":
        return [i for i, _ in sorted(items, key=lambda iv: (iv[1], iv[0]))]
    if rule == "best":
        return [i for i, _ in sorted(items, key=lambda iv: (-iv[1], iv[0]))]
    median = float(np.median([v for _, v in items])) if items else 0.0
    return [i for i, _ in sorted(items, key=lambda iv: (abs(iv[1] - median), iv[0]))]


def select_cases(dsc: pd.DataFrame, rules: list[CaseRule], reference: str,
                 candidates: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(image ids, the rule of each, notes) chosen from `dsc` (index: image id, a column of
    per-case DSC per method) among `candidates`: worst/median/best by the `reference` column,
    disagree by the spread (max - min) across the columns. No image is chosen twice; a rule
    with fewer candidates left than asked takes what exists and says so in a note."""
    pool = dsc[dsc.index.isin(candidates)]
    chosen: list[str] = []
    why: list[str] = []
    notes: list[str] = []
    for r in rules:
        if r.rule == "disagree":
            if dsc.shape[1] < 2:
                raise UserError("--cases disagree:K compares methods: give at least two in "
                                "--methods")
            spread = pool.max(axis=1) - pool.min(axis=1)
            order = _ordered(spread, "best")  # the largest spread first
        else:
            order = _ordered(pool[reference], r.rule)
        picked = [i for i in order if i not in chosen][:r.k]
        if len(picked) < r.k:
            notes.append(f"{r}: only {len(picked)} of the {len(pool)} candidate images "
                         "left (not chosen yet; a non-empty reference unless --include-empty);"
                         f" showing {len(picked)}")
        chosen += picked
        why += [r.rule] * len(picked)
    return chosen, why, notes


def explicit_cases(dsc: pd.DataFrame, image_ids: list[str]) -> list[str]:
    """The `--image-ids` in the order given (duplicates dropped); an id without per-case rows
    in every run is a one-line UserError with the closest known id."""
    known = [str(i) for i in dsc.index]
    out: list[str] = []
    for i in image_ids:
        if i not in dsc.index:
            raise UserError(f"--image-ids: no test image '{i}' with per-case rows in every "
                            f"run{closest(i, known)} ({len(known)} test images)")
        if i not in out:
            out.append(i)
    if len(out) > MAX_CASES:
        raise UserError(f"--image-ids: {len(out)} images; at most {MAX_CASES} fit one figure")
    return out


def case_rows(store: ResultsStore, run_id: str, target: str, domain: Any) -> pd.DataFrame:
    """A run's stored best.pt per-case rows on `target` for its current test set, indexed by
    image id (a one-line UserError, with the command that fixes it, when there are none)."""
    from benchmark.runner import target_key

    cases = store.cases(run_id)
    fix = f"`bench eval --run {run_id} --target {target}`"
    if not len(cases) or "target" not in cases:
        raise UserError(f"run '{run_id}' has no per-case rows yet; {fix} evaluates it")
    ckpt = cases["checkpoint"].fillna("best") if "checkpoint" in cases else "best"
    rows = cases[(cases["target"].astype(str) == target) & (ckpt == "best")]
    if not len(rows):
        raise UserError(f"run '{run_id}' was not evaluated on '{target}'; {fix} evaluates it")
    rows = rows[rows["target_key"] == target_key(target, domain)]
    if not len(rows):
        raise UserError(f"run '{run_id}' was evaluated on an older version of '{target}' "
                        f"than the current one; {fix} re-evaluates it")
    rows = rows.assign(image_id=rows["image_id"].astype(str))
    return rows.drop_duplicates("image_id", keep="last").set_index("image_id")


def _ref_empty(rows: pd.DataFrame) -> pd.Series:
    """Per image: True when the reference mask has no pixel (from the stored rows)."""
    if "ref_empty" in rows:
        return rows["ref_empty"].astype(bool)
    return (rows["TP"] + rows["FN"]) == 0


def _rule_text(rules: list[CaseRule], ref_label: str, include_empty: bool) -> str:
    """The figure title's account of how the cases were chosen."""
    terms = ",".join(str(r) for r in rules)
    ranked = any(r.rule != "disagree" for r in rules)
    spread = any(r.rule == "disagree" for r in rules)
    by = [f"by {ref_label}'s per-case DSC"] if ranked else []
    by += ["disagree: by the spread of per-case DSC across the methods"] if spread else []
    what = "" if include_empty else "; empty references excluded"
    return f"{terms} {'; '.join(by)}; ties by image id{what}"


def figure_pixels(n_rows: int, n_cols: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of an `n_rows` x `n_cols` gallery."""
    return (round(DPI * (LEFT_IN + n_cols * CELL_IN)),
            round(DPI * (TOP_IN + n_rows * CELL_IN + BOTTOM_IN)))


def _contour(ax: Any, mask: np.ndarray, colour: str, width: float, style: str = "solid",
             alpha: float = 1.0) -> None:
    """Outline a binary mask at 0.5 (nothing for an all-equal mask: no level to draw)."""
    m = np.asarray(mask, dtype=float)
    if m.min() != m.max():
        ax.contour(m, levels=[0.5], colors=[colour], linewidths=width, linestyles=style,
                   alpha=alpha)


def _draw(path: Path, title: str, rows: list[str], row_rules: list[str], columns: list[str],
          images: dict[str, np.ndarray], refs: dict[str, np.ndarray],
          preds: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
          labels: dict[tuple[str, str], float], keys: list[str]) -> None:
    """Render the grid into a PNG (atomically): image, reference contour, and per method its
    own view of the image with its prediction contour (the reference thin and dashed)."""
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(columns)
    width, height = figure_pixels(n_rows, n_cols)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.subplots_adjust(left=LEFT_IN * DPI / width, right=1 - 0.02 * DPI / width,
                        top=1 - TOP_IN * DPI / height, bottom=BOTTOM_IN * DPI / height,
                        wspace=0.04, hspace=0.18)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    wrap = max(30, int((width / DPI) * 11))
    fig.suptitle("\n".join(textwrap.wrap(title, wrap)), fontsize=9, y=1 - 0.08 * DPI / height,
                 va="top")
    for r, image_id in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < 2:
                ax.imshow(images[image_id], cmap="gray", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
                if c == 1:
                    _contour(ax, refs[image_id], REFERENCE_COLOUR, 1.2)
                if r == 0:
                    ax.set_title(columns[c], fontsize=8)
            else:
                key = keys[c - 2]
                image, pred = preds[(image_id, key)]
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                if refs[image_id].shape == pred.shape:  # a run at another image size: no
                    _contour(ax, refs[image_id], REFERENCE_COLOUR, 0.6, "dashed", 0.8)
                _contour(ax, pred, PREDICTION_COLOUR, 1.2)
                ax.set_title(f"{columns[c]} · DSC {labels[(image_id, key)]:.2f}", fontsize=8)
        axes[r, 0].set_ylabel(f"{image_id}\n({row_rules[r]})", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)

    def write(fh: IO[bytes]) -> None:
        fh.write(buffer.getvalue())

    atomic_write(path, write)


def draw_gallery(store: ResultsStore, entries: list[GalleryEntry], target: str,
                 cache_dir: Path, out: Path, reporter: Reporter, heading: str,
                 rules: list[CaseRule] | None = None, image_ids: list[str] | None = None,
                 reference: str | None = None, include_empty: bool = False,
                 device: str = "auto") -> GalleryLayout:
    """Choose the cases from the runs' stored per-case rows on `target`, regenerate their
    predictions from best.pt, draw the PNG at `out` and return its layout. `heading` (source
    -> target, seed, profile) ends the figure title; `reference` is an entry key (default:
    the first entry)."""
    from benchmark.metrics import case_metrics
    from benchmark.registry import resolve_domain
    from benchmark.runner import DataCache
    from benchmark.trained import load_trained, predict_rows

    keys = [e.key for e in entries]
    ref_key = reference or keys[0]
    if ref_key not in keys:
        raise UserError(f"--reference '{ref_key}' is not one of --methods "
                        f"({', '.join(keys)}){closest(ref_key, keys)}")
    ref_label = next(e.label for e in entries if e.key == ref_key)
    domain = resolve_domain(target)
    stored = {e.key: case_rows(store, e.run_id, target, domain) for e in entries}
    dsc = pd.concat({k: rows["DSC"].astype(float) * 100 for k, rows in stored.items()},
                    axis=1, join="inner").sort_index()
    if not len(dsc):
        raise UserError(f"the runs {', '.join(e.run_id for e in entries)} share no test image "
                        f"of '{target}' (evaluated on different test sets?)")
    notes: list[str] = []
    if image_ids is not None:
        rows = explicit_cases(dsc, image_ids)
        row_rules = ["given"] * len(rows)
        rule_text = f"image ids given ({len(rows)})"
    else:
        rules = rules or parse_cases(DEFAULT_CASES)
        empty = _ref_empty(stored[ref_key]).reindex(dsc.index).fillna(False).astype(bool)
        candidates = set(dsc.index) if include_empty else set(dsc.index[~empty.to_numpy()])
        rows, row_rules, notes = select_cases(dsc, rules, ref_key, candidates)
        rule_text = _rule_text(rules, ref_label, include_empty)
    if not rows:
        raise UserError(f"no candidate image for --cases among the {len(dsc)} test images of "
                        f"'{target}' (all references empty? --include-empty admits those)")
    for note in notes:
        reporter.log(note)
    labels = {(i, k): float(dsc.at[i, k]) for i in rows for k in keys}
    images: dict[str, np.ndarray] = {}
    refs: dict[str, np.ndarray] = {}
    preds: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    caches: dict[str, DataCache] = {}
    with reporter.task(f"case gallery {target}", total=len(entries)) as task:
        for entry in entries:
            trained = load_trained(store, entry.run_id, device)
            prof = trained.profile
            split_key = repr((prof.image_size, prof.split_fractions, prof.split_seed,
                              prof.max_images))
            cache = caches.setdefault(split_key, DataCache(prof, cache_dir, reporter))
            data, split = cache.get(target, domain)
            where = {str(data.image_ids[i]): int(i) for i in split["test"]}
            missing = [i for i in rows if i not in where]
            if missing:
                raise UserError(f"image '{missing[0]}' of run '{entry.run_id}''s per-case rows "
                                f"is not in the current test split of '{target}'; `bench eval "
                                f"--run {entry.run_id} --target {target}` re-evaluates it")
            index = [where[i] for i in rows]
            by_row = {}
            for chunk, probs in predict_rows(trained, data, index):
                for j, i in enumerate(chunk):
                    by_row[int(i)] = probs[j] >= trained.threshold
            for image_id, i in zip(rows, index, strict=True):
                ref = np.asarray(data.masks[i]) != 0
                if entry.key == ref_key or image_id not in images:
                    images[image_id], refs[image_id] = np.asarray(data.images[i]), ref
                pred = by_row[i]
                preds[(image_id, entry.key)] = (np.asarray(data.images[i]), pred)
                again = 100 * case_metrics(pred, ref, tuple(data.spacing_mm[i]))["DSC"]
                if abs(again - labels[(image_id, entry.key)]) > DSC_TOLERANCE:
                    line = (f"warning: run {entry.run_id}: image {image_id}'s DSC from the "
                            f"regenerated prediction is {again:.2f}, the stored one "
                            f"{labels[(image_id, entry.key)]:.2f} (the numerics changed since "
                            "its evaluation; the figure shows the stored value)")
                    notes.append(line)
                    reporter.log(f"[yellow]{line}[/yellow]")
            task.advance(1)
    columns = ["image", "reference", *(e.label for e in entries)]
    title = f"cases: {rule_text} — {heading}"
    _draw(out, title, rows, row_rules, columns, images, refs, preds, labels, keys)
    return GalleryLayout(rows, columns, labels, out, title, row_rules, notes)


def _stem(spec: str) -> str:
    """A domain spec as a file-name part (a TOML path by its stem; other characters than
    letters, digits and `._+-` become `_`)."""
    name = Path(spec).stem if spec.endswith(".toml") else spec
    return "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "_" for c in name)


def gallery_entries(req: GalleryRequest, store: ResultsStore) -> list[GalleryEntry]:
    """One column per --methods name: the run `bench run` would name for it (one-line error
    naming the `bench run` command when it was never trained)."""
    from benchmark.registry import get_method
    from benchmark.trained import resolve_run_id

    entries = []
    for name in req.methods:
        run_id = resolve_run_id(store, None, name, req.source, req.seed, req.profile,
                                list(req.sets), req.cache_dir)
        entries.append(GalleryEntry(name, get_method(name).display_name, run_id))
    return entries


def case_gallery(req: GalleryRequest, reporter: Reporter) -> GalleryLayout:
    """`bench show cases`: find each method's run the way `bench run` names it, then draw
    the gallery of `req.target` (default PNG: <results>/figures/cases-S-T-sN.png)."""
    from benchmark.sweep import parse_csv

    if req.image_ids is not None and req.cases is not None:
        raise UserError("give --cases or --image-ids, not both")
    rules = parse_cases(req.cases or DEFAULT_CASES) if req.image_ids is None else None
    methods = req.methods
    if req.reference is not None and req.reference not in methods:
        raise UserError(f"--reference '{req.reference}' is not one of --methods "
                        f"({', '.join(methods)}){closest(req.reference, methods)}")
    ids = parse_csv(",".join(req.image_ids), "--image-ids") if req.image_ids is not None \
        else None
    store = ResultsStore(req.results_dir)
    entries = gallery_entries(req, store)
    out = req.out or (req.results_dir / "figures" /
                      f"cases-{_stem(req.source)}-{_stem(req.target)}-s{req.seed}.png")
    heading = f"{req.source} → {req.target}, seed {req.seed}, profile {req.profile}"
    return draw_gallery(store, entries, req.target, req.cache_dir, out, reporter, heading,
                        rules=rules, image_ids=ids, reference=req.reference,
                        include_empty=req.include_empty, device=req.device)


@dataclass
class PairingGallery:
    """One Table 1 pairing's gallery for the HTML page: its heading and PNG, or why not."""

    heading: str
    path: Path | None
    problem: str = ""
    layout: GalleryLayout | None = None


def pairing_galleries(store: ResultsStore, out_dir: Path, cache_dir: Path, reporter: Reporter,
                      device: str = "auto", spec: str = DEFAULT_CASES) -> list[PairingGallery]:
    """A gallery per cross-domain pairing (data kind, profile, source -> target) of the
    stored runs, with every leaderboard row that has a run there at the seed most rows share
    (ties: the lowest). A pairing that cannot be drawn gets its one-line reason instead."""
    from benchmark.collect import collect
    from benchmark.leaderboard import _order_key, _pairing_key

    rules = parse_cases(spec)
    got = collect(store, "source-val")
    cases = got.cases
    if not len(cases):
        return []
    if "target_kind" in cases:  # real results never share a table with synthetic ones
        cases = cases[cases["target_kind"] == cases["data_kind"]]
    cross = cases[cases["target"] != cases["source"]]
    if "group" not in cross:
        cross = cross.assign(group="plugin")
    out: list[PairingGallery] = []
    keys = sorted(set(zip(cross["data_kind"], cross["profile"], cross["source"],
                          cross["target"], strict=True)),
                  key=lambda k: (k[0], k[1], *_pairing_key((k[2], k[3]))))
    for kind, profile, source, target in keys:
        sub = cross[(cross["data_kind"] == kind) & (cross["profile"] == profile)
                    & (cross["source"] == source) & (cross["target"] == target)]
        runs = sub[["method_display", "seed", "run_id", "target_spec", "group"]
                   ].drop_duplicates("run_id")
        seeds = runs.groupby("seed")["method_display"].nunique()
        seed = int(sorted(seeds.items(), key=lambda sv: (-sv[1], sv[0]))[0][0])
        at = runs[runs["seed"] == seed].drop_duplicates("method_display")
        order = sorted(zip(at["group"].astype(str), at["method_display"].astype(str),
                           at["run_id"].astype(str), at["target_spec"].astype(str),
                           strict=True), key=lambda r: _order_key(r[0], r[1]))
        entries = [GalleryEntry(display, display, run_id) for _, display, run_id, _ in order]
        target_spec = order[0][3]
        heading = f"{source} → {target}, seed {seed}, profile {profile} ({kind} data)"
        path = out_dir / f"cases-{kind}-{profile}-{_stem(source)}-{_stem(target)}-s{seed}.png"
        left_out = sorted(set(runs["method_display"]) - set(at["method_display"]))
        try:
            layout = draw_gallery(store, entries, target_spec, cache_dir, path, reporter,
                                  heading, rules=rules, device=device)
        except UserError as exc:
            out.append(PairingGallery(heading, None, f"no gallery: {exc}"))
            continue
        note = (f"left out (no run at seed {seed}): {', '.join(left_out)}" if left_out else "")
        out.append(PairingGallery(heading, path, note, layout))
    return out
