"""A static, self-contained HTML leaderboard: sortable tables (a few lines of inline JS, no CDN,
nothing fetched), the seaborn figures embedded as data URIs, the paper's numbers beside ours,
and the provenance of every number (each cell links to the runs that produced it, with their
code version, git commit and data fingerprints). Every string that comes from a run, a plugin
or a domain is passed through html.escape.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmark.collect import Collected, collect, provenance
from benchmark.io import atomic_write_text
from benchmark.leaderboard import (
    LAYOUT_TITLE,
    Table,
    _best,
    build_tables,
    cell_text,
    legend,
)
from benchmark.plots import all_plots
from benchmark.sections import branch_table, cost_table, lesion_table
from benchmark.store import ResultsStore

if TYPE_CHECKING:
    from benchmark.gallery import PairingGallery

E = html.escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#eef3f8;cursor:pointer;position:sticky;top:0}
td.l,th.l{text-align:left}
tr.paper td{font-style:italic;color:#666;background:#fafafa}
td.best{font-weight:bold}
td.empty{color:#999}
.note{max-width:1100px;font-size:13px;color:#444}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}
a{color:#1d4f91;text-decoration:none}
"""

# Click a header: sort the table's body rows by that column (numbers numerically, by the
# cell's data-v value when present); "(paper)" rows stay under the row they belong to.
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = t.tBodies[0], dir = th.dataset.dir === 'asc' ? -1 : 1;
      th.dataset.dir = dir === 1 ? 'asc' : 'desc';
      var groups = [];
      Array.from(body.rows).forEach(function(r){
        if (r.classList.contains('paper') && groups.length) groups[groups.length-1].push(r);
        else groups.push([r]);
      });
      function key(g){ var c = g[0].cells[col]; if (!c) return '';
        var v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
        var n = parseFloat(v); return isNaN(n) ? v : n; }
      groups.sort(function(a, b){ var x = key(a), y = key(b);
        if (typeof x === 'number' && typeof y === 'number') return dir * (x - y);
        if (typeof x === 'number') return -1; if (typeof y === 'number') return 1;
        return dir * String(x).localeCompare(String(y)); });
      groups.forEach(function(g){ g.forEach(function(r){ body.appendChild(r); }); });
    });
  });
});
"""


def _anchor(run_id: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_table(table: Table) -> str:
    """One leaderboard as a sortable HTML table with tooltips (CI, p, runs) and run links."""
    best = _best(table)
    head = ["Group", "Method"] + [f"{m} {s}→{t}" for s, t in table.pairings
                                  for m in table.metrics] + ["Avg. rank"]
    note = legend(table).replace("*(paper)*", "(paper)").replace("`", "")  # markdown marks
    out = [f"<h3>{E(LAYOUT_TITLE[table.layout])} — {E(table.kind)} data, profile "
           f"<code>{E(table.profile)}</code></h3>",
           f"<p class='note'>{E(note)}</p>",
           "<table class='sortable'><thead><tr>"
           + "".join(f"<th class='{'l' if i < 2 else ''}'>{E(h)}</th>"
                     for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    for group, display in table.rows:
        tds = [f"<td class='l'>{E(group)}</td>", f"<td class='l'>{E(display)}</td>"]
        for s, t in table.pairings:
            cell = table.cells[(display, s, t)]
            for m in table.metrics:
                text = E(cell_text(table, display, s, t, m))
                if cell.summary is None:
                    tds.append(f"<td class='empty'>{text}</td>")
                    continue
                mean = cell.summary[f"{m}_mean"]
                tip = (f"95% CI [{_fmt(cell.summary.get(f'{m}_ci_lo'))}, "
                       f"{_fmt(cell.summary.get(f'{m}_ci_hi'))}]; n = {cell.summary['n']} "
                       f"images, {cell.summary.get('n_seeds', 1)} seed(s); runs: "
                       + ", ".join(cell.run_ids) + "; hparam trials: "
                       + ", ".join(str(t) for t in cell.trials))
                comp = table.markers.get((display, s, t, m))
                if comp is not None:
                    tip += f"; Holm p vs {table.baseline} = {_fmt(comp.p_holm, 4)}"
                cls = "best" if cell.ranked and best.get((s, t, m)) == mean else \
                    "" if cell.ranked else "empty"  # "not learned": greyed like an empty cell
                link = f"#{_anchor(cell.run_ids[0])}" if cell.run_ids else "#provenance"
                tds.append(f"<td class='{cls}' data-v='{_fmt(mean, 6)}' title='{E(tip)}'>"
                           f"<a href='{E(link)}'>{text}</a></td>")
        rank = table.ranks.get(display)
        tds.append(f"<td data-v='{_fmt(rank, 6)}'>{_fmt(rank)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
        if any((display, s, t) in table.paper for s, t in table.pairings):
            pcells = [f"<td>{_fmt(table.paper.get((display, s, t), {}).get(m))}</td>"
                      for s, t in table.pairings for m in table.metrics]
            out.append(f"<tr class='paper'><td class='l'>{E(group)}</td><td class='l'>"
                       f"{E(display)} (paper)</td>" + "".join(pcells) + "<td></td></tr>")
    out.append("</tbody></table>")
    out += [_note_list(title, items) for title, items in (
        ("Unreadable run folders (skipped):", table.problems),
        ("Left out (an older version of the test set):", table.stale)) if items]
    return "\n".join(out)


def _note_list(title: str, items: list[str]) -> str:
    """A leaderboard's footnote list (as the markdown table has it), escaped."""
    return (f"<p class='note'>{E(title)}</p><ul class='note'>"
            + "".join(f"<li>{E(i)}</li>" for i in items) + "</ul>")


def render_frame(frame: pd.DataFrame, title: str, note: str = "") -> str:
    """Any DataFrame as an escaped, sortable HTML table."""
    if not len(frame):
        return ""
    head = "".join(f"<th class='l'>{E(str(c))}</th>" for c in frame.columns)
    body = []
    for rec in frame.to_dict("records"):
        tds = []
        for v in rec.values():
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            tds.append(f"<td data-v='{_fmt(float(v), 6)}'>{E(_fmt(v))}</td>" if num
                       else f"<td class='l'>{E(str(v))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<h3>{E(title)}</h3>" + (f"<p class='note'>{E(note)}</p>" if note else "")
            + f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _provenance(got: Collected) -> pd.DataFrame:
    recs = provenance(got.runs, sorted(got.runs), got.choices)
    frame = pd.DataFrame(recs)
    if len(got.cases) and "target_fingerprint" in got.cases and len(frame):
        fps = got.cases.groupby("run_id").apply(
            lambda g: ", ".join(sorted({f"{t}={f}" for t, f in zip(
                g["target"], g["target_fingerprint"], strict=True)})), include_groups=False)
        frame["target_fingerprints"] = frame["run_id"].map(fps).fillna("")
    return frame


def _provenance_html(frame: pd.DataFrame) -> str:
    if not len(frame):
        return ""
    cols = list(frame.columns)
    rows = []
    for rec in frame.to_dict("records"):
        rows.append(f"<tr id='{E(_anchor(str(rec['run_id'])))}'>" + "".join(
            f"<td class='l'>{E(str(rec[c]))}</td>" for c in cols) + "</tr>")
    return ("<h2 id='provenance'>Provenance</h2><p class='note'>Every run behind a number: "
            "click a cell above to jump to its run.</p><table class='sortable'><thead><tr>"
            + "".join(f"<th class='l'>{E(c)}</th>" for c in cols) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<figure><img alt='{E(alt)}' src='data:image/png;base64,{data}'></figure>"


def build_html(store: ResultsStore, out_dir: Path, registered: dict[str, tuple[str, str]]
               | None = None, with_paper: bool = True, baseline: str | None = None,
               aggregate: str = "image", n_boot: int = 1000,
               galleries: list[PairingGallery] | None = None) -> Path:
    """Write `out_dir/index.html` (and the PNGs it embeds) from the stored runs; `galleries`
    (`--cases`): the case gallery of each pairing, already written next to the page."""
    got = collect(store, "source-val")
    parts, sections = [], []
    for layout in ("1", "2", "ablation", "matrix"):
        tables = build_tables(store, registered, with_paper=with_paper and layout != "matrix",
                              layout=layout, aggregate=aggregate, baseline=baseline,
                              n_boot=n_boot, collected=got)
        parts += [render_table(t) if layout != "matrix" else _matrix_html(t) for t in tables]
    kinds = sorted(set(zip(got.cases["data_kind"], got.cases["profile"], strict=True))) \
        if len(got.cases) else []
    for kind, profile in kinds:
        for name, path in all_plots(got, out_dir, kind, profile).items():
            sections.append(f"<h3>{E(name)} — {E(kind)} / {E(profile)}</h3>"
                            + _img(path, f"{name} {kind} {profile}"))
    oracle = collect(store, "oracle")
    oracle_html = "".join(render_table(t) for t in build_tables(
        store, registered, layout="1", aggregate=aggregate, selection="oracle",
        n_boot=n_boot, collected=oracle)) if len(oracle.cases) and \
        "last" in set(oracle.cases.get("checkpoint", [])) else ""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stamp = f"calcbench {_version()}, generated {now}, {len(got.runs)} runs"
    page = ["<!doctype html><html><head><meta charset='utf-8'>",
            "<title>calcbench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
            "<h1>calcbench leaderboard</h1>", f"<p class='note'>{E(stamp)}</p>",
            "<h2>Leaderboards</h2>", *parts,
            render_frame(cost_table(got), "Cost", "Params from run.json; train seconds from "
                         "run.json; infer_ms: median per image; peak memory: CUDA max "
                         "allocated or CPU process peak RSS (see peak_mem_kind)."),
            render_frame(lesion_table(got), "Lesion (cluster) level detection",
                         "Overlap or centroids ≤ 5 mm; rates in %; froc_score: mean "
                         "sensitivity at 0.25-4 FP/image."),
            render_frame(branch_table(got), "Branch choice"),
            "<h2>Figures</h2>", *sections]
    if galleries is not None:
        page += _galleries_html(galleries)
    if oracle_html:
        page += ["<h2>Oracle model selection (target test) — NOT a valid protocol</h2>",
                 "<p class='note'>Per run and target, the checkpoint (best/last) with the "
                 "higher target-test DSC: an upper bound only.</p>", oracle_html]
    page += [_provenance_html(_provenance(got)), f"<script>{SCRIPT}</script></body></html>"]
    path = out_dir / "index.html"
    atomic_write_text(path, "\n".join(page))
    return path


def _galleries_html(galleries: list[PairingGallery]) -> list[str]:
    """The "Case galleries" section: per pairing its heading, the embedded PNG (or why there
    is none) and a note of the methods left out."""
    from benchmark.gallery import PREDICTION_COLOUR, REFERENCE_COLOUR

    out = ["<h2 id='cases'>Case galleries</h2>",
           "<p class='note'>Per cross-domain pairing: test cases chosen by the first method's "
           "per-case DSC (worst, median and best; ties by image id; images with an empty "
           f"reference left out). Reference contour {E(REFERENCE_COLOUR)} (cyan), each "
           f"method's thresholded best.pt prediction {E(PREDICTION_COLOUR)} (magenta); every "
           "cell's DSC is the stored per-case value. bench show cases draws one pairing "
           "with other rules.</p>"]
    if not galleries:
        out.append("<p class='note'>No cross-domain evaluations to draw.</p>")
    for g in galleries:
        out.append(f"<h3>{E(g.heading)}</h3>")
        if g.path is not None:
            out.append(_img(g.path, f"case gallery {g.heading}"))
        if g.problem:
            out.append(f"<p class='note'>{E(g.problem)}</p>")
    return out


def _matrix_html(table: Table) -> str:
    metric = table.metrics[0]
    sources = sorted({s for s, _ in table.pairings})
    targets = sorted({t for _, t in table.pairings})
    recs = []
    for _g, display in table.rows:
        for s in sources:
            if not any(table.cells.get((display, s, t), None) and
                       table.cells[(display, s, t)].summary for t in targets):
                continue
            rec = {"method": display, "source": s}
            for t in targets:
                rec[t] = cell_text(table, display, s, t, metric) if (display, s, t) in \
                    table.cells else "—"
            recs.append(rec)
    return render_frame(pd.DataFrame(recs), f"{metric}: source x target matrix — "
                        f"{table.kind} / {table.profile}", "Diagonal: in-domain source test.")


def _version() -> str:
    try:
        return metadata.version("calcbench")
    except metadata.PackageNotFoundError:
        return "unknown"
