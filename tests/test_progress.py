"""Progress reporting degrades to plain log lines when stdout is not a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from benchmark.progress import NullReporter, Reporter


def test_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    rep = Reporter(console=Console(file=io.StringIO()), plain=True, min_interval_s=3600)
    with rep.task("epochs", total=3, every=True, completed=1) as task:
        task.advance(1, val_dsc=0.5)
        task.advance(1)
    with rep.task("steps", total=100, quiet_ends=True) as steps:
        for _ in range(100):
            steps.advance(1, loss=0.25)
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if "epochs" in line]
    assert "epochs: 1/3" in epoch_lines[0]  # a resumed run starts at its finished epochs
    assert any("2/3" in line and "val_dsc=0.5" in line for line in epoch_lines)
    assert epoch_lines[-1].endswith("done")
    step_lines = [line for line in lines if "steps" in line]
    assert len(step_lines) == 1  # throttled, and no start/done lines for inner loops


def test_rich_mode_and_null_reporter(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    rep = Reporter(console=Console(file=buf, force_terminal=True, width=100), plain=False)
    with rep.task("evaluate", total=2) as task:
        task.advance(2)
        rep.log("a message")
    assert "evaluate" in buf.getvalue() and "a message" in buf.getvalue()
    null = NullReporter()
    with null.task("x", total=1) as task:
        task.advance(1)
    null.log("nothing")
    assert capsys.readouterr().out == ""


def test_plain_lines_right_after_boot(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """time.monotonic() counts from boot: a machine up for 12 s must still get its first
    progress line at once, not after min_interval_s."""
    clock = iter(float(t) for t in range(12, 10_000))
    monkeypatch.setattr("benchmark.progress.time.monotonic", lambda: next(clock))
    rep = Reporter(console=Console(file=io.StringIO()), plain=True, min_interval_s=3600)
    with rep.task("steps", total=100, quiet_ends=True) as steps:
        for _ in range(100):
            steps.advance(1, loss=0.25)
    lines = [line for line in capsys.readouterr().out.splitlines() if "steps" in line]
    assert len(lines) == 1 and "steps: 1/100" in lines[0]


def test_interrupted_task_does_not_say_done(capsys: pytest.CaptureFixture[str]) -> None:
    rep = Reporter(console=Console(file=io.StringIO()), plain=True)
    with pytest.raises(KeyboardInterrupt), rep.task("epochs", total=150) as task:
        task.advance(72)
        raise KeyboardInterrupt
    last = capsys.readouterr().out.splitlines()[-1]
    assert "epochs: 72/150" in last and last.endswith("stopped") and "done" not in last
