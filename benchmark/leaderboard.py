"""Leaderboards: a pure function of the stored runs, in the paper's Table 1 layout.

Rows are methods grouped P1 / P2 / P3 / ours in the paper's order; columns are TPR, Pr, DSC,
HD, ASD for every source -> target pairing; cells are mean ± std over images; the best mean per
column is bold. Synthetic and real results, and different profiles, never share a table. The
paper's published numbers can be shown in separate "(paper)" rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.aggregate import REPORTED, format_cell, summarize
from benchmark.store import ResultsStore

GROUP_ORDER = ("P1", "P2", "P3", "ours", "ablation", "plugin")
PAPER_ORDER = ("Unet", "Resnet", "M-net", "Swin-Unet", "CS-net", "Iadml", "Musn", "CA-net",
               "BigAug", "Dofe", "Feddg", "Sadn", "MLN-net")
METRICS = tuple(REPORTED)  # TPR Pr DSC HD ASD
HIGHER_IS_BETTER = {"TPR": True, "Pr": True, "DSC": True, "HD": False, "ASD": False}
PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
PAPER_TABLES = ("table1_ffdm_dbt.csv", "table2_cbis_ffdmdbt.csv")
PAPER_PAIRINGS = (("ffdm", "dbt"), ("dbt", "ffdm"))


@dataclass
class Cell:
    """One method x pairing cell: a summary, or the reason it is empty."""

    summary: dict[str, float | int] | None = None
    reason: str = "not run"


@dataclass
class Table:
    """One leaderboard: a data kind + profile, its pairings, rows and cells."""

    kind: str
    profile: str
    pairings: list[tuple[str, str]]
    rows: list[tuple[str, str]]  # (group, display name)
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # (display, src, tgt)
    paper: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"table1-{self.kind}-{self.profile}"


def load_paper_numbers(paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str, str], dict]:
    """(display name, source, target) -> {TPR, Pr, DSC, HD, ASD} from the paper's CSVs."""
    out: dict[tuple[str, str, str], dict] = {}
    for name in PAPER_TABLES:
        path = paper_dir / name
        if not path.is_file():
            continue
        for rec in pd.read_csv(path).to_dict("records"):
            out[(rec["method"], rec["source"], rec["target"])] = {
                "TPR": rec["TPR"], "Pr": rec["Pr"], "DSC": rec["DSC"], "HD": rec["HD_mm"],
                "ASD": rec["ASD_mm"], "group": rec["group"]}
    return out


def _order_key(group: str, display: str) -> tuple[int, int, str]:
    g = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    p = PAPER_ORDER.index(display) if display in PAPER_ORDER else len(PAPER_ORDER)
    return g, p, display


def build_tables(store: ResultsStore, registered: dict[str, tuple[str, str]] | None = None,
                 with_paper: bool = False) -> list[Table]:
    """Every leaderboard the stored runs support.

    `registered` maps display name -> (group, name) of the methods known to the registry; they
    get rows (with 'not run' cells) even before they have results.
    """
    runs, problems = store.list_runs()
    frames = []
    failed: dict[tuple[str, str, str, str], str] = {}  # (kind, profile, display, source)
    run_methods: dict[tuple[str, str], dict[str, str]] = {}  # (kind, profile) -> display: group
    for rec in runs:
        info = rec.info
        if "method_display" in info:
            run_methods.setdefault((info.get("data_kind", "?"), info["profile"]), {})[
                info["method_display"]] = info.get("group", "plugin")
        if rec.status.get("state") == "failed":
            failed[(info.get("data_kind", "?"), info["profile"], info["method_display"],
                    info["source"])] = "failed"
        cases = store.cases(rec.run_id)
        if len(cases):
            frames.append(cases.assign(created=info.get("created", ""),
                                       data_kind=info.get("data_kind", "?")))
        for key, t in rec.status.get("targets", {}).items():
            if t.get("state") == "failed":
                failed[(info.get("data_kind", "?"), info["profile"], info["method_display"],
                        info["source"] + "->" + key.split("@")[0])] = "failed (evaluation)"
    cases = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    paper = load_paper_numbers() if with_paper else {}
    tables: list[Table] = []
    if len(cases):
        cases = cases[cases["target"] != cases["source"]]
        # Real results never share a table with synthetic ones: a target of another kind than
        # the source's data goes to the table of its own kind only when both agree.
        cases = cases[cases["target_kind"] == cases["data_kind"]]
    keys = sorted(set(zip(cases["data_kind"], cases["profile"], strict=True))) if len(cases) \
        else []
    for kind, profile in keys:
        sub = cases[(cases["data_kind"] == kind) & (cases["profile"] == profile)]
        sub = _latest_per_seed(sub)
        pairings = sorted(set(zip(sub["source"], sub["target"], strict=True)),
                          key=_pairing_key)
        if with_paper:
            pairings += [p for p in PAPER_PAIRINGS if p not in pairings]
        groups = dict(zip(sub["method_display"], sub["group"], strict=False))
        for display, group in run_methods.get((kind, profile), {}).items():
            groups.setdefault(display, group)
        for display, (group, _name) in (registered or {}).items():
            groups.setdefault(display, group)
        if with_paper:
            for (display, _s, _t), vals in paper.items():
                groups.setdefault(display, vals["group"])
        rows = sorted(((g, d) for d, g in groups.items()), key=lambda r: _order_key(*r))
        table = Table(kind, profile, pairings, rows, problems=list(problems))
        for _group, display in rows:
            for src, tgt in pairings:
                cell_cases = sub[(sub["method_display"] == display) & (sub["source"] == src)
                                 & (sub["target"] == tgt)]
                if len(cell_cases):
                    table.cells[(display, src, tgt)] = Cell(summarize(cell_cases))
                else:
                    reason = failed.get((kind, profile, display, src)) or failed.get(
                        (kind, profile, display, f"{src}->{tgt}")) or "not run"
                    table.cells[(display, src, tgt)] = Cell(None, reason)
                if (display, src, tgt) in paper:
                    table.paper[(display, src, tgt)] = paper[(display, src, tgt)]
        tables.append(table)
    return tables


def _pairing_key(pairing: tuple[str, str]) -> tuple[int, str, str]:
    """The paper's Table 1 pairings first, then the others alphabetically."""
    rank = PAPER_PAIRINGS.index(pairing) if pairing in PAPER_PAIRINGS else len(PAPER_PAIRINGS)
    return rank, *pairing


def _latest_per_seed(cases: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (method, source, target, seed), only the rows of the newest run."""
    if not len(cases):
        return cases
    newest = cases.groupby(["method_display", "source", "target", "seed"])["created"] \
        .transform("max")
    return cases[cases["created"] == newest]


def _best(table: Table) -> dict[tuple[str, str, str], float]:
    """Best mean per (source, target, metric) among our cells (only where >= 2 compete)."""
    best: dict[tuple[str, str, str], float] = {}
    count: dict[tuple[str, str, str], int] = {}
    for (_display, src, tgt), cell in table.cells.items():
        if cell.summary is None:
            continue
        for m in METRICS:
            v = cell.summary[f"{m}_mean"]
            if isinstance(v, float) and math.isnan(v):
                continue
            k = (src, tgt, m)
            count[k] = count.get(k, 0) + 1
            if k not in best or (v > best[k] if HIGHER_IS_BETTER[m] else v < best[k]):
                best[k] = float(v)
    return {k: v for k, v in best.items() if count[k] > 1}


def _text(cell: Cell, metric: str) -> str:
    """A cell's text: 'mean ± std', or why it is empty."""
    return cell.reason if cell.summary is None else format_cell(cell.summary, metric)


def render_markdown(table: Table) -> str:
    """GitHub markdown: one header row per pairing block, bold best, '(paper)' rows italic."""
    best = _best(table)
    head = ["Group", "Method"] + [f"{m} {s}→{t}" for s, t in table.pairings for m in METRICS]
    lines = [f"### Table 1 layout — {table.kind} data, profile `{table.profile}`", "",
             "Cells: mean ± std over test images (TPR/Pr/DSC in %, HD/ASD in mm; ASD is the "
             "symmetric ASSD). Rows marked *(paper)* are the MLN-net paper's published numbers "
             "on its real data, for reference only.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, display in table.rows:
        cells = []
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            for m in METRICS:
                text = _text(cell, m)
                if cell.summary is not None and best.get((s, t, m)) == cell.summary[f"{m}_mean"]:
                    text = f"**{text}**"
                cells.append(text)
        lines.append(f"| {group} | {display} | " + " | ".join(cells) + " |")
        if any((display, s, t) in table.paper for s, t in table.pairings):
            pcells = [f"*{table.paper[(display, s, t)][m]:.2f}*" if (display, s, t) in
                      table.paper else "" for s, t in table.pairings for m in METRICS]
            lines.append(f"| {group} | *{display} (paper)* | " + " | ".join(pcells) + " |")
    if table.problems:
        lines += ["", "Unreadable run folders (skipped):"] + [f"- {p}" for p in table.problems]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("→", r"$\to$")):
        text = text.replace(a, b)
    return text


def render_latex(table: Table) -> str:
    """A booktabs tabular in the paper's layout (one multicolumn block per pairing)."""
    best = _best(table)
    ncol = len(table.pairings) * len(METRICS)
    out = [r"\begin{tabular}{ll" + "r" * ncol + "}", r"\toprule"]
    out.append(" & & " + " & ".join(
        rf"\multicolumn{{{len(METRICS)}}}{{c}}{{{_tex_escape(f'{s} → {t}')}}}"
        for s, t in table.pairings) + r" \\")
    out.append("Group & Method & " + " & ".join(
        ["TPR (\\%)", "Pr (\\%)", "DSC (\\%)", "HD (mm)", "ASD (mm)"] * len(table.pairings))
        + r" \\")
    out.append(r"\midrule")
    for group, display in table.rows:
        vals = []
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            for m in METRICS:
                text = _tex_escape(_text(cell, m))
                if cell.summary is not None and best.get((s, t, m)) == cell.summary[f"{m}_mean"]:
                    text = rf"\textbf{{{text}}}"
                vals.append(text)
        out.append(f"{_tex_escape(group)} & {_tex_escape(display)} & " + " & ".join(vals)
                   + r" \\")
        if any((display, s, t) in table.paper for s, t in table.pairings):
            pv = [rf"\textit{{{table.paper[(display, s, t)][m]:.2f}}}" if (display, s, t) in
                  table.paper else "" for s, t in table.pairings for m in METRICS]
            out.append(f" & \\textit{{{_tex_escape(display)} (paper)}} & " + " & ".join(pv)
                       + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def render_csv(table: Table) -> str:
    """Long format, one row per (method, pairing, numbers_from): machine-readable."""
    recs = []
    for group, display in table.rows:
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            rec = {"data_kind": table.kind, "profile": table.profile, "group": group,
                   "method": display, "source": s, "target": t, "numbers_from": "ours",
                   "status": "ok" if cell.summary else cell.reason,
                   "n_images": cell.summary["n"] if cell.summary else 0}
            for m in METRICS:
                for stat in ("mean", "std", "undefined"):
                    rec[f"{m}_{stat}"] = cell.summary[f"{m}_{stat}"] if cell.summary else None
            recs.append(rec)
            if (display, s, t) in table.paper:
                p = table.paper[(display, s, t)]
                recs.append({**{k: rec[k] for k in ("data_kind", "profile", "group", "method",
                                                    "source", "target")},
                             "numbers_from": "paper (real data)", "status": "published",
                             "n_images": None,
                             **{f"{m}_mean": p[m] for m in METRICS},
                             **{f"{m}_{stat}": None for m in METRICS
                                for stat in ("std", "undefined")}})
    frame = pd.DataFrame(recs)
    counts = [c for c in frame.columns if c == "n_images" or c.endswith("_undefined")]
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
