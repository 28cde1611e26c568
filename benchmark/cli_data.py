"""`bench data add | list | remove | build | verify` and `bench perf data`: data from the CLI.

Attached to the `data` and `perf` sub-apps of benchmark.cli_common (benchmark.cli imports this
module at its end).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from benchmark.cli_common import _reporter, console, data_app, perf_app, user_errors
from benchmark.errors import UserError

FORMAT_OPTIONS = {  # option -> formats it applies to
    "abnormality": ("cbis-ddsm", "cbis-ddsm-jpeg"),
    "mask_mode": ("inbreast",),
    "point_radius_mm": ("inbreast",),
    "cluster_link_mm": ("inbreast",),
    "manifest": ("folder",),
    "spacing_mm": ("folder",),
}


@data_app.command("add")
@user_errors
def data_add(
    name: Annotated[str, typer.Argument(help="name to bind (e.g. ffdm, dbt, cbis-ddsm)")],
    format_: Annotated[str, typer.Option(
        "--format", help="cbis-ddsm | cbis-ddsm-jpeg | inbreast | folder")],
    root: Annotated[Path, typer.Option(help="the dataset's root folder")],
    abnormality: Annotated[str | None, typer.Option(
        help="CBIS-DDSM: calc (default) | mass | both")] = None,
    mask_mode: Annotated[str | None, typer.Option(
        help="INbreast: cluster (default) | calc")] = None,
    point_radius_mm: Annotated[float | None, typer.Option(
        help="INbreast: disk radius of single-point calcifications (default 0.2 mm)")] = None,
    cluster_link_mm: Annotated[float | None, typer.Option(
        help="INbreast cluster mode: linkage distance grouping calcifications (default 5)")
    ] = None,
    manifest: Annotated[str | None, typer.Option(
        help="folder: manifest CSV relative to --root (default manifest.csv)")] = None,
    spacing_mm: Annotated[float | None, typer.Option(
        help="folder: spacing for files that carry none (default 0.1 mm, with a warning)")
    ] = None,
    tiles: Annotated[int, typer.Option(help="split into tiles x tiles blocks (paper: 2)")] = 2,
    crop: Annotated[bool, typer.Option(help="crop to the breast before splitting")] = True,
    flip_right: Annotated[bool, typer.Option(
        help="mirror right breasts so every chest wall is on the left")] = True,
) -> None:
    """Bind NAME to real data; afterwards NAME means this data in every command."""
    from datasets.real.bindings import FORMATS, Binding, save_binding
    from datasets.real.domain import RealDomain

    if format_ not in FORMATS:
        raise UserError(f"--format '{format_}': expected one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise UserError(f"--root '{root}' is not a folder")
    if not 1 <= tiles <= 16:
        raise UserError(f"--tiles {tiles}: expected an integer in [1, 16]")
    for opt, mm in (("--spacing-mm", spacing_mm), ("--point-radius-mm", point_radius_mm),
                    ("--cluster-link-mm", cluster_link_mm)):
        if mm is not None and not (math.isfinite(mm) and 0 < mm <= 100):
            raise UserError(f"{opt} {mm}: expected a number of millimetres in (0, 100]")
    given = {"abnormality": abnormality, "mask_mode": mask_mode,
             "point_radius_mm": point_radius_mm, "cluster_link_mm": cluster_link_mm,
             "manifest": manifest, "spacing_mm": spacing_mm}
    options: dict[str, object] = {}
    for key, value in given.items():
        if value is None:
            continue
        if format_ not in FORMAT_OPTIONS[key]:
            raise UserError(f"--{key.replace('_', '-')} applies to "
                            f"{' / '.join(FORMAT_OPTIONS[key])}, not to {format_}")
        options[key] = value
    if tiles != 2:
        options["tiles"] = tiles
    if not crop:
        options["crop"] = False
    if not flip_right:
        options["flip_right"] = False
    binding = Binding(name, format_, str(root.resolve()), options)
    cases, problems = RealDomain(binding).adapter.scan()  # fails before saving a bad binding
    if not cases:
        first = f"; first problem: {problems[0]}" if problems else ""
        raise UserError(f"no usable case under '{root}' as {format_}{first}")
    path = save_binding(binding)
    console.print(f"bound '{name}' to {format_} data at {binding.root}: {len(cases)} case(s) "
                  f"listed, {len(problems)} problem(s) so far (config: {path})", highlight=False)
    console.print(f"run `bench data verify {name}` to decode and check every file",
                  highlight=False)


@data_app.command("list")
@user_errors
def data_list() -> None:
    """Names bound to real data (from the user config file)."""
    from datasets.real.bindings import config_path, load_bindings
    from datasets.registry import STAND_IN_NAMES

    bindings = load_bindings()
    table = Table(title=f"real data bindings ({config_path()})")
    for col in ("name", "format", "root", "options", "note"):
        table.add_column(col)
    for name, b in sorted(bindings.items()):
        opts = ", ".join(f"{k}={v}" for k, v in sorted(b.options.items()))
        note = "replaces the synthetic stand-in" if name in STAND_IN_NAMES else ""
        table.add_row(name, b.format, b.root, opts, note)
    console.print(table)
    if not bindings:
        console.print("no real data bound yet: `bench data add NAME --format ... --root ...`")


@data_app.command("remove")
@user_errors
def data_remove(name: Annotated[str, typer.Argument(help="a bound name")]) -> None:
    """Forget a binding (the data and its cache stay on disk)."""
    from datasets.real.bindings import remove_binding

    path = remove_binding(name)
    console.print(f"removed '{name}' from {path}", highlight=False)


@data_app.command("build")
@user_errors
def data_build(
    name: Annotated[list[str], typer.Argument(help="domain name(s) or TOML path(s)")],
    image_size: Annotated[int, typer.Option(help="pixels per side (quick 128, paper 512)",
                                            min=8, max=8192)] = 512,
    workers: Annotated[int | None, typer.Option(
        help="build processes (default: the cores this process may use)", min=1, max=256)
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="data cache (default: $CALCBENCH_CACHE or ~/.cache/calcbench)")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Build (or finish building) the shard cache of each domain at --image-size, in parallel;
    a killed build resumes from its finished shards. Runs then read it without decoding."""
    from benchmark.registry import resolve_domain
    from benchmark.runner import default_cache_dir

    reporter = _reporter(no_progress)
    for spec in name:
        domain = resolve_domain(spec)
        domain.workers = workers
        data = domain.load(image_size, cache_dir or default_cache_dir(), reporter)
        console.print(f"{spec}: {len(data)} samples at {image_size} px cached", highlight=False)


@data_app.command("verify")
@user_errors
def data_verify(
    name: Annotated[str, typer.Argument(help="a bound name (bench data list)")],
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Decode and check every file; one report; exit code 1 when problems were found."""
    from datasets.real.bindings import lookup
    from datasets.real.domain import RealDomain
    from datasets.real.verify import render, verify

    binding = lookup(name)
    if binding is None:
        raise UserError(f"'{name}' is not bound to real data (bench data list; "
                        "bench data add NAME --format ... --root ...)")
    report = verify(RealDomain(binding), _reporter(no_progress))
    render(report, console)
    if not report.ok:
        raise typer.Exit(1)


@perf_app.command("data")
@user_errors
def perf_data(
    name: Annotated[str | None, typer.Argument(
        help="a bound name (default: a generated set of DICOMs)")] = None,
    n: Annotated[int, typer.Option(help="generated images", min=1, max=10_000)] = 16,
    image_size: Annotated[int, typer.Option(help="pixels per side", min=16, max=8192)] = 512,
    compress: Annotated[bool, typer.Option(help="JPEG 2000 lossless generated DICOMs")] = True,
    rows: Annotated[int, typer.Option(help="generated image rows (paper: 2457)", min=16,
                                      max=16_384)] = 2457,
    cols: Annotated[int, typer.Option(help="generated image columns (paper: 1996)", min=16,
                                      max=16_384)] = 1996,
    scale: Annotated[int | None, typer.Option(
        help="measure the cache at scale: N and 4N generated DICOM frames (FFDM + DBT), "
             "build speed by workers, peak RSS, loader samples/s, decodes on reread",
        min=2, max=100_000)] = None,
    workers: Annotated[int | None, typer.Option(
        help="--scale: build processes / reader threads (default: available cores)",
        min=1, max=256)] = None,
    dbt_frames: Annotated[int, typer.Option(
        help="--scale: frames per generated DBT volume", min=1, max=400)] = 10,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Samples/s read from the cache vs decoded from DICOM; with --scale N, the shard cache's
    build speed, memory and loader speed at N and 4N full-size DICOM frames."""
    from benchmark.perf.data_perf import print_data_perf, run_data_perf
    from datasets.real.bindings import lookup

    if scale is not None:
        if name is not None:
            raise UserError("--scale generates its own DICOMs; leave out the data name")
        from benchmark.perf.data_scale import print_scale_perf, run_scale_perf

        result = run_scale_perf(scale, image_size=image_size, rows=rows, cols=cols,
                                dbt_frames=dbt_frames, workers=workers,
                                reporter=_reporter(no_progress))
        print_scale_perf(result, console)
        return

    binding = None
    if name is not None:
        binding = lookup(name)
        if binding is None:
            raise UserError(f"'{name}' is not bound to real data (bench data list)")
    if min(n, rows, cols, image_size) < 1:
        raise UserError("--n, --rows, --cols and --image-size must be positive")
    print_data_perf(run_data_perf(binding, n=n, rows=rows, cols=cols, image_size=image_size,
                                  compress=compress), console)
