"""`bench pretrain`: formula-driven pretraining of a method's network (benchmark/pretrain.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from benchmark.cli_common import (
    CacheOpt,
    NoProgressOpt,
    ThreadsOpt,
    _dirs,
    _reporter,
    _threads,
    app,
    console,
    list_app,
    user_errors,
)


@app.command()
@user_errors
def pretrain(
    method: Annotated[str, typer.Option("--method", "-m",
                                        help="method name (bench list methods)")],
    profile: Annotated[str, typer.Option(
        help="smoke | quick | paper: the network's size")] = "quick",
    steps: Annotated[int | None, typer.Option(
        help="total optimisation steps (the schedule's length); default: the profile's")] = None,
    minutes: Annotated[float | None, typer.Option(
        help="alone: as many steps as fit in this many minutes (measured once, then fixed); "
             "with --steps: stop after this many minutes, resumable")] = None,
    seed: Annotated[int, typer.Option(help="pretext seed", min=0, max=2**31 - 1)] = 0,
    pretext: Annotated[str, typer.Option(
        help="regions (half the objects told by texture alone; the default, which fine-tuned "
             "best) | shapes (objects told by intensity) | textures (textured regions among "
             "plain shapes that are not targets) | fractals (encoder only: FractalDB-style "
             "classification of IFS categories)")] = "regions",
    classes: Annotated[int | None, typer.Option(
        help="fractals: the number of IFS categories (default 8 smoke, 16 quick, 1000 paper)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a method hparam that shapes the network: key=value")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="where the weights go (default: <cache>/pretrained, where "
                          "pretrained=formula looks first)")] = None,
    half: Annotated[bool, typer.Option(
        "--half", help="store the weights as float16 (half the size; the shipped files)")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(
        min=1, help="steps between resumable checkpoints (default: 1/20 of the run, <= 200)")
    ] = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Pretrain METHOD's network on formula-drawn shapes or fractals (no data); resumes after a
    kill."""
    from benchmark.pretrain import PretrainRequest
    from benchmark.pretrain import pretrain as do_pretrain

    _threads(threads)
    _, cache = _dirs(None, cache_dir)
    req = PretrainRequest(method=method, profile=profile, sets=list(set_ or []), steps=steps,
                          minutes=minutes, seed=seed, cache_dir=cache,
                          out_dir=out_dir.expanduser().absolute() if out_dir else None,
                          half=half, checkpoint_every=checkpoint_every, pretext=pretext,
                          classes=classes)
    outcome = do_pretrain(req, _reporter(no_progress))
    dsc = "-" if outcome.val_dsc is None else f"{outcome.val_dsc:.3f}"
    what = "accuracy" if pretext == "fractals" else "DSC"
    if outcome.weights is None:
        console.print(f"pretext {what} {dsc} at step {outcome.step} of {outcome.total}; rerun the "
                      f"same command to continue (work folder {outcome.work_dir})",
                      highlight=False, soft_wrap=True)
        return
    console.print(f"formula weights: {outcome.weights} ({outcome.total} steps, held-out pretext "
                  f"{what} {dsc}); manifest {outcome.weights.with_suffix('.json')}",
                  highlight=False, soft_wrap=True)


@list_app.command("pretrained")
@user_errors
def list_pretrained(
    extra: Annotated[list[Path] | None, typer.Argument(
        help="further weights files or manifests to show (e.g. a pretext variant's)")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="also draw their held-out pretext DSC against the step (PNG)")] = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Formula weights here: the cache's, the shipped ones and any given; one row each."""
    from benchmark.pretrain import known_weights, plot_curves

    _, cache = _dirs(None, cache_dir)
    rows = known_weights(cache, list(extra or []))
    table = Table(title="formula weights (pretrained=formula looks in the cache first)")
    for col in ("arch key", "where", "method", "profile", "pretext", "steps", "pretext DSC/acc",
                "dtype", "sha256"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["arch_key"], row["where"], row["method"], row["profile"],
                      row["pretext"], str(row["steps"]), row["dsc"], row["dtype"],
                      row["sha256"][:12])
    console.print(table)
    if plot is not None:
        console.print(f"curves: {plot_curves(rows, plot.expanduser().absolute())}",
                      highlight=False)
