"""What the commands print to a person: the two consoles and a cleaning run's summary.

Rich reads ``[...]`` in every printed string and table cell as markup, so each string that can carry
user text (a path, a name, a reason, an error) goes through :func:`rich.markup.escape` where it is
printed: a path ``x[/red]`` made ``ingest`` exit 1 after committing, and ``lineage`` crash, with a
MarkupError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


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
            f"{rt['attack']} on {rt['rate']:.1%} of the training set, target class {rt['target']}"
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
        t.add_row("classes with poisons", ", ".join(f"{c} ({r:.1%} of the class)" for c, r in flagged.items()))
    if summary.get("redteam"):
        t.add_row(
            "detection",
            f"recall {pct(summary['recall'])}, precision {pct(summary['precision'])}, "
            f"clean false-positive rate {pct(summary['fpr'])}",
        )
        t.add_row(
            "attack success", f"{pct(summary['asr_before'])} before cleaning -> {pct(summary['asr_after'])} after"
        )
    t.add_row(
        "clean accuracy",
        f"{pct(summary['clean_acc_before'])} before -> {pct(summary['clean_acc_after'])} after (test split)",
    )
    t.add_row(
        "clean version",
        f"{summary['clean_version']} (read it with sanitize.data.CleanDataset('{summary['clean_version']}'))",
    )
    t.add_row("run records", escape(str(Path(summary["model_reference"]).parent)))
    t.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(t)
    console.print(f"List the quarantine: [bold]sanitize quarantine list --run {summary['run_id']}[/bold]")
