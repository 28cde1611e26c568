"""The `bench` command line (typer + rich). User mistakes exit with code 2 and one line."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from benchmark.cli_common import (
    CacheOpt,
    EvalLastOpt,
    NoProgressOpt,
    ResultsOpt,
    ThreadsOpt,
    _dirs,
    _reporter,
    _threads,
    app,
    console,
    data_app,
    err_console,
    list_app,
    perf_app,
    user_errors,
)


def _print_summary(outcome: Any, title: str) -> None:
    """The result table of a run: mean ± std per target, the undefined counts, and a "not
    learned" line when the run never beat the all-background validation score."""
    import json

    from benchmark.aggregate import format_cell
    from benchmark.collect import not_learned_line

    table = Table(title=title)
    for col in ("target", "images", "TPR (%)", "Pr (%)", "DSC (%)", "HD (mm)", "ASD (mm)"):
        table.add_column(col, justify="left" if col == "target" else "right")
    notes = []
    for rec in outcome.summary.to_dict("records"):
        cells = []
        for m in ("TPR", "Pr", "DSC", "HD", "ASD"):
            cells.append(format_cell(rec, m))
            if rec.get(f"{m}_undefined"):
                notes.append(f"{m} undefined on {rec[f'{m}_undefined']} {rec['target']} images")
        table.add_row(str(rec["target"]), str(rec["n"]), *cells)
    console.print(table)
    if notes:
        console.print("excluded from the means (empty reference or prediction): "
                      + "; ".join(notes), highlight=False)
    console.print(f"ASD is the symmetric ASSD. run folder: {outcome.run_dir}", highlight=False)
    info_path = Path(outcome.run_dir) / "run.json"
    line = not_learned_line(json.loads(info_path.read_text())) if info_path.is_file() else None
    if line:
        console.print(f"[bold red]{line}[/bold red]", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="method name (bench list methods)")],
    source: Annotated[str, typer.Option("--source", "-s", help="training domain or TOML path")],
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="target domain(s); repeat for several")] = None,
    profile: Annotated[str, typer.Option(help="smoke | quick | paper")] = "quick",
    seed: Annotated[int, typer.Option(help="training seed", min=0, max=2**31 - 1)] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a profile field or method hparam: key=value")] = None,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the networks (opt-in; measure with bench perf train "
                          "--compile)")] = False,
    eval_last: EvalLastOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Train METHOD on SOURCE (or reuse a finished training) and evaluate on every TARGET."""
    from benchmark.runner import RunRequest
    from benchmark.runner import run as do_run

    _threads(threads)
    results, cache = _dirs(results_dir, cache_dir)
    req = RunRequest(method=method, source=source, targets=list(target or []), profile=profile,
                     seed=seed, device=device, sets=list(set_ or []), results_dir=results,
                     cache_dir=cache, compile=compile_, eval_last=eval_last)
    outcome = do_run(req, _reporter(no_progress))
    _print_summary(outcome, f"{method} trained on {source} ({profile} profile, seed {seed})")
    if outcome.reused:
        from benchmark.store import ResultsStore

        note = _reuse_note(ResultsStore(results).read(outcome.run_id).info, device)
        if note:
            console.print(f"[yellow]{note}[/yellow]", highlight=False, soft_wrap=True)


def _reuse_note(info: dict[str, Any], device: str) -> str | None:
    """A note when a reused CPU training (`info`: its run.json) ran with another torch thread
    count or other SIMD kernels than this process: its numbers stand, but a fresh training
    here would not reproduce them. (Here, not in the runner: the runner's code hash is part of
    every run id.)"""
    import torch

    from benchmark import numerics
    from benchmark.runner import resolve_device

    if resolve_device(device).type != "cpu" or not str(info.get("device", "")).startswith("cpu"):
        return None
    then, now = info.get("torch_threads"), torch.get_num_threads()
    differs = []
    if then not in (None, now):
        differs.append(f"with {then} CPU thread(s) (this process has {now}; --threads {then} "
                       "reproduces them)")
    kernels_then, kernels_now = info.get("numerics"), numerics.describe()
    keys = ("numpy_simd", "torch_cpu_capability")
    if kernels_then and any(kernels_then.get(k) != kernels_now[k] for k in keys):
        then_s = ", ".join(str(kernels_then.get(k)) for k in keys)
        now_s = ", ".join(str(kernels_now[k]) for k in keys)
        differs.append(f"on other SIMD kernels (numpy, torch: {then_s}; here {now_s}; "
                       "CALCBENCH_PORTABLE=1 on both machines pins them)")
    if not differs:
        return None
    return (f"note: run {info.get('run_id', '?')} was trained {' and '.join(differs)}; its "
            "numbers stand, but training it again here would give different ones "
            "(floating-point summation order, see docs/guide/cli.md#reproducibility)")


@app.command("eval")
@user_errors
def eval_(
    run_id: Annotated[str, typer.Option("--run", help="run id (a folder under results/runs)")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="target domain(s)")],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    eval_last: EvalLastOpt = False,
) -> None:
    """Evaluate a stored run on other target domains."""
    from benchmark.runner import eval_run

    results, cache = _dirs(results_dir, cache_dir)
    outcome = eval_run(run_id, list(target), results, cache, device, _reporter(no_progress),
                       eval_last=eval_last)
    _print_summary(outcome, f"run {run_id}")


@list_app.command("methods")
@user_errors
def list_methods(
    hparams: Annotated[bool, typer.Option(
        "--hparams", help="each method's hyper-parameters with their valid values")] = False,
) -> None:
    """Registered methods: name, paper display name, group, provider."""
    from benchmark.registry import METHODS

    if hparams:
        from benchmark.config import show_value
        from benchmark.options_doc import hparam_rows

        table = Table(title="hyper-parameters (--set key=value; defaults of the quick profile)")
        for col in ("method", "key", "default", "valid values"):
            table.add_column(col)
        for info in sorted(METHODS.all().values(), key=lambda i: i.name):
            for k, (key, default, valid, _) in enumerate(hparam_rows(info.cls)):
                table.add_row(info.name if k == 0 else "", key, show_value(default), valid)
        console.print(table)
        return

    table = Table(title="methods")
    for col in ("name", "display name", "group", "provider", "version"):
        table.add_column(col)
    for info in sorted(METHODS.all().values(), key=lambda i: i.name):
        table.add_row(info.name, info.display_name, info.group, info.provider.package,
                      info.provider.version)
    console.print(table)


@list_app.command("domains")
@user_errors
def list_domains() -> None:
    """Registered domains and `bench data add` bindings: name, kind, provider."""
    from benchmark.registry import DOMAINS
    from datasets.real.bindings import config_path, load_bindings

    bindings = load_bindings()
    table = Table(title="domains")
    for col in ("name", "kind", "provider", "version", "note"):
        table.add_column(col)
    for info in sorted(DOMAINS.all().values(), key=lambda i: i.name):
        if info.name in bindings:
            continue  # a binding replaces the built-in name (listed below)
        note = "synthetic stand-in for the real dataset" if info.synthetic_stand_in else ""
        kind = "synthetic" if info.provider.origin == "datasets.synthetic" else "plugin"
        table.add_row(info.name, kind, info.provider.package, info.provider.version, note)
    for name in sorted(bindings):
        b = bindings[name]
        table.add_row(name, "real", f"bench data add ({b.format})", "",
                      f"{b.root} (bound in {config_path()})")
    console.print(table)


@data_app.command("show")
@user_errors
def data_show(
    name: Annotated[list[str], typer.Argument(help="domain name(s) or TOML path(s)")],
    image_size: Annotated[int, typer.Option(help="pixels per side", min=16, max=8192)] = 128,
    out: Annotated[Path | None, typer.Option(
        help="contact sheet PNG path (default: <results>/data/contact-<names>.png)")] = None,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    augment: Annotated[str | None, typer.Option(
        help="also show METHOD's training views of the same images (e.g. bigaug)")] = None,
) -> None:
    """Parameters, counts, spacing and intensity statistics; writes a PNG contact sheet."""
    import json

    from benchmark.registry import resolve_domain, stand_in_note
    from datasets.report import contact_sheet, intensity_stats

    results, cache = _dirs(results_dir, cache_dir)
    reporter = _reporter(no_progress)
    datas = []
    for spec in name:
        domain = resolve_domain(spec)
        note = stand_in_note(spec, domain)
        if note:
            console.print(f"[yellow]{note}[/yellow]")
        data = domain.load(image_size, cache, reporter)
        datas.append(data)
        console.rule(f"{spec}")
        console.print_json(json.dumps(domain.describe(), default=str))
        stats = intensity_stats(data)
        table = Table(title=f"{spec} at {image_size}px")
        table.add_column("statistic")
        table.add_column("value", justify="right")
        table.add_row("images", str(len(data)))
        table.add_row("patients", str(len(set(data.patient_ids))))
        table.add_row("spacing (row, col) mm", ", ".join(f"{v:.4f}" for v in
                                                          data.spacing_mm.mean(0)))
        for k, v in stats.items():
            if k in {"domain", "images", "image_size", "spacing_mm"}:
                continue  # already shown above
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) and not math.isnan(v)
                          else str(v))
        console.print(table)
    path = out or results / "data" / f"contact-{'-'.join(Path(n).stem for n in name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    views = None
    if augment:
        from benchmark.augment_preview import method_views

        views = method_views(augment, image_size)
    contact_sheet(datas, path, views=views)
    console.print(f"contact sheet: {path}")


@app.command()
@user_errors
def leaderboard(
    format_: Annotated[str, typer.Option("--format", help="md | csv | tex | html")] = "md",
    with_paper: Annotated[bool, typer.Option(
        "--with-paper", help="add the paper's published numbers in labelled rows")] = False,
    table: Annotated[str, typer.Option(
        help="layout: 1 | 2 | ablation | matrix (paper Tables 1-3, source x target)")] = "1",
    aggregate: Annotated[str, typer.Option(
        help="unit of the mean/std/CI: image (paper) | patient | pooled")] = "image",
    select: Annotated[str, typer.Option(
        "--select", help="model selection: source-val (best.pt) | last | oracle")] = "source-val",
    baseline: Annotated[str | None, typer.Option(
        help="paired Wilcoxon + Holm of every method vs this one (e.g. unet)")] = None,
    metric: Annotated[str, typer.Option(help="metric of the matrix layout")] = "DSC",
    n_boot: Annotated[int, typer.Option(help="bootstrap replicates for the 95% CIs")] = 1000,
    costs: Annotated[bool, typer.Option("--costs", help="append the cost table (md)")] = False,
    lesions: Annotated[bool, typer.Option(
        "--lesions", help="append lesion-level detection and FROC scores (md)")] = False,
    branches: Annotated[bool, typer.Option(
        "--branches", help="append how often each branch was chosen (md)")] = False,
    plots: Annotated[bool, typer.Option("--plots", help="also write the seaborn figures")
                     ] = False,
    ci: Annotated[bool, typer.Option("--ci", help="show the 95% bootstrap CI in each cell")
                  ] = False,
    cases: Annotated[bool, typer.Option(
        "--cases", help="html: embed a case gallery per pairing (predictions regenerated "
        "from best.pt; see bench show cases)")] = False,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str, typer.Option(help="--cases: auto | cpu | cuda")] = "auto",
    out_dir: Annotated[Path | None, typer.Option(
        help="where to write (default: <results>/leaderboards)")] = None,
) -> None:
    """Regenerate leaderboards from the stored runs (paper layouts, or one HTML page)."""
    from benchmark.registry import METHODS
    from benchmark.reports import LeaderboardRequest, make_leaderboards

    results, cache = _dirs(results_dir, cache_dir)
    registered = {i.display_name: (i.group, i.name) for i in METHODS.all().values()
                  if i.group in ("P1", "P2", "P3", "ours", "ablation")}
    req = LeaderboardRequest(results, out_dir or results / "leaderboards", format_, table,
                             with_paper, aggregate, select, baseline, metric, n_boot, costs,
                             lesions, branches, plots, ci, cases, cache, device)
    shown, paths = make_leaderboards(req, registered, _reporter(False) if cases else None)
    if shown:
        typer.echo(shown)  # plain text: markdown must not be wrapped or styled
    for p in paths:
        typer.echo(f"wrote {p}")


@perf_app.command("metrics")
@user_errors
def perf_metrics(
    repeats: Annotated[int, typer.Option(
        help="timed repeats on 512x512 (half as many, at least 3, on 2457x1996)",
        min=1, max=1000)] = 5,
) -> None:
    """Time our metrics against medpy (hd+hd95+asd+assd) and check they agree."""
    from benchmark.perf.metrics_perf import print_metrics_perf, run_metrics_perf

    df = run_metrics_perf(repeats_small=repeats, repeats_large=max(3, repeats // 2))
    print_metrics_perf(df, console)


@perf_app.command("mlnnet")
@user_errors
def perf_mlnnet(
    profile: Annotated[str, typer.Option(help="profile whose model sizes are used")] = "quick",
    image_size: Annotated[int, typer.Option(help="input size in pixels", min=16, max=8192)
                          ] = 128,
    batch: Annotated[int, typer.Option(help="images per batch (per branch)", min=1, max=4096)
                     ] = 8,
    repeats: Annotated[int, typer.Option(help="timed repeats (median reported)", min=1,
                                         max=1000)] = 5,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
) -> None:
    """Batched K-branch evaluation vs K forwards, and mlnnet's training step vs swinunet's."""
    from benchmark.config import get_profile
    from benchmark.perf.mlnnet_perf import print_mlnnet_perf, run_mlnnet_perf
    from benchmark.runner import resolve_device

    get_profile(profile)
    dev = resolve_device(device)
    print_mlnnet_perf(run_mlnnet_perf(profile, image_size, batch, repeats, str(dev)), console)


@perf_app.command("train")
@user_errors
def perf_train(
    method: Annotated[list[str], typer.Option(
        "--method", "-m", help="method to measure; repeat for several, or 'all'")],
    profile: Annotated[str | None, typer.Option(
        help="profile whose sizes are used (default: paper on CUDA, quick on CPU)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    steps: Annotated[int, typer.Option(help="timed training steps and evaluation batches",
                                       min=1, max=10_000)] = 5,
    warmup: Annotated[int, typer.Option(help="untimed steps first (compilation, autotuning)",
                                        min=0, max=10_000)] = 2,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the networks")]
    = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a profile field, e.g. image_size=64 batch_size=2")] = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Train images/s, eval images/s and peak memory per method (CUDA max allocated, or the
    peak RSS of a process measuring that method alone on CPU)."""
    from benchmark.config import get_profile, split_overrides
    from benchmark.perf.train_perf import default_profile, print_train_perf, run_train_perf
    from benchmark.runner import resolve_device

    dev = resolve_device(device)
    base = get_profile(profile or default_profile(dev))
    over = split_overrides(list(set_ or []), base, []).profile
    rows = run_train_perf(list(method), dev, base.name, steps, warmup, compile_,
                          _reporter(no_progress), over)
    print_train_perf(rows, dev, console, compile_)
    if any(isinstance(r, str) for r in rows):
        raise typer.Exit(1)


@perf_app.command("shift")
@user_errors
def perf_shift(
    method: Annotated[str, typer.Option(help="method to train")] = "unet",
    source: Annotated[str, typer.Option(help="source domain")] = "ffdm",
    target: Annotated[list[str] | None, typer.Option(
        help="target domain; repeat for several (default: dbt)")] = None,
    seeds: Annotated[str, typer.Option(help="training seeds: '0,1,2' or a range '0-9'")] = "0-9",
    in_domain: Annotated[str, typer.Option(
        help="stand-ins also trained on (first seed) for their CI half-width; '' for none")
    ] = "dbt,cbis-ddsm",
    profile: Annotated[str, typer.Option(help="smoke | quick | paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value override")] = None,
    results_dir: Annotated[Path, typer.Option(
        "--results-dir", help="results folder of these runs (kept apart from the "
        "leaderboards' runs; a rerun reuses finished runs)")] = Path("results/shift-check"),
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Per-seed in-domain and cross-domain DSC, the drop, and each stand-in's test-split CI
    half-width, against the shift targets."""
    from benchmark.perf.shift_check import print_shift_check, run_shift_check, shift_targets
    from benchmark.sweep import parse_csv, parse_seeds

    _threads(threads)
    results, cache = _dirs(results_dir, cache_dir)
    result = run_shift_check(method, source, list(target or ["dbt"]), parse_seeds(seeds),
                             profile, results, cache,
                             parse_csv(in_domain, "--in-domain") if in_domain else [],
                             _reporter(no_progress), list(set_ or []))
    print_shift_check(result, console)
    if any(line.startswith("MISS") for line in shift_targets(result)):
        raise typer.Exit(1)


from benchmark import (  # noqa: E402  (registering commands on app, after it is built)
    cli_data,  # noqa: F401  (registers data add/list/verify, perf data)
    cli_predict,  # noqa: F401  (registers predict)
    cli_pretrain,  # noqa: F401  (registers pretrain)
    cli_show,  # noqa: F401  (registers show cases)
)
from benchmark.cli_sweep import sweep_app  # noqa: E402

app.add_typer(sweep_app, name="sweep")


def main() -> None:
    """Console-script entry point."""
    from benchmark import check_datasets_package

    problem = check_datasets_package()
    if problem:
        err_console.print(f"[red]error:[/red] {problem}", highlight=False)
        sys.exit(2)
    sys.exit(run_app(sys.argv[1:]))


def run_app(args: list[str]) -> int:
    """Run the CLI on `args` and return the exit code; a click usage error (unknown, missing
    or badly typed option) is one line naming the command and the option, exit 2."""
    try:
        rv = app(args=args, prog_name="bench", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # typer's click: usage and parameter errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # `bench list` alone: the help, as before
            return 0
        where = ctx.command_path if ctx is not None else "bench"
        message = " ".join(exc.format_message().split())
        err_console.print(f"[red]error:[/red] {where}: {message} (see {where} --help)",
                          highlight=False, soft_wrap=True)
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    # `python -m benchmark.cli`: run the imported module's app, on which cli_data and cli_sweep
    # registered their commands (this __main__ copy has none of them)
    from benchmark.cli import main as _main

    _main()
