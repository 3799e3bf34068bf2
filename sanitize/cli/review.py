"""Reviewing from the command line: the quarantine's list and decisions, reviewers, the review page."""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import re
import sys
from enum import StrEnum
from typing import Annotated

import typer
import uvicorn
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from sanitize.catalog import Version
from sanitize.cli.output import class_label, class_names_of, console, err, parse_class
from sanitize.config import NAME_MAX_LENGTH
from sanitize.quarantine import list_quarantine, quarantine_by_hand, resolve_run, status_counts
from sanitize.review import decide, undo_decision
from sanitize.runs import approve_run
from sanitize.web.auth import add_reviewer, list_reviewers, revoke_reviewer
from sanitize.workspace import Workspace


class OutFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def quarantine_list(
    run_id: Annotated[str, typer.Option("--run", help="Run id, or 'latest'.")] = "latest",
    dataset: Annotated[str | None, typer.Option(help="With --run latest: the latest run of this dataset.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, confirmed, released or relabelled.")] = None,
    label: Annotated[str | None, typer.Option(help="Only this class (its index or name).")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows (table format: 50 by default).")] = None,
    format: Annotated[OutFormat, typer.Option(help="table, csv or json.")] = OutFormat.table,
) -> None:
    """List quarantined samples, most suspicious first, with provenance and reasons."""
    ws = Workspace()
    rid = resolve_run(ws, run_id, dataset)
    names = run_class_names(ws, rid)
    if format is OutFormat.table and limit is None:
        limit = 50
    wanted = None if label is None else parse_class(names, label, "--label")
    rows = list_quarantine(ws, rid, status=status, label=wanted, source=source, limit=limit)
    if format is OutFormat.json:
        print(json.dumps([_with_name(r.as_dict(), names) for r in rows], indent=2))
        return
    if format is OutFormat.csv:
        buf = io.StringIO()
        fields = list(_with_name(rows[0].as_dict(), names)) if rows else ["run_id", "sample_id"]
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(_with_name(r.as_dict(), names))
        sys.stdout.write(buf.getvalue())
        return
    counts = status_counts(ws, rid)
    title = f"quarantine of {rid}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    # The reason needs about 40 columns to read; under 120 the provenance columns make way for it.
    wide = console.width >= 120
    t = Table(title=escape(title if wide else f"{title} (source and place: --format json)"))
    t.add_column("sample", no_wrap=True, min_width=20)
    t.add_column("class", no_wrap=True)
    if wide:
        t.add_column("source", overflow="ellipsis", no_wrap=True, max_width=16)
        t.add_column("where", no_wrap=True, max_width=24)  # a long path keeps its end, the file's name
    t.add_column("score", no_wrap=True)
    t.add_column("status", no_wrap=True)
    # Why: each detector that flagged it, its score against its threshold and rank in the class,
    # wrapped at words; the whole reason is in --format json/csv.
    t.add_column("why", overflow="fold", ratio=1, min_width=24)
    for r in rows:
        where = [escape(r.source), escape(_tail(r.locator, 24))] if wide else []
        t.add_row(
            r.sample_id,
            escape(class_label(names, r.label)),
            *where,
            f"{r.suspicion_score:.3g}",
            r.status,
            escape(flagged_reasons(r.reason)),
        )
    console.print(t)


def run_class_names(ws: Workspace, run_id: str) -> tuple[str, ...]:
    """The class names of the version a run cleaned (integers where it has none)."""
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        dataset, version = run.dataset, run.version_id
    return class_names_of(ws, dataset, version)


def _with_name(row: dict[str, object], names: tuple[str, ...]) -> dict[str, object]:
    """A quarantine row with ``label_name`` beside its ``label``."""
    out: dict[str, object] = {}
    for key, value in row.items():
        out[key] = value
        if key == "label":
            index = int(value)  # type: ignore[call-overload]
            out["label_name"] = names[index] if 0 <= index < len(names) else str(index)
    return out


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


_FLAGGED = re.compile(r"^(\w+) flagged: score (\S+) vs threshold (\S+), rank (\S+) in class \S+$")


def flagged_reasons(reason: str) -> str:
    """The detectors that flagged a sample, from its quarantine reason, one a line and short:
    ``input_gap 147 > 71.6 (rank 1/214)``. All of the reason where none did (a poison confirmed in
    an earlier run says so)."""
    parts = [p.strip() for p in reason.split(";") if p.strip()]
    flagged = [p for p in parts if " flagged:" in p and " not flagged:" not in p]
    lines = []
    for part in flagged or parts:
        m = _FLAGGED.match(part)
        lines.append(f"{m[1]} {m[2]} > {m[3]} (rank {m[4]})" if m else part)
    return "\n".join(lines)


def _reviewer(reviewer: str | None) -> str:
    who = reviewer or os.environ.get("SANITIZE_REVIEWER") or getpass.getuser()
    if len(who) > NAME_MAX_LENGTH:  # the decision's and the audit record's String(200) columns
        raise typer.BadParameter(
            f"reviewer name is {len(who)} characters long; the limit is {NAME_MAX_LENGTH}", param_hint="'--reviewer'"
        )
    return who


def _decide(
    action: str, sample_ids: list[str], run_id: str, reviewer: str | None, note: str | None, label: str | None = None
) -> None:
    who = _reviewer(reviewer)
    ws = Workspace()
    rid = resolve_run(ws, run_id)
    new_label = None if label is None else parse_class(run_class_names(ws, rid), label, "--label")
    results = decide(ws, rid, sample_ids, action, reviewer=who, note=note, new_label=new_label)
    for r in results:
        console.print(escape(f"{r.sample_id}: {r.status}") + ("" if r.changed else " (already; nothing changed)"))
    with ws.catalog.session() as s:
        approved = s.scalars(select(Version).where(Version.run_id == rid, Version.status == "approved")).all()
    for v in approved:
        console.print(f"run {rid} is fully reviewed: approved clean version [bold]{v.id}[/bold]")


ReviewIds = Annotated[list[str], typer.Argument(help="Sample ids from the quarantine.")]
ReviewRun = Annotated[str, typer.Option("--run", help="Run id, or 'latest'.")]
Reviewer = Annotated[str | None, typer.Option(help="Who decides (default: $SANITIZE_REVIEWER or the login).")]
Note = Annotated[str | None, typer.Option(help="A note kept with the decision.")]


def quarantine_confirm(
    sample_ids: ReviewIds, run_id: ReviewRun = "latest", reviewer: Reviewer = None, note: Note = None
) -> None:
    """Confirm samples as poison: they stay out of every clean version."""
    _decide("confirm", sample_ids, run_id, reviewer, note)


def quarantine_release(
    sample_ids: ReviewIds, run_id: ReviewRun = "latest", reviewer: Reviewer = None, note: Note = None
) -> None:
    """Release samples back into training."""
    _decide("release", sample_ids, run_id, reviewer, note)


def quarantine_relabel(
    sample_ids: ReviewIds,
    label: Annotated[str, typer.Option(help="The corrected class: its index or its name.")],
    run_id: ReviewRun = "latest",
    reviewer: Reviewer = None,
    note: Note = None,
) -> None:
    """Release samples back into training under a corrected label."""
    _decide("relabel", sample_ids, run_id, reviewer, note, label)


def quarantine_add(
    sample_ids: Annotated[list[str], typer.Argument(help="Sample ids of the run's training split that it kept.")],
    run_id: ReviewRun = "latest",
    reviewer: Reviewer = None,
    note: Note = None,
) -> None:
    """Send kept samples to the quarantine by hand, pending review (while the run's version is not approved)."""
    who = _reviewer(reviewer)
    ws = Workspace()
    rid = resolve_run(ws, run_id)
    for r in quarantine_by_hand(ws, rid, sample_ids, reviewer=who, note=note):
        console.print(escape(f"{r.sample_id}: {r.status}") + ("" if r.entered else " (already; nothing changed)"))


def quarantine_undo(
    sample_ids: ReviewIds, run_id: ReviewRun = "latest", reviewer: Reviewer = None, note: Note = None
) -> None:
    """Take back the latest decision on samples (while the run's version is not approved): pending again,
    or released for a sample sent by hand."""
    who = _reviewer(reviewer)
    ws = Workspace()
    rid = resolve_run(ws, run_id)
    for r in undo_decision(ws, rid, sample_ids, reviewer=who, note=note):
        console.print(escape(f"{r.sample_id}: {r.status}"))


def approve_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = "latest",
    reviewer: Reviewer = None,
    note: Note = None,
) -> None:
    """Approve a run's clean version that waits with nothing left to review (approval policy review).

    Refused while its quarantine has pending entries (the last decision approves) and when its red
    team says the detection failed.
    """
    who = _reviewer(reviewer)
    ws = Workspace()
    rid = resolve_run(ws, run_id)
    vid = approve_run(ws, rid, reviewer=who, note=note)
    console.print(f"run {rid}: clean version [bold]{vid}[/bold] is approved")


def reviewer_add(
    name: Annotated[str, typer.Argument(help="The reviewer's name, recorded with each decision.")],
    rotate: Annotated[bool, typer.Option(help="Give an existing reviewer a new token (ends the old one).")] = False,
) -> None:
    """Make a reviewer and print their token, once: only its SHA-256 is stored."""
    token = add_reviewer(Workspace().catalog, name, rotate=rotate)
    err.print(f"reviewer [bold]{escape(name)}[/bold]: their token, shown once (only its hash is kept):")
    print(token)


def reviewer_list() -> None:
    """List reviewers and whether their token is active."""
    t = Table("reviewer", "since", "state")
    for r in list_reviewers(Workspace().catalog):
        state = "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        t.add_row(escape(r.name), f"{r.created_at:%Y-%m-%d %H:%M}", state)
    console.print(t)


def reviewer_revoke(name: Annotated[str, typer.Argument(help="The reviewer whose token stops working.")]) -> None:
    """Revoke a reviewer's token and end their browser sessions."""
    changed = revoke_reviewer(Workspace().catalog, name)
    console.print(f"reviewer {escape(name)}: " + ("revoked" if changed else "was already revoked"))


def review_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Also answer requests for this host name (repeatable; NAME:PORT for one port). "
            "Loopback and --host are always answered; any other Host header is refused (DNS rebinding).",
        ),
    ] = None,
) -> None:
    """Serve the review web page: runs, quarantine, samples, pictures; decisions need a reviewer token."""
    from sanitize.web.app import create_app  # deferred: FastAPI (see the start-up note in sanitize.cli)

    ws = Workspace()
    try:
        application = create_app(ws, allowed_hosts=[host, *(allowed_host or [])])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--host' / '--allowed-host'") from None
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"review page: [bold]http://{escape(shown)}:{port}/[/bold] (data in {escape(str(ws.settings.home))}; "
        "Ctrl-C stops it)"
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]listening on {escape(host)}: anyone who can reach it can read the pages[/yellow]")
        names = escape(application.state.allowed_hosts.describe())
        err.print(f"[yellow]answering requests for {names}; add others with --allowed-host NAME[/yellow]")
    uvicorn.run(application, host=host, port=port, log_level="warning")
