"""`bench show ...`: figures drawn from stored runs (`bench show cases`: the case gallery of
benchmark/gallery.py)."""

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
    console,
    show_app,
    user_errors,
)


@show_app.command("cases")
@user_errors
def show_cases(
    source: Annotated[str, typer.Option("--source", "-s", help="training domain of the runs")],
    target: Annotated[str, typer.Option("--target", "-t", help="target domain whose test "
                                        "images are shown")],
    methods: Annotated[str, typer.Option(
        "--methods", "-m", help="comma-separated methods, one column each (e.g. unet,mlnnet)")],
    seed: Annotated[int, typer.Option(help="training seed of the runs", min=0,
                                      max=2**31 - 1)] = 0,
    profile: Annotated[str, typer.Option(help="smoke | quick | paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="the runs' --set key=value overrides (they name the run)")] = None,
    cases: Annotated[str | None, typer.Option(
        "--cases", help="which cases: worst:K, median:K, best:K (by the reference method's "
        "per-case DSC) and disagree:K (largest spread across the methods), comma-separated; "
        "default worst:3,median:3,best:3")] = None,
    image_ids: Annotated[str | None, typer.Option(
        "--image-ids", help="comma-separated test image ids instead of --cases")] = None,
    reference: Annotated[str | None, typer.Option(
        help="method whose per-case DSC ranks the cases (default: the first of --methods)")
    ] = None,
    include_empty: Annotated[bool, typer.Option(
        "--include-empty", help="also rank images whose reference mask is empty (their DSC "
        "is trivially 0 or 100)")] = False,
    whole: Annotated[bool, typer.Option(
        "--whole", help="one patient's views in the original geometry (bench predict's "
        "mapping), like the paper's Fig. 6, instead of test tiles")] = False,
    patient: Annotated[str | None, typer.Option(
        help="--whole: the patient (default: the test patient with the most views)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="PNG path (default: <results>/figures/cases-<source>-<target>-s<seed>.png)")
    ] = None,
    results_dir: ResultsOpt = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: ThreadsOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Draw test cases of TARGET: the image, the reference and each method's prediction
    (regenerated from best.pt), a row per case; each cell shows its stored DSC."""
    from benchmark.gallery import GalleryRequest, case_gallery
    from benchmark.sweep import parse_csv

    _threads(threads)
    results, cache = _dirs(results_dir, cache_dir)
    req = GalleryRequest(
        source=source, target=target, methods=parse_csv(methods, "--methods"),
        results_dir=results, cache_dir=cache, seed=seed, profile=profile,
        sets=list(set_ or []), cases=cases,
        image_ids=parse_csv(image_ids, "--image-ids") if image_ids is not None else None,
        reference=reference, include_empty=include_empty,
        out=out.expanduser().absolute() if out else None, device=device)
    if whole:
        from benchmark.errors import UserError
        from benchmark.gallery_whole import whole_gallery

        if cases is not None or image_ids is not None:
            raise UserError("--whole shows one patient's views: give --patient, not --cases "
                            "or --image-ids")
        layout = whole_gallery(req, patient, _reporter(no_progress))
    else:
        layout = case_gallery(req, _reporter(no_progress))
    console.print(f"{len(layout.rows)} case(s) x {len(layout.columns)} columns "
                  f"({', '.join(layout.columns)}); {layout.title}", highlight=False,
                  soft_wrap=True)
    console.print(f"wrote {layout.path}", highlight=False, soft_wrap=True)
