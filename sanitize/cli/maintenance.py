"""Looking after the data folder from the command line: ``gc``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sanitize.cleanup import DEFAULT_OLDER_THAN, collect, find_debris
from sanitize.cli.output import console
from sanitize.workspace import Workspace


def size_text(n: int) -> str:
    """A byte count for a person: ``512 B``, ``3.4 KiB``, ``97.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def gc(
    yes: Annotated[bool, typer.Option("--yes", help="Remove what is listed (without it: only list it).")] = False,
    older_than: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="MINUTES",
            help="Only what has not changed for this many minutes: a write in progress is younger.",
        ),
    ] = int(DEFAULT_OLDER_THAN.total_seconds() // 60),
) -> None:
    """List (or with --yes remove) temporary files and data no ingest, version, export or run refers to."""
    ws = Workspace()
    debris = find_debris(ws, older_than=timedelta(minutes=older_than))
    if not debris:
        console.print(f"nothing to collect in {escape(str(ws.store.home))} (untouched for {older_than} min)")
        return
    total = sum(item.bytes for item in debris)
    t = Table("path", "size", "why", title=escape(f"debris in {ws.store.home}, untouched for {older_than} min"))
    for item in debris:
        t.add_row(escape(item.path), size_text(item.bytes), item.why)
    console.print(t)
    if not yes:
        console.print(f"{len(debris)} items, {size_text(total)}: nothing removed; remove them with: sanitize gc --yes")
        return
    # collect() checks each path against the catalog again: what became referred to since stays.
    freed = collect(ws, debris)
    gone = sum(not (ws.store.home / item.path).exists() for item in debris)
    console.print(f"removed {gone} of {len(debris)} items, freed {size_text(freed)}")
