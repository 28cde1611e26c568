"""What every `bench` command module shares: the typer apps, the consoles, the one-line
user-error wrapper, the common options and folder defaults.

benchmark.cli, benchmark.cli_data, benchmark.cli_show and benchmark.cli_sweep all import this
module (never each other), so the command line's import graph has no cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from benchmark.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="calcbench: single-source domain generalization benchmark for "
                       "mammography microcalcification segmentation.")
list_app = typer.Typer(no_args_is_help=True, help="List registered methods or domains.")
data_app = typer.Typer(no_args_is_help=True,
                       help="Inspect domains; bind, list, verify and remove real data.")
perf_app = typer.Typer(no_args_is_help=True, help="Performance benchmarks (ratios vs a "
                                                  "reference measured in the same run).")
show_app = typer.Typer(no_args_is_help=True, help="Figures drawn from stored runs (the case "
                                                  "gallery).")
app.add_typer(list_app, name="list")
app.add_typer(data_app, name="data")
app.add_typer(perf_app, name="perf")
app.add_typer(show_app, name="show")

console = Console()
if not console.is_terminal:  # logs and pipes: room for the result table on one line per row
    console = Console(width=120)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn UserError into one red line on stderr and exit code 2 (Ctrl-C: exit 130)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished epochs are kept; run the same command "
                              "again to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _reporter(no_progress: bool) -> Any:
    from benchmark.progress import Reporter

    return Reporter(console=console, plain=True if no_progress else None)


ResultsOpt = Annotated[Path | None, typer.Option(
    "--results-dir", help="results folder (default: $CALCBENCH_RESULTS or ./results)")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="data cache (default: $CALCBENCH_CACHE or ~/.cache/calcbench)")]
NoProgressOpt = Annotated[bool, typer.Option(
    "--no-progress", help="plain log lines instead of progress bars")]
EvalLastOpt = Annotated[bool, typer.Option(
    "--eval-last", help="also evaluate the last-epoch checkpoint, for `bench leaderboard "
    "--select last` (opt-in: it doubles evaluation time)")]

ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, max=1024, help="torch CPU threads (default: torch's, one per core). CPU "
    "numbers depend on it; run.json records it, and a sweep job with one thread is reproduced "
    "with --threads 1")]


def _threads(threads: int | None) -> None:
    """Apply --threads before anything builds a model (torch's intra-op thread pool)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _dirs(results_dir: Path | None, cache_dir: Path | None) -> tuple[Path, Path]:
    from benchmark.runner import default_cache_dir, default_results_dir

    # absolute: cluster workers (Ray, Slurm) resolve a relative path in their own folder
    return ((results_dir.expanduser().absolute() if results_dir else default_results_dir()),
            (cache_dir.expanduser().absolute() if cache_dir else default_cache_dir()))
