"""Integrity from the command line: ``sanitize verify`` checks the store against what was published."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape

from sanitize.cli.output import console
from sanitize.verify import VerifyReport, verify
from sanitize.workspace import Workspace


def verify_cmd(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A dataset name or a version id (default: everything).",
            show_default=False,
            metavar="[DATASET|VERSION]",
        ),
    ] = None,
    audit_head: Annotated[
        str | None,
        typer.Option(
            help="The audit head an earlier verify printed: it must still be in the chain.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute every file's checksum and every sample's hash, check each run's quarantine, its
    decisions and the audit chain. Exit status 1 on any mismatch, 0 when all holds."""
    report = verify(Workspace(), target, audit_head=audit_head)
    if as_json:
        print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _print(report: VerifyReport) -> None:
    console.print(
        escape(
            f"verified {report.scope}: {report.versions} versions, {report.files} files, {report.samples} samples, "
            f"{report.runs} runs, {report.audit_records} audit records in {report.seconds:.1f} s"
        )
    )
    if report.audit_head:
        console.print(f"audit head {report.audit_head} (keep it: --audit-head checks that no record was removed since)")
    for w in report.warnings:
        where = w.where()
        console.print(
            f"[yellow]warning[/yellow] {escape(w.check)}: {escape(w.message)}" + escape(f" ({where})" if where else "")
        )
    for p in report.problems:
        where = p.where()
        console.print(
            f"[red]MISMATCH[/red] {escape(p.check)}: {escape(p.message)}" + escape(f" ({where})" if where else "")
        )
    console.print(
        "[green]all holds[/green]" if report.ok else f"[red]{len(report.problems)} mismatches[/red]", highlight=False
    )
