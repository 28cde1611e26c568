"""`bench predict`: a stored run's masks, overlays and DICOM SEGs on the input's own grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmark.cli_common import (
    CacheOpt,
    NoProgressOpt,
    ResultsOpt,
    ThreadsOpt,
    _dirs,
    _reporter,
    _threads,
    app,
    console,
    user_errors,
)


@app.command()
@user_errors
def predict(
    input_: Annotated[str, typer.Option(
        "--input", help="a domain name (its --split), a folder or manifest CSV of DICOM / "
        "PNG / TIFF files, or one file")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    run: Annotated[str | None, typer.Argument(
        help="run id (a folder under results/runs); or name it with --method/--source")] = None,
    method: Annotated[str | None, typer.Option(help="name the run: its method")] = None,
    source: Annotated[str | None, typer.Option(help="name the run: its source domain")] = None,
    seed: Annotated[int, typer.Option(help="name the run: its seed", min=0, max=2**31 - 1)] = 0,
    profile: Annotated[str, typer.Option(help="name the run: its profile")] = "quick",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="name the run: its --set overrides")] = None,
    split: Annotated[str, typer.Option(
        help="for a domain input: test | val | train | all")] = "test",
    dicom_seg: Annotated[bool, typer.Option(
        help="write a DICOM SEG next to each DICOM input's masks")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: ThreadsOpt = None,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Predict every image of --input with a trained run, back on the original pixel grid:
    mask and overlay PNGs, DICOM SEG for DICOM inputs, predictions.csv; resumable."""
    from benchmark.errors import UserError
    from benchmark.predict import (
        items_from_domain,
        items_from_path,
        source_preprocess,
    )
    from benchmark.predict import (
        predict as run_predict,
    )
    from benchmark.store import ResultsStore
    from benchmark.trained import load_trained, resolve_run_id

    if not input_.strip():
        raise UserError("bench predict: --input is empty (give a domain name, a folder, a "
                        "manifest CSV or a file)")
    _threads(threads)
    results, cache = _dirs(results_dir, cache_dir)
    store = ResultsStore(results)
    run_id = resolve_run_id(store, run, method, source, seed, profile, list(set_ or []), cache)
    trained = load_trained(store, run_id, device)
    reporter = _reporter(no_progress)
    if Path(input_).expanduser().exists():
        items, problems, _ = items_from_path(Path(input_).expanduser())
        cfg = source_preprocess(trained)
    else:
        items, cfg, problems = items_from_domain(input_, split, trained, cache, reporter)
    for line in problems:
        console.print(f"[yellow]skipped {line}[/yellow]", highlight=False)
    outcome = run_predict(trained, items, cfg, out.expanduser().absolute(), reporter,
                          dicom_seg=dicom_seg)
    per = (f"{outcome.images_per_second:.2f} images/s, "
           f"{outcome.seconds / outcome.predicted:.3f} s per image end to end"
           if outcome.predicted else "nothing new to predict")
    console.print(f"run {run_id}: predicted {outcome.predicted} image(s), skipped "
                  f"{outcome.skipped} already done ({per}); threshold {trained.threshold:g}; "
                  f"{len(outcome.rows)} row(s) in {outcome.out_dir / 'predictions.csv'}",
                  highlight=False, soft_wrap=True)
    if problems or any(p.startswith("skipped") for p in outcome.problems):
        raise typer.Exit(1)
