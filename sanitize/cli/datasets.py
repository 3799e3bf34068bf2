"""Datasets from the command line: ingest, list datasets, versions and runs, show a run, a version's
lineage, export a clean version, copy the catalog to another database."""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import select

from sanitize.catalog import Catalog, Dataset, Ingest, Run, Version
from sanitize.cli.output import class_label, console, id_column, print_summary, print_table
from sanitize.errors import SanitizeError
from sanitize.export import copy_out
from sanitize.ingest.core import ingest_path
from sanitize.lineage import lineage
from sanitize.migrate import copy_catalog
from sanitize.quarantine import resolve_run
from sanitize.workspace import Workspace


class ExportFormat(StrEnum):
    parquet = "parquet"
    npz = "npz"
    imagefolder = "imagefolder"


def ingest(
    path: Annotated[Path, typer.Argument(help="IDX folder/file, image folder, .npz, or .parquet/.csv table.")],
    dataset: Annotated[str, typer.Option(help="Dataset to add the source to.")],
    source: Annotated[str, typer.Option(help="The supplier's name, e.g. vendor-a.")],
    format: Annotated[str | None, typer.Option(help="idx, imagefolder, npz or table (default: guessed).")] = None,
    image_column: Annotated[str | None, typer.Option(help="Table: the image column (bytes or path).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Table: the label column.")] = None,
    split: Annotated[str, typer.Option(help="Split of samples the source does not assign (train or test).")] = "train",
    new_classes: Annotated[
        bool, typer.Option(help="Let a source whose class names are all new to the dataset add them.")
    ] = False,
) -> None:
    """Ingest a source into a dataset with a provenance record for every sample.

    Class folders, string labels and an .npz class_names array are class names: they are mapped to
    the dataset's labels by name, through one label map for all its sources.
    """
    ws = Workspace()
    rep = ingest_path(
        ws.catalog,
        ws.store,
        dataset=dataset,
        path=path,
        source=source,
        format=format,
        image_column=image_column,
        label_column=label_column,
        split=split,
        new_classes=new_classes,
    )
    state = "new version" if rep.changed else "unchanged version"
    console.print(
        f"ingested {rep.n_samples} samples ({rep.n_train} train, {rep.n_test} test) from "
        f"{escape(str(path))} as source [bold]{escape(source)}[/bold] into [bold]{escape(dataset)}[/bold]"
    )
    console.print(
        f"{state} {rep.version_id}"
        + ("" if rep.stored else " (identical to this source's last ingest: nothing stored)")
    )
    if rep.duplicates_within or rep.duplicates_across:
        console.print(
            f"[yellow]exact duplicate contents: {rep.duplicates_within} within the source, "
            f"{rep.duplicates_across} shared with other sources ({rep.conflicting_labels} with another "
            f"label)[/yellow]"
            + (f"; e.g. {escape(', '.join(rep.duplicate_examples[:3]))}" if rep.duplicate_examples else "")
        )
    names = rep.class_names or ()
    if rep.class_names is not None:
        listed = ", ".join(f"{name} ({i})" for i, name in enumerate(names))
        console.print(escape(f"classes (label map version {rep.label_map_version}): {listed}"))
        if rep.new_classes and rep.label_map_version != 1:
            added = ", ".join(class_label(names, names.index(name)) for name in rep.new_classes)
            console.print(f"[yellow]new classes added to the label map: {escape(added)}[/yellow]")
    few = [class_label(names, c) for c, n in rep.class_counts.items() if n < 2]
    if few:
        console.print(
            f"[yellow]class(es) {escape(', '.join(few))} have fewer than 2 training samples in this source[/yellow]"
        )


def datasets() -> None:
    """List datasets with their current version and sources."""
    ws = Workspace()
    t = Table("dataset", "current version", "sources")
    with ws.catalog.session() as s:
        for ds in s.scalars(select(Dataset).order_by(Dataset.name)):
            sources = sorted({i.source for i in s.scalars(select(Ingest).where(Ingest.dataset == ds.name))})
            t.add_row(escape(ds.name), ds.current_version or "", escape(", ".join(sources)))
    console.print(t)


def versions(dataset: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """List a dataset's versions (ingested, red-team and clean) with their lineage."""
    ws = Workspace()
    t = Table(
        id_column("version"),
        "kind",
        "status",
        id_column("parent"),
        id_column("run"),
        "train",
        "test",
        Column("created", no_wrap=True),
        Column("classes", overflow="fold", min_width=16),
    )
    with ws.catalog.session() as s:
        ws.catalog.dataset(s, dataset)
        for v in s.scalars(select(Version).where(Version.dataset == dataset).order_by(Version.created_at)):
            t.add_row(
                v.id,
                v.kind,
                v.status,
                v.parent_id or "",
                v.run_id or "",
                str(v.n_train),
                str(v.n_test),
                f"{v.created_at:%Y-%m-%d %H:%M}",
                escape(_classes_cell(ws, dataset, v.id)),
            )
    print_table(t)


def _classes_cell(ws: Workspace, dataset: str, version: str) -> str:
    """A version's classes for the versions table: ``3: bird, cat, dog``, or their indices without names."""
    try:
        manifest = ws.store.manifest(dataset, version)
    except SanitizeError:
        return "?"
    names = ws.store.class_names(manifest)
    shown = [names[c] for c in manifest.classes]
    if shown == [str(c) for c in manifest.classes] and manifest.classes == tuple(range(len(shown))) and len(shown) > 12:
        return f"{len(shown)}: 0-{len(shown) - 1}"  # unnamed: 1,000 indices say nothing a range does not
    return f"{len(shown)}: " + ", ".join(shown)


def clean_version_of(run: Run, versions: dict[str, Version]) -> tuple[str, str] | None:
    """The clean version a run stands for and its status, as the review page shows it: its approved
    version when one is (the reviewed export), else the version it exported."""
    approved = [v for v in versions.values() if v.run_id == run.id and v.status == "approved"]
    if approved:
        return approved[-1].id, "approved"
    if run.clean_version_id is None:
        return None
    exported = versions.get(run.clean_version_id)
    return run.clean_version_id, exported.status if exported is not None else "unknown"


def runs(dataset: Annotated[str | None, typer.Option(help="Only this dataset's runs.")] = None) -> None:
    """List cleaning runs, each with its clean version and whether that is provisional or approved."""
    ws = Workspace()
    t = Table(
        id_column("run"),
        "dataset",
        id_column("version"),
        "status",
        "quarantined",
        id_column("clean version"),
        "approval",
        "started",
    )
    with ws.catalog.session() as s:
        q = select(Run).order_by(Run.started_at)
        cleans = select(Version).where(Version.kind == "clean").order_by(Version.created_at)
        if dataset:
            q, cleans = q.where(Run.dataset == dataset), cleans.where(Version.dataset == dataset)
        versions = {v.id: v for v in s.scalars(cleans)}
        for r in s.scalars(q):
            clean = clean_version_of(r, versions)
            t.add_row(
                r.id,
                escape(r.dataset),
                r.version_id or "",
                escape(
                    r.status
                    + (f": {r.error[:60]}" if r.error else "")
                    + (f" (unchanged since {r.summary['same_as']})" if r.status == "skipped" and r.summary else "")
                ),
                str((r.summary or {}).get("quarantined", "")),
                clean[0] if clean else "",
                clean[1] if clean else "",
                f"{r.started_at:%Y-%m-%d %H:%M}",
            )
    print_table(t)


def run_record(ws: Workspace, run_id: str) -> dict[str, Any]:
    """What ``sanitize show`` says of a run: its row, where it stands or failed, its clean versions, summary."""
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        versions = {v.id: v for v in s.scalars(select(Version).where(Version.run_id == run_id))}
        if run.clean_version_id and run.clean_version_id not in versions:
            exported = s.get(Version, run.clean_version_id)
            if exported is not None:
                versions[exported.id] = exported
        clean = clean_version_of(run, versions)
        record: dict[str, Any] = {
            "run_id": run.id,
            "dataset": run.dataset,
            "version": run.version_id,
            "status": run.status,
            "error": run.error,
            "stage": None,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "clean_version": {"id": clean[0], "status": clean[1]} if clean else None,
            "versions": [{"id": v.id, "kind": v.kind, "status": v.status} for v in versions.values()],
            "config": run.config,
            "summary": run.summary,
        }
    context = ws.store.run_dir(run_id) / "context.json"
    if context.is_file():
        try:
            record["stage"] = json.loads(context.read_text()).get("stage")
        except (OSError, ValueError):
            pass  # a context that cannot be read takes nothing from what the catalog says
    return record


def show(
    run_id: Annotated[str, typer.Argument(help="Run id, or 'latest' (the latest completed run).")] = "latest",
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's record as JSON.")] = False,
) -> None:
    """Show a run: its summary, or where it stands (running), or where and why it failed (exit status 2)."""
    ws = Workspace()
    record = run_record(ws, resolve_run(ws, run_id))
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    rid, summary, stage = record["run_id"], record["summary"], record["stage"]
    if record["status"] == "failed":
        # One line, exit 2, as every command that has no result to show: here, with the run's error.
        where = f" in stage {stage}" if stage else ""
        when = f" at {record['finished_at'][:19]}" if record["finished_at"] else ""
        raise SanitizeError(
            f"run {rid} did not complete: it failed{where}{when}: {record['error'] or 'no error recorded'}"
        )
    if record["status"] == "running":
        now = f", now in stage {stage}" if stage else ""
        console.print(escape(f"run {rid} is running since {record['started_at'][:19]}{now}"))
        return
    if summary and summary.get("skipped"):
        console.print(escape(f"run {rid} was skipped: {summary['reason']}"))
        return
    if not summary:
        raise SanitizeError(f"run {rid} is {record['status']} and has no summary")
    print_summary(summary)
    clean = record["clean_version"]
    if clean and clean["id"] != summary.get("clean_version"):
        console.print(f"reviewed: clean version [bold]{clean['id']}[/bold] is {clean['status']}")


def lineage_cmd(
    version: Annotated[str, typer.Argument(help="A version id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the chain as JSON, newest version first.")] = False,
) -> None:
    """Print a version's chain back to the sources it came from."""
    steps = lineage(Workspace(), version)
    if as_json:
        print(json.dumps([asdict(step) for step in steps], indent=2, default=str))
        return
    # soft_wrap: a line longer than the terminal is left to it to wrap, never cut inside an id.
    for depth, step in enumerate(steps):
        pad = "  " * depth
        made = f" by run {step.run_id}" if step.run_id else ""
        out = f", {step.excluded} samples excluded" if step.excluded is not None else ""
        console.print(
            escape(f"{pad}{step.version} [{step.kind}, {step.status}]{made}{out}, {step.created_at[:19]}"),
            soft_wrap=True,
        )
        for src in step.sources:
            console.print(
                escape(
                    f"{pad}  <- source {src['source']}: {src['samples']} samples from {src['uri']} "
                    f"({src['format']}, ingest {src['ingest_id']}, {src['ingested_at'][:19]})"
                ),
                soft_wrap=True,
            )
        for model in step.models:
            console.print(
                escape(f"{pad}  -> model {model.get('model')} trained by {model['by']}, {model['at'][:19]}"),
                soft_wrap=True,
            )


def export_cmd(
    version: Annotated[str, typer.Argument(help="A clean version id (c...).")],
    out: Annotated[Path, typer.Option(help="Folder to write into.")],
    format: Annotated[
        ExportFormat, typer.Option(help="parquet (with manifest), npz, or imagefolder (split/class/id.png).")
    ] = ExportFormat.parquet,
) -> None:
    """Copy a clean version out for a training job: Parquet + manifest, a NumPy .npz, or PNG files."""
    paths = copy_out(Workspace(), version, out, format.value)
    for p in paths:
        console.print(escape(str(p)))


def copy_catalog_cmd(
    to: Annotated[str, typer.Option(help="SQLAlchemy URL of an empty catalog, e.g. postgresql+psycopg://...")],
) -> None:
    """Copy this catalog (runs, quarantine, decisions, audit log...) into another database, ids unchanged."""
    ws = Workspace()
    target = Catalog(to)
    copied = copy_catalog(ws.catalog, target)
    target.dispose()
    console.print(
        escape(f"copied {sum(copied.values())} rows from {ws.catalog.engine.url!r} to {target.engine.url!r}:")
    )
    console.print(", ".join(f"{table} {n}" for table, n in copied.items() if n))
    console.print(escape(f"use it: export SANITIZE_CATALOG_URL='{to}' (the data folder stays {ws.settings.home})"))
