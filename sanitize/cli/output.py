"""What the commands print to a person: the two consoles and a cleaning run's summary.

Rich reads ``[...]`` in every printed string and table cell as markup, so each string that can carry
user text (a path, a name, a reason, an error) goes through :func:`rich.markup.escape` where it is
printed: a path ``x[/red]`` made ``ingest`` exit 1 after committing, and ``lineage`` crash, with a
MarkupError.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table

from sanitize.errors import SanitizeError
from sanitize.workspace import Workspace

console = Console()
err = Console(stderr=True)


def class_names_of(ws: Workspace, dataset: str, version: str | None) -> tuple[str, ...]:
    """The name of each label of a version (its label map, else integers); () when it cannot be read."""
    if version is None:
        return ()
    try:
        return ws.store.class_names(ws.store.manifest(dataset, version))
    except (SanitizeError, OSError, ValueError, KeyError):
        return ()


def class_label(names: Sequence[str], label: object) -> str:
    """A label as a person reads it: ``dog (2)``, or ``2`` where the class has no name but its index."""
    try:
        index = int(label)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(label)
    name = names[index] if 0 <= index < len(names) else str(index)
    return name if name == str(index) else f"{name} ({index})"


def parse_class(names: Sequence[str], value: str, what: str) -> int:
    """A class given on the command line, by index or by name, as its index."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text in names:
        return list(names).index(text)
    known = ", ".join(f"{name} ({i})" for i, name in enumerate(names)) or "none: the labels have no names"
    raise typer.BadParameter(f"no class named {text!r}; classes: {known}", param_hint=f"'{what}'")


class _ProgressHandler(logging.Handler):
    """A run's progress lines on stderr, warnings in yellow and errors in red."""

    def emit(self, record: logging.LogRecord) -> None:
        style = {logging.WARNING: "yellow", logging.ERROR: "red"}.get(record.levelno)
        text = escape(self.format(record))
        err.print(f"[{style}]{text}[/{style}]" if style else text, highlight=False, soft_wrap=True)


def show_progress() -> None:
    """Print what a run in this process says of its progress (logger ``sanitize.run``: each stage's
    start and duration, what it cannot measure, its approval) on stderr, with the time of day."""
    logger = logging.getLogger("sanitize.run")
    if not any(isinstance(h, _ProgressHandler) for h in logger.handlers):
        handler = _ProgressHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root handler of main() would print its warnings a second time


def id_column(name: str) -> Column:
    """A table column of ids, never cut or wrapped (see :func:`print_table`)."""
    return Column(name, no_wrap=True)


def print_table(table: Table) -> None:
    """Print ``table`` at the terminal's width, or wider where its ids (:func:`id_column`) and the
    longest word of each other column do not fit in it: the terminal then wraps the lines, and an id
    stays whole to copy, where rich would cut it to ``c0ca3016d9eb…``."""
    unbounded = console.options.update_width(1 << 16)
    needed = 1  # the table's left edge; each column adds its padding and right edge (3)
    for column in table.columns:
        widths = [Measurement.get(console, unbounded, cell) for cell in [column.header, *column.cells]]
        needed += max(m.maximum if column.no_wrap else m.minimum for m in widths) + 3
    # console.print(width=...) only narrows; a console of the width needed prints it wider.
    (console if needed <= console.width else Console(width=needed)).print(table)


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as an error quotes it: its repr, cut to ``limit`` characters (a 5,000-character name)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def error_message(exc: BaseException) -> str:
    """A user error in one line: pydantic's ``ValidationError`` as ``field: problem`` for each problem,
    without its dump of the whole input and its link (a schedule's bad cron printed four lines)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        problem = error["msg"].removeprefix("Value error, ")
        if isinstance(error["input"], str | int | float) and error["type"] != "value_error":
            problem += f", got {shown(error['input'])}"
        problems.append(f"{where}: {problem}" if where else problem)
    return "; ".join(problems)


def print_summary(summary: dict[str, Any]) -> None:
    """The run's result for a person: what was ingested, flagged, quarantined, measured, and where it is."""
    names = class_names_of(Workspace(), summary["dataset"], summary.get("version"))
    t = Table(title=f"cleaning run {summary['run_id']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    t.add_row("dataset", escape(f"{summary['dataset']} (version {summary['version']})"))
    if summary.get("redteam"):
        rt = summary["redteam"]
        t.add_row(
            "red team",
            f"{rt['attack']} on {rt['rate']:.1%} of the training set, target class "
            f"{escape(class_label(names, rt['target']))}"
            f" ({summary['n_poison']} poisons)",
        )
    t.add_row("ingested (train)", str(summary["ingested"]))
    t.add_row(
        "quarantined", f"{summary['quarantined']} (estimated poison rate {pct(summary['estimated_poison_rate'])})"
    )
    t.add_row("kept", str(summary["kept"]))
    if summary.get("looks_clean"):
        t.add_row("verdict", "the dataset looks clean: no class shows a poisoned sub-population")
    flagged = {c: r for c, r in summary["estimated_rate_per_class"].items() if r > 0}
    if flagged:
        t.add_row(
            "classes with poisons",
            escape(", ".join(f"{class_label(names, c)}: {r:.1%} of the class" for c, r in flagged.items())),
        )
    if summary.get("redteam"):
        t.add_row(
            "detection",
            f"recall {pct(summary['recall'])}, precision {pct(summary['precision'])}, "
            f"clean false-positive rate {pct(summary['fpr'])}",
        )
        t.add_row(
            "attack success", f"{pct(summary['asr_before'])} before cleaning -> {pct(summary['asr_after'])} after"
        )
    if summary.get("measurable", True):
        t.add_row(
            "clean accuracy",
            f"{pct(summary['clean_acc_before'])} before -> {pct(summary['clean_acc_after'])} after (test split)",
        )
    for warning in summary.get("warnings") or []:
        t.add_row("cannot measure", f"[yellow]{escape(warning)}[/yellow]")
    approval = summary.get("approval") or {}
    if approval.get("detection_failed"):
        t.add_row("red team says", f"[red]{escape(approval['detection_failed'])}[/red]")
    status = approval.get("version_status")
    t.add_row(
        "clean version",
        f"{summary['clean_version']}"
        + (f" [bold]{status}[/bold]" if status else "")
        + f" (read it with sanitize.data.CleanDataset('{summary['clean_version']}'))",
    )
    if approval:
        t.add_row("approval", escape(f"{approval['why']}; policy {approval['policy']} ({approval['policy_from']})"))
    t.add_row("run records", escape(str(Path(summary["model_reference"]).parent)))
    t.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(t)
    console.print(f"List the quarantine: [bold]sanitize quarantine list --run {summary['run_id']}[/bold]")
