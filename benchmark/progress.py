"""Progress reporting: rich bars on a terminal, plain timestamped log lines otherwise.

Everything long (data generation, epochs, steps, evaluation) reports through a `Reporter`, so
batch logs (Slurm, CI, pipes) get readable lines instead of escape codes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Task:
    """One unit of tracked work; call `advance()` as items complete."""

    def __init__(self, reporter: Reporter, description: str, total: int | None,
                 every: bool = False, quiet_ends: bool = False) -> None:
        self._reporter = reporter
        self.every = every  # plain mode: a line per advance instead of every few seconds
        self.quiet_ends = quiet_ends  # plain mode: no start/done lines (inner loops)
        self.description = description
        self.total = total
        self.done = 0
        self._rich_id: Any = None
        self._last_line: float | None = None  # None: no line yet (monotonic may start near 0)
        self._start = time.monotonic()

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Mark `n` more items done; `fields` (e.g. loss=0.3) are shown beside the bar."""
        self.done += n
        self._reporter._update(self, fields)


class Reporter:
    """Creates tasks on a rich Progress (TTY) or prints plain lines (non-TTY, quiet logs)."""

    def __init__(self, console: Console | None = None, plain: bool | None = None,
                 min_interval_s: float = 5.0) -> None:
        self.console = console or Console(stderr=False)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.min_interval_s = min_interval_s
        self._progress: Progress | None = None

    def log(self, message: str) -> None:
        """A one-off line (works inside and outside a live progress display)."""
        if self._progress is not None:
            self._progress.console.print(message, highlight=False)
        else:
            self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str, total: int | None = None, every: bool = False,
             quiet_ends: bool = False, completed: int = 0) -> Iterator[Task]:
        """Track `total` items of work under `description` for the duration of the block.

        Plain mode prints a start and a done line (unless `quiet_ends`), and progress lines
        every `min_interval_s` seconds (or on every advance when `every`).
        """
        task = Task(self, description, total, every, quiet_ends)
        task.done = completed  # e.g. epochs already done by a run being resumed
        if self.plain:
            if not quiet_ends:
                self._plain_line(task, {}, force=True)
            ended = "stopped"  # an exception or interrupt: the work did not finish
            try:
                yield task
                ended = "done"
            finally:
                if not quiet_ends:
                    self._plain_line(task, {}, force=True, final=ended)
            return
        owner = self._progress is None
        if owner:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        assert self._progress is not None
        task._rich_id = self._progress.add_task(description, total=total, info="",
                                                completed=completed)
        try:
            yield task
        finally:
            if owner:
                self._progress.stop()
                self._progress = None
            else:
                self._progress.remove_task(task._rich_id)

    def _update(self, task: Task, fields: dict[str, Any]) -> None:
        if self.plain:
            self._plain_line(task, fields)
            return
        assert self._progress is not None
        info = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        kwargs: dict[str, Any] = {"completed": task.done}
        if fields:
            kwargs["info"] = info
        self._progress.update(task._rich_id, **kwargs)

    def _plain_line(self, task: Task, fields: dict[str, Any], force: bool = False,
                    final: str = "") -> None:
        """Print one plain progress line; `final` ("done" or "stopped") ends the task's lines."""
        now = time.monotonic()
        if (not force and not task.every and task._last_line is not None
                and now - task._last_line < self.min_interval_s):
            return
        task._last_line = now
        total = f"/{task.total}" if task.total is not None else ""
        info = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        state = final
        elapsed = now - task._start
        line = f"[{time.strftime('%H:%M:%S')}] {task.description}: {task.done}{total} " \
               f"({elapsed:.0f}s) {info} {state}".rstrip()
        print(line, file=sys.stdout, flush=True)


class NullReporter(Reporter):
    """Reports nothing: for library use and tests."""

    def __init__(self) -> None:
        super().__init__(console=Console(quiet=True), plain=True)

    def log(self, message: str) -> None:
        return

    def _plain_line(self, task: Task, fields: dict[str, Any], force: bool = False,
                    final: str = "") -> None:
        return


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
