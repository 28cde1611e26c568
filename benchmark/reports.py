"""`bench leaderboard`: build the requested layout (or the HTML page) and write its files.

Kept out of cli.py so the command stays a thin option parser and the logic is testable
without typer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.collect import check_selection, collect
from benchmark.errors import UserError
from benchmark.io import atomic_write_text
from benchmark.leaderboard import LAYOUTS, RENDERERS, build_tables, render_markdown
from benchmark.progress import NullReporter, Reporter
from benchmark.sections import (
    branch_table,
    cost_table,
    lesion_table,
    render_branch_markdown,
    render_cost_markdown,
    render_lesion_markdown,
)
from benchmark.stats import check_aggregation
from benchmark.store import ResultsStore

FORMATS = (*RENDERERS, "html")


@dataclass
class LeaderboardRequest:
    """Everything `bench leaderboard` was asked for."""

    results_dir: Path
    out_dir: Path
    fmt: str = "md"
    layout: str = "1"
    with_paper: bool = False
    aggregate: str = "image"
    selection: str = "source-val"
    baseline: str | None = None
    metric: str = "DSC"
    n_boot: int = 1000
    costs: bool = False
    lesions: bool = False
    branches: bool = False
    plots: bool = False
    ci: bool = False
    cases: bool = False  # html: a case gallery per pairing (benchmark.gallery)
    cache_dir: Path | None = None  # the data cache the galleries read the target images from
    device: str = "auto"  # where the galleries regenerate predictions


def make_leaderboards(req: LeaderboardRequest, registered: dict[str, tuple[str, str]],
                      reporter: Reporter | None = None) -> tuple[str, list[Path]]:
    """Render and write; returns (markdown to print, written paths). `reporter` shows the
    progress of `--cases` (which regenerates predictions)."""
    if req.fmt not in FORMATS:
        raise UserError(f"--format '{req.fmt}': expected one of {', '.join(FORMATS)}")
    if req.cases and req.fmt != "html":
        raise UserError(f"--cases embeds case galleries in the HTML page: add --format html "
                        f"(not '{req.fmt}'), or draw one pairing with `bench show cases`")
    if req.layout not in LAYOUTS:
        raise UserError(f"--table '{req.layout}': expected one of {', '.join(LAYOUTS)}")
    if req.n_boot < 1:
        raise UserError(f"--n-boot {req.n_boot}: expected at least 1 bootstrap replicate")
    check_aggregation(req.aggregate)
    check_selection(req.selection)
    store = ResultsStore(req.results_dir)
    if req.fmt == "html":
        from benchmark.html_report import build_html

        if not store.list_runs()[0]:
            raise UserError(f"no runs under '{store.runs_dir}'; run e.g. `bench run --method "
                            "unet --source ffdm --target dbt` first")
        galleries = None
        if req.cases:
            from benchmark.gallery import pairing_galleries
            from benchmark.paths import default_cache_dir

            galleries = pairing_galleries(store, req.out_dir, req.cache_dir or
                                          default_cache_dir(), reporter or NullReporter(),
                                          req.device)
        path = build_html(store, req.out_dir, registered, with_paper=True,
                          baseline=req.baseline, aggregate=req.aggregate, n_boot=req.n_boot,
                          galleries=galleries)
        return "", [path, *(g.path for g in galleries or [] if g.path is not None)]
    got = collect(store, req.selection)
    tables = build_tables(store, registered, with_paper=req.with_paper, layout=req.layout,
                          aggregate=req.aggregate, selection=req.selection,
                          baseline=req.baseline, metric=req.metric, n_boot=req.n_boot,
                          collected=got)
    if not tables:
        skipped = (f" ({len(got.problems)} unreadable run folder(s) skipped; first: "
                   f"{got.problems[0]})" if got.problems else "")
        raise UserError(f"no finished cross-domain evaluations under '{store.runs_dir}'"
                        f"{skipped}; run e.g. `bench run --method unet --source ffdm "
                        "--target dbt` first")
    for table in tables:
        table.show_ci = req.ci
    extra = "".join(
        "\n" + text for flag, text in (
            (req.costs, render_cost_markdown(cost_table(got)) if req.costs else ""),
            (req.lesions, render_lesion_markdown(lesion_table(got)) if req.lesions else ""),
            (req.branches, render_branch_markdown(branch_table(got)) if req.branches else ""))
        if flag and text)
    paths = []
    for table in tables:
        text = RENDERERS[req.fmt](table)
        if req.fmt == "md":
            text += extra
        path = req.out_dir / f"{table.slug}.{req.fmt}"
        atomic_write_text(path, text)
        paths.append(path)
    if req.plots:
        from benchmark.plots import all_plots

        for table in tables:
            paths += all_plots(got, req.out_dir, table.kind, table.profile).values()
    shown = "\n".join(render_markdown(t) for t in tables) + extra
    return shown, paths
