"""Leaderboards: a pure function of the stored runs, in the paper's table layouts.

Layouts: `1` (Table 1: every cross-domain pairing, FFDM<->DBT first), `2` (Table 2:
CBIS-DDSM <-> FFDM-DBT), `ablation` (Table 3: DSC and HD for FFDM<->DBT, the ablation variants
in the paper's order) and `matrix` (the full source x target matrix, in-domain diagonal
included, of one metric per method). Rows are methods grouped P1 / P2 / P3 / ours in the paper's
order; cells are mean ± std (over images as in the paper, or over seeds when a cell has >= 2
seeds, then with the 95% patient-bootstrap CI in the cell; the CI is always in the CSV / HTML);
the best mean per column is bold; with a baseline, ↑ / ↓ mark Holm-corrected significant paired
differences; an average-rank column ranks the methods with non-significant differences as ties
(benchmark/stats.py `significance_ranks`). A cell whose runs never beat the all-background
validation score reads "not learned (...)" and is neither bold nor ranked. A non-default
configuration (`--set` overrides) is its own row, `Method [key=value]`. Synthetic and real
results, and different profiles, never share a table. The paper's published numbers can be
shown in separate "(paper)" rows.

Table 2 mapping (our data has no combined FFDM-DBT domain): the paper's "cbis-ddsm ->
ffdm-dbt" is our `cbis-ddsm -> ffdm+dbt`, the ffdm and dbt test images of the same CBIS-DDSM
run pooled into one target (the paper's FFDM-DBT set is the union of the two datasets); the
paper's "ffdm-dbt -> cbis-ddsm" needs a model trained on both, which single-source training
does not produce, so our two single-source columns `ffdm -> cbis-ddsm` and `dbt -> cbis-ddsm`
are shown, each beside that one published number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.aggregate import REPORTED, format_cell
from benchmark.collect import SELECTION_LABEL, Collected, collect
from benchmark.errors import UserError
from benchmark.stats import (
    Comparison,
    cell_statistics,
    compare_to_baseline,
    per_image,
    significance_ranks,
)
from benchmark.store import ResultsStore

GROUP_ORDER = ("P1", "P2", "P3", "ours", "ablation", "plugin")
PAPER_ORDER = ("Unet", "Resnet", "M-net", "Swin-Unet", "CS-net", "Iadml", "Musn", "CA-net",
               "BigAug", "Dofe", "Feddg", "Sadn", "MLN-net")
ABLATION_ORDER = ("Basenet", "Basenet-S", "MLN-net-R", "Unet-R", "MLN-net-E", "Unet-E",
                  "MLN-net", "Unet*", "MLN-net-E+", "MLN-net+")
METRICS = tuple(REPORTED)  # TPR Pr DSC HD ASD
HIGHER_IS_BETTER = {"TPR": True, "Pr": True, "DSC": True, "HD": False, "ASD": False}
PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
PAPER_TABLES = ("table1_ffdm_dbt.csv", "table2_cbis_ffdmdbt.csv")
PAPER_PAIRINGS = (("ffdm", "dbt"), ("dbt", "ffdm"))
POOLED_TARGET = "ffdm+dbt"
TABLE2_PAIRINGS = (("cbis-ddsm", POOLED_TARGET), ("ffdm", "cbis-ddsm"), ("dbt", "cbis-ddsm"))
# our pairing -> the paper's pairing whose published number stands beside it
PAPER_PAIRING_OF = {("cbis-ddsm", POOLED_TARGET): ("cbis-ddsm", "ffdm-dbt"),
                    ("ffdm", "cbis-ddsm"): ("ffdm-dbt", "cbis-ddsm"),
                    ("dbt", "cbis-ddsm"): ("ffdm-dbt", "cbis-ddsm")}
LAYOUTS = ("1", "2", "ablation", "matrix")
LAYOUT_TITLE = {"1": "Table 1 layout", "2": "Table 2 layout", "ablation": "Table 3 (ablation) "
                "layout", "matrix": "Source x target matrix"}


@dataclass
class Cell:
    """One method x pairing cell: a summary, or the reason it is empty."""

    summary: dict[str, float | int] | None = None
    reason: str = "not run"
    run_ids: list[str] = field(default_factory=list)
    not_learned: int = 0  # how many of `run_ids` never beat the all-background score
    trials: list[int] = field(default_factory=list)  # the chosen hparam trial of each run
    left_out: list[str] = field(default_factory=list)  # runs on an older test-set version

    @property
    def ranked(self) -> bool:
        """Has numbers and at least one run that learned: eligible for bold and ranks."""
        return self.summary is not None and self.not_learned < len(self.run_ids)


@dataclass
class Table:
    """One leaderboard: a data kind + profile, its pairings, rows, cells and statistics."""

    kind: str
    profile: str
    pairings: list[tuple[str, str]]
    rows: list[tuple[str, str]]  # (group, display name)
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # (display, src, tgt)
    paper: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # runs left out: an older test-set version
    layout: str = "1"
    metrics: tuple[str, ...] = METRICS
    aggregate: str = "image"
    selection: str = "source-val"
    baseline: str | None = None
    markers: dict[tuple[str, str, str, str], Comparison] = field(default_factory=dict)
    ranks: dict[str, float] = field(default_factory=dict)
    show_ci: bool = False  # append the 95% bootstrap CI to every cell's text

    @property
    def slug(self) -> str:
        extra = "" if self.selection == "source-val" else f"-{self.selection}"
        extra += "" if self.aggregate == "image" else f"-{self.aggregate}"
        name = "table1" if self.layout == "1" else f"table{self.layout}" \
            if self.layout == "2" else self.layout
        return f"{name}-{self.kind}-{self.profile}{extra}"


def load_paper_numbers(paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str, str], dict]:
    """(display name, source, target) -> {TPR, Pr, DSC, HD, ASD, group} from Tables 1-2 and
    {DSC, HD, group='ablation'} from Table 3 (Table 1/2 entries win where both exist)."""
    out: dict[tuple[str, str, str], dict] = {}
    path = paper_dir / "table3_ablation.csv"
    if path.is_file():
        for rec in pd.read_csv(path).to_dict("records"):
            out[(rec["method"], rec["source"], rec["target"])] = {
                "DSC": rec["DSC"], "HD": rec["HD_mm"], "group": "ablation"}
    for name in PAPER_TABLES:
        path = paper_dir / name
        if not path.is_file():
            continue
        for rec in pd.read_csv(path).to_dict("records"):
            out[(rec["method"], rec["source"], rec["target"])] = {
                "TPR": rec["TPR"], "Pr": rec["Pr"], "DSC": rec["DSC"], "HD": rec["HD_mm"],
                "ASD": rec["ASD_mm"], "group": rec["group"]}
    return out


def _order_key(group: str, display: str, layout: str = "1") -> tuple[int, int, str]:
    if layout == "ablation":
        a = ABLATION_ORDER.index(display) if display in ABLATION_ORDER else len(ABLATION_ORDER)
        return a, 0, display
    g = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    base = display.split(" [")[0]  # a configuration row sits after its default row
    p = PAPER_ORDER.index(base) if base in PAPER_ORDER else len(PAPER_ORDER)
    return g, p, display


def _pairing_key(pairing: tuple[str, str]) -> tuple[int, str, str]:
    """The paper's Table 1 pairings first, then the others alphabetically."""
    rank = PAPER_PAIRINGS.index(pairing) if pairing in PAPER_PAIRINGS else len(PAPER_PAIRINGS)
    return rank, *pairing


def _layout_cases(cases: pd.DataFrame, layout: str) -> pd.DataFrame:
    """The rows a layout reads: cross-domain only (all for `matrix`), plus Table 2's pooled
    ffdm+dbt target made from a CBIS-DDSM run's ffdm and dbt rows."""
    if layout == "matrix":
        return cases
    cross = cases[cases["target"] != cases["source"]]
    if layout != "2":
        return cross
    pooled = cross[(cross["source"] == "cbis-ddsm") & cross["target"].isin(["ffdm", "dbt"])]
    return pd.concat([cross, pooled.assign(target=POOLED_TARGET)], ignore_index=True)


def _layout_pairings(sub: pd.DataFrame, layout: str, with_paper: bool) -> list[tuple[str, str]]:
    present = sorted(set(zip(sub["source"], sub["target"], strict=True)), key=_pairing_key)
    if layout == "2":
        return list(TABLE2_PAIRINGS)
    if layout == "ablation":
        return list(PAPER_PAIRINGS)
    if layout == "matrix":
        return present
    return present + ([p for p in PAPER_PAIRINGS if p not in present] if with_paper else [])


def build_tables(store: ResultsStore, registered: dict[str, tuple[str, str]] | None = None,
                 with_paper: bool = False, layout: str = "1", aggregate: str = "image",
                 selection: str = "source-val", baseline: str | None = None,
                 metric: str = "DSC", n_boot: int = 1000, seed: int = 0,
                 collected: Collected | None = None) -> list[Table]:
    """Every leaderboard of `layout` the stored runs support.

    `registered` maps display name -> (group, name) of the methods known to the registry; they
    get rows (with 'not run' cells) even before they have results. `baseline` is a method name
    or display name for the paired tests; `metric` is the matrix layout's metric.
    """
    if layout not in LAYOUTS:
        raise UserError(f"--table '{layout}': expected one of {', '.join(LAYOUTS)}")
    if metric not in METRICS:
        raise UserError(f"--metric '{metric}': expected one of {', '.join(METRICS)}")
    got = collected or collect(store, selection)
    cases = got.cases
    paper = load_paper_numbers() if with_paper else {}
    if len(cases):
        # Real results never share a table with synthetic ones.
        cases = _layout_cases(cases[cases["target_kind"] == cases["data_kind"]], layout)
    keys = sorted(set(zip(cases["data_kind"], cases["profile"], strict=True))) if len(cases) \
        else []
    metrics = (metric,) if layout == "matrix" else ("DSC", "HD") if layout == "ablation" \
        else METRICS
    tables = []
    for kind, profile in keys:
        sub = cases[(cases["data_kind"] == kind) & (cases["profile"] == profile)]
        pairings = _layout_pairings(sub, layout, with_paper)
        groups = _groups(sub, got, kind, profile, registered, paper, layout, with_paper)
        rows = sorted(((g, d) for d, g in groups.items()),
                      key=lambda r: _order_key(*r, layout=layout))
        table = Table(kind, profile, pairings, rows, problems=list(got.problems),
                      stale=got.stale_lines(kind, profile),
                      layout=layout,
                      metrics=metrics, aggregate=aggregate, selection=selection)
        by_cell = {k: g for k, g in sub.groupby(["method_display", "source", "target"])}
        for _group, display in rows:
            for src, tgt in pairings:
                rows_ = by_cell.get((display, src, tgt))
                if rows_ is not None and len(rows_):
                    ids = sorted(rows_["run_id"].unique())
                    table.cells[(display, src, tgt)] = Cell(
                        cell_statistics(rows_, aggregate, n_boot, seed), run_ids=ids,
                        not_learned=sum(got.not_learned(r) for r in ids),
                        trials=[got.choices[r].trial for r in ids if r in got.choices],
                        left_out=[rid for rid, _ in got.left_out.get(
                            (kind, profile, display, src, tgt), [])])
                else:
                    reason = got.failed.get((kind, profile, display, src)) or got.failed.get(
                        (kind, profile, display, f"{src}->{tgt}")) or "not run"
                    table.cells[(display, src, tgt)] = Cell(None, reason)
                ppair = PAPER_PAIRING_OF.get((src, tgt), (src, tgt)) if layout == "2" \
                    else (src, tgt)
                if (display, *ppair) in paper:
                    table.paper[(display, src, tgt)] = paper[(display, *ppair)]
        if baseline:
            _add_markers(table, by_cell, _baseline_display(baseline, groups, sub))
        _add_ranks(table, by_cell)
        tables.append(table)
    return tables


def _groups(sub: pd.DataFrame, got: Collected, kind: str, profile: str,
            registered: dict[str, tuple[str, str]] | None, paper: dict, layout: str,
            with_paper: bool) -> dict[str, str]:
    """display -> group of every row a layout shows."""
    groups = dict(zip(sub["method_display"], sub["group"], strict=False))
    for display, group in got.run_methods.get((kind, profile), {}).items():
        groups.setdefault(display, group)
    for display, (group, _name) in (registered or {}).items():
        groups.setdefault(display, group)
    if layout == "ablation":
        for display in ABLATION_ORDER:
            groups.setdefault(display, "ablation")
        return {d: g for d, g in groups.items() if d in ABLATION_ORDER or g == "ablation"}
    if layout == "matrix":  # every method that ran, ablation variants included
        return {d: g for d, g in groups.items() if d in set(sub["method_display"])}
    groups = {d: g for d, g in groups.items() if g != "ablation"}
    if with_paper:
        for (display, _s, _t), vals in paper.items():
            if vals["group"] != "ablation":
                groups.setdefault(display, vals["group"])
    return groups


def _baseline_display(baseline: str, groups: dict[str, str], sub: pd.DataFrame) -> str:
    """Accept a registry name ('unet') or a display name ('Unet')."""
    if baseline in groups:
        return baseline
    names = dict(zip(sub["method"], sub["method_display"], strict=False)) if "method" in sub \
        else {}
    for name, display in names.items():
        if name == baseline:
            return display
    lowered = {d.lower(): d for d in groups}
    if baseline.lower() in lowered:
        return lowered[baseline.lower()]
    raise UserError(f"--baseline '{baseline}': no such method in this table (methods: "
                    f"{', '.join(sorted(groups))})")


def _add_markers(table: Table, by_cell: dict[tuple[str, str, str], pd.DataFrame],
                 baseline: str) -> None:
    table.baseline = baseline
    for src, tgt in table.pairings:
        cells = {d: by_cell[(d, src, tgt)] for _g, d in table.rows if (d, src, tgt) in by_cell}
        for m in table.metrics:
            for display, comp in compare_to_baseline(cells, baseline, m,
                                                     table.aggregate).items():
                table.markers[(display, src, tgt, m)] = comp


def _add_ranks(table: Table, by_cell: dict[tuple[str, str, str], pd.DataFrame]) -> None:
    """Average over columns of the significance rank (1 + methods significantly better);
    only columns where >= 2 ranked (learned) cells compete count."""
    per_method: dict[str, list[int]] = {}
    for s, t in table.pairings:
        names = [d for _g, d in table.rows if (d, s, t) in by_cell
                 and table.cells[(d, s, t)].ranked]
        if len(names) < 2:
            continue
        for m in table.metrics:
            images = {d: per_image(by_cell[(d, s, t)], m) for d in names}
            images = {d: f for d, f in images.items() if f["value"].notna().any()}
            if len(images) < 2:
                continue
            for d, r in significance_ranks(images, m, table.aggregate).items():
                per_method.setdefault(d, []).append(r)
    table.ranks = {d: float(sum(r) / len(r)) for d, r in per_method.items()}


def _best(table: Table) -> dict[tuple[str, str, str], float]:
    """Best mean per (source, target, metric) among our cells (only where >= 2 compete)."""
    best: dict[tuple[str, str, str], float] = {}
    count: dict[tuple[str, str, str], int] = {}
    for (_display, src, tgt), cell in table.cells.items():
        if cell.summary is None or not cell.ranked:
            continue
        for m in table.metrics:
            v = cell.summary[f"{m}_mean"]
            if isinstance(v, float) and math.isnan(v):
                continue
            k = (src, tgt, m)
            count[k] = count.get(k, 0) + 1
            if k not in best or (v > best[k] if HIGHER_IS_BETTER[m] else v < best[k]):
                best[k] = float(v)
    return {k: v for k, v in best.items() if count[k] > 1}


def cell_text(table: Table, display: str, src: str, tgt: str, metric: str) -> str:
    """A cell's text: 'mean ± std' (with the CI and ' (k seeds)' when >= 2 seeds, and a ↑/↓
    marker), 'not learned (...)' around it when no run beat all-background, or why it is
    empty."""
    cell = table.cells[(display, src, tgt)]
    if cell.summary is None:
        return cell.reason
    text = format_cell(cell.summary, metric)
    if table.aggregate == "pooled" and metric in ("TPR", "Pr", "DSC") and \
            cell.summary.get("n_seeds", 1) < 2:
        text = text.split(" ±")[0]  # a pooled ratio has no spread over units
    comp = table.markers.get((display, src, tgt, metric))
    mark = comp.marker(metric) if comp else ""
    seeds = int(cell.summary.get("n_seeds", 1))
    if (table.show_ci or seeds > 1) and \
            not math.isnan(float(cell.summary.get(f"{metric}_ci_lo", math.nan))):
        text += f" [{cell.summary[f'{metric}_ci_lo']:.2f}, {cell.summary[f'{metric}_ci_hi']:.2f}]"
    if seeds > 1:
        text += f" ({seeds} seeds)"
    text = f"{text} {mark}" if mark else text
    if not cell.ranked:
        return f"not learned ({text})"
    if cell.not_learned:
        text += f" ({cell.not_learned} of {len(cell.run_ids)} runs not learned)"
    return text


def legend(table: Table) -> str:
    """One paragraph saying what the numbers in `table` are."""
    unit = {"image": "test images", "patient": "patients (a patient's images averaged first)",
            "pooled": "images, with TPR/Pr/DSC pooled over the summed confusion counts"}
    text = (f"Cells: mean ± std over {unit[table.aggregate]} (over seeds where a cell says "
            "'(k seeds)'); TPR/Pr/DSC in %, HD/ASD in mm; ASD is the symmetric ASSD. "
            f"Model selection: {SELECTION_LABEL[table.selection]}. Bold: best mean per column. "
            "Avg. rank: mean over the columns of the method's significance rank, 1 + the "
            "number of methods significantly better on the same images (paired Wilcoxon "
            "signed-rank, Holm-corrected across all pairs of the column, α = 0.05), so "
            "differences that are not significant are ties. \"not learned (...)\": no run of "
            "the cell beat the all-background score on source validation; shown for the "
            "record, never bold, not ranked (docs/guide/not-learned.md). "
            "Method [k=v]: runs with those `--set` overrides, kept apart from the default.")
    if table.show_ci or any(c.summary and c.summary.get("n_seeds", 1) > 1
                            for c in table.cells.values()):
        text += (" [a, b]: 95% percentile-bootstrap CI of the mean, resampling patients "
                 "(each image's value averaged over the seeds first).")
    if table.baseline:
        text += (f" ↑ / ↓: significantly better / worse than {table.baseline} on the same "
                 "images (Wilcoxon signed-rank, Holm-corrected across methods per column, "
                 "α = 0.05).")
    if table.paper:
        text += (" Rows marked *(paper)* are the MLN-net paper's published numbers on its real "
                 "data, for reference only.")
    if table.layout == "2":
        text += (f" `{POOLED_TARGET}` pools the ffdm and dbt test images of the CBIS-DDSM run "
                 "(the paper's FFDM-DBT); the paper's ffdm-dbt→cbis-ddsm number stands beside "
                 "both single-source columns.")
    return text


def _header(table: Table) -> list[str]:
    return [f"{m} {s}→{t}" for s, t in table.pairings for m in table.metrics]


def render_markdown(table: Table) -> str:
    """GitHub markdown: bold best, ↑/↓ markers, '(paper)' rows italic, average rank last."""
    if table.layout == "matrix":
        return render_matrix_markdown(table)
    best = _best(table)
    head = ["Group", "Method", *_header(table), "Avg. rank"]
    lines = [f"### {LAYOUT_TITLE[table.layout]} — {table.kind} data, profile "
             f"`{table.profile}`", "", legend(table), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, display in table.rows:
        cells = []
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            for m in table.metrics:
                text = cell_text(table, display, s, t, m)
                if cell.ranked and best.get((s, t, m)) == cell.summary[f"{m}_mean"]:
                    text = f"**{text}**"
                cells.append(text)
        rank = f"{table.ranks[display]:.2f}" if display in table.ranks else ""
        lines.append(f"| {group} | {display} | " + " | ".join(cells) + f" | {rank} |")
        if any((display, s, t) in table.paper for s, t in table.pairings):
            lines.append(f"| {group} | *{display} (paper)* | " + " | ".join(
                _paper_cells(table, display, "*{:.2f}*")) + " |  |")
    if table.problems:
        lines += ["", "Unreadable run folders (skipped):"] + [f"- {p}" for p in table.problems]
    if table.stale:
        lines += ["", "Left out (an older version of the test set):"] + [
            f"- {s}" for s in table.stale]
    return "\n".join(lines) + "\n"


def _paper_cells(table: Table, display: str, fmt: str) -> list[str]:
    out = []
    for s, t in table.pairings:
        p = table.paper.get((display, s, t), {})
        out += [fmt.format(p[m]) if m in p else "" for m in table.metrics]
    return out


def render_matrix_markdown(table: Table) -> str:
    """One source x target block per method (diagonal = in-domain source test)."""
    metric = table.metrics[0]
    sources = sorted({s for s, _ in table.pairings})
    targets = sorted({t for _, t in table.pairings})
    lines = [f"### {metric}: source x target matrix — {table.kind} data, profile "
             f"`{table.profile}`", "", legend(table) + " Rows: training source; columns: "
             "evaluated domain; the diagonal is the source's own test split.", ""]
    for _group, display in table.rows:
        if not any(table.cells[(display, s, t)].summary for s, t in table.pairings):
            continue
        lines += [f"**{display}**", "", "| source \\ target | " + " | ".join(targets) + " |",
                  "|" + "---|" * (len(targets) + 1)]
        for s in sources:
            vals = [cell_text(table, display, s, t, metric) if (display, s, t) in table.cells
                    else "—" for t in targets]
            lines.append(f"| {s} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("→", r"$\to$"), ("↑", r"$\uparrow$"),
                 ("↓", r"$\downarrow$"), ("*", r"$^*$")):
        text = text.replace(a, b)
    return text


UNITS = {"TPR": "TPR (\\%)", "Pr": "Pr (\\%)", "DSC": "DSC (\\%)", "HD": "HD (mm)",
         "ASD": "ASD (mm)"}


def render_latex(table: Table) -> str:
    """A booktabs tabular in the paper's layout (one multicolumn block per pairing)."""
    best = _best(table)
    nm = len(table.metrics)
    ncol = len(table.pairings) * nm
    out = [r"\begin{tabular}{ll" + "r" * ncol + "r}", r"\toprule"]
    out.append(" & & " + " & ".join(
        rf"\multicolumn{{{nm}}}{{c}}{{{_tex_escape(f'{s} → {t}')}}}"
        for s, t in table.pairings) + r" & \\")
    out.append("Group & Method & " + " & ".join(
        [UNITS[m] for m in table.metrics] * len(table.pairings)) + r" & Avg. rank \\")
    out.append(r"\midrule")
    for group, display in table.rows:
        vals = []
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            for m in table.metrics:
                text = _tex_escape(cell_text(table, display, s, t, m))
                if cell.ranked and best.get((s, t, m)) == cell.summary[f"{m}_mean"]:
                    text = rf"\textbf{{{text}}}"
                vals.append(text)
        rank = f"{table.ranks[display]:.2f}" if display in table.ranks else ""
        out.append(f"{_tex_escape(group)} & {_tex_escape(display)} & " + " & ".join(vals)
                   + f" & {rank}" + r" \\")
        if any((display, s, t) in table.paper for s, t in table.pairings):
            pv = _paper_cells(table, display, r"\textit{{{:.2f}}}")
            out.append(f" & \\textit{{{_tex_escape(display)} (paper)}} & " + " & ".join(pv)
                       + r" & \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def table_records(table: Table) -> list[dict[str, Any]]:
    """Long format, one record per (method, pairing, numbers_from), with CIs and p-values."""
    recs = []
    for group, display in table.rows:
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            rec: dict[str, Any] = {
                "data_kind": table.kind, "profile": table.profile, "layout": table.layout,
                "selection": table.selection, "aggregate": table.aggregate, "group": group,
                "method": display, "source": s, "target": t, "numbers_from": "ours",
                "status": cell.reason if not cell.summary else "ok" if cell.ranked
                else "not learned",
                "runs_not_learned": cell.not_learned,
                "n_images": cell.summary["n"] if cell.summary else 0,
                "n_seeds": cell.summary["n_seeds"] if cell.summary else 0,
                "avg_rank": table.ranks.get(display), "run_ids": " ".join(cell.run_ids),
                "hparam_trials": " ".join(str(t) for t in cell.trials),
                "runs_left_out": " ".join(cell.left_out)}
            for m in table.metrics:
                for stat in ("mean", "std", "ci_lo", "ci_hi", "undefined"):
                    rec[f"{m}_{stat}"] = cell.summary.get(f"{m}_{stat}") if cell.summary \
                        else None
                comp = table.markers.get((display, s, t, m))
                rec[f"{m}_p_holm"] = comp.p_holm if comp else None
            recs.append(rec)
            if (display, s, t) in table.paper:
                p = table.paper[(display, s, t)]
                recs.append({**{k: rec[k] for k in ("data_kind", "profile", "layout",
                                                    "selection", "aggregate", "group",
                                                    "method", "source", "target")},
                             "numbers_from": "paper (real data)", "status": "published",
                             **{f"{m}_mean": p.get(m) for m in table.metrics}})
    return recs


def render_csv(table: Table) -> str:
    """Long format, one row per (method, pairing, numbers_from): machine-readable."""
    frame = pd.DataFrame(table_records(table))
    counts = [c for c in frame.columns if c in ("n_images", "n_seeds")
              or c.endswith("_undefined")]
    return frame.astype({c: "Int64" for c in counts}).to_csv(index=False)


RENDERERS = {"md": render_markdown, "csv": render_csv, "tex": render_latex}


def write_tables(tables: list[Table], out_dir: Path, fmt: str) -> list[Path]:
    """Render every table in `fmt` under `out_dir`; returns the written paths."""
    from benchmark.io import atomic_write_text

    paths = []
    for table in tables:
        path = out_dir / f"{table.slug}.{fmt}"
        atomic_write_text(path, RENDERERS[fmt](table))
        paths.append(path)
    return paths
