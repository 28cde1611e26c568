"""`bench data verify`: decode every file of a bound dataset and report, never stopping early.

The report: counts per view and per patient, spacing and where it came from, photometric
interpretation and window, annotated images, and every problem (file and reason). Only
pseudonymous ids from the dataset itself appear; no DICOM attribute naming a person does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datasets.real.cases import Adapter, Frame
from datasets.real.domain import RealDomain, read_case
from datasets.real.problems import CaseError, Problem


@dataclass
class VerifyReport:
    """What `verify` found: counters over usable images and the problem list."""

    name: str
    format: str
    root: str
    cases: int = 0
    images: int = 0
    annotated: int = 0
    per_view: Counter = field(default_factory=Counter)
    per_patient: Counter = field(default_factory=Counter)
    per_patient_view: Counter = field(default_factory=Counter)
    spacing: Counter = field(default_factory=Counter)  # (source, "r x c") -> images
    photometric: Counter = field(default_factory=Counter)
    window: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(domain: RealDomain, progress: Any = None) -> VerifyReport:
    """Scan and decode every case of `domain`, collecting facts and problems."""
    adapter = domain.adapter
    report = VerifyReport(domain.name, domain.binding.format, domain.binding.root)
    cases, problems = adapter.scan()
    report.problems.extend(problems)
    task_cm = progress.task(f"verifying {domain.name}", len(cases)) \
        if progress is not None and hasattr(progress, "task") else None
    task = task_cm.__enter__() if task_cm is not None else None
    try:
        for case in cases:
            try:  # frames are decoded one at a time; only their small facts are kept
                facts = [_frame_facts(f, adapter) for f in read_case(case)]
            except CaseError as exc:  # all or nothing: a case failing part-way counts nothing
                report.problems.append(exc.problem)
                facts = []
            if facts:
                report.cases += 1
            view = str(case.meta.get("view", "?"))
            for annotated, spacing, photometric, window in facts:
                report.images += 1
                report.annotated += int(annotated)
                report.per_view[view] += 1
                report.per_patient[case.patient_id] += 1
                report.per_patient_view[(case.patient_id, view)] += 1
                report.spacing[spacing] += 1
                report.photometric[photometric] += 1
                report.window[window] += 1
            if task is not None:
                task.advance(1)
    finally:
        if task_cm is not None:
            task_cm.__exit__(None, None, None)
    return report


def _frame_facts(f: Frame, adapter: Adapter) -> tuple[bool, tuple[str, str], str, str]:
    """What the report counts of one frame: annotated?, (spacing source, spacing), photometric
    and window (so a volume's pixels need not stay in memory while it is verified)."""
    if f.spacing_mm is None:
        sp = (adapter.default_spacing_mm,) * 2
        source = f"{adapter.label} default ({adapter.spacing_note})"
    else:
        sp, source = f.spacing_mm, f.spacing_source
    return bool(f.mask.any()), (source, f"{sp[0]:.4g} x {sp[1]:.4g}"), f.photometric, f.window


def render(report: VerifyReport, console: Any, max_patients: int = 40) -> None:
    """Print the report with rich tables (patients listed when there are few)."""
    from rich.table import Table

    console.rule(f"{report.name}: {report.format} at {report.root}")
    console.print(f"{report.cases} usable case(s), {report.images} image(s), "
                  f"{len(report.per_patient)} patient(s), {report.annotated} with a non-empty "
                  f"mask, {len(report.problems)} problem(s)", highlight=False)
    views = Table(title="images per view")
    views.add_column("view")
    views.add_column("images", justify="right")
    views.add_column("patients", justify="right")
    for view, n in sorted(report.per_view.items()):
        pats = {p for (p, v) in report.per_patient_view if v == view}
        views.add_row(view, str(n), str(len(pats)))
    console.print(views)
    if report.per_patient and len(report.per_patient) <= max_patients:
        pt = Table(title="images per patient and view")
        all_views = sorted(report.per_view)
        pt.add_column("patient")
        for v in all_views:
            pt.add_column(v, justify="right")
        for pid in sorted(report.per_patient):
            pt.add_row(pid, *(str(report.per_patient_view.get((pid, v), 0)) for v in all_views))
        console.print(pt)
    elif report.per_patient:
        counts = sorted(report.per_patient.values())
        console.print(f"images per patient: min {counts[0]}, median "
                      f"{counts[len(counts) // 2]}, max {counts[-1]}", highlight=False)
    for title, counter, head in (("spacing (row x col, mm)", report.spacing, ("from", "mm")),
                                 ("photometric interpretation", report.photometric, ("as stored",)),
                                 ("intensity window", report.window, ("window",))):
        table = Table(title=title)
        for h in head:
            table.add_column(h)
        table.add_column("images", justify="right")
        for key, n in sorted(counter.items(), key=lambda kv: -kv[1]):
            cells = list(key) if isinstance(key, tuple) else [str(key)]
            table.add_row(*cells, str(n))
        console.print(table)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s); these files are excluded:[/red]")
        for p in report.problems:
            console.print(f"  {p}", highlight=False, soft_wrap=True)
    else:
        console.print("[green]no problems found[/green]")
