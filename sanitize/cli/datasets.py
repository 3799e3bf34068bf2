"""Datasets from the command line: ingest, list datasets, versions and runs, show a run, a version's
lineage, export a clean version, copy the catalog to another database."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from sanitize.catalog import Catalog, Dataset, Ingest, Run, Version
from sanitize.cli.output import console, print_summary
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
) -> None:
    """Ingest a source into a dataset with a provenance record for every sample."""
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
    few = [c for c, n in rep.class_counts.items() if n < 2]
    if few:
        console.print(f"[yellow]class(es) {few} have fewer than 2 training samples in this source[/yellow]")


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
    t = Table("version", "kind", "status", "parent", "run", "train", "test", "created")
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
            )
    console.print(t)


def runs(dataset: Annotated[str | None, typer.Option(help="Only this dataset's runs.")] = None) -> None:
    """List cleaning runs."""
    ws = Workspace()
    t = Table("run", "dataset", "version", "status", "quarantined", "clean version", "started")
    with ws.catalog.session() as s:
        q = select(Run).order_by(Run.started_at)
        if dataset:
            q = q.where(Run.dataset == dataset)
        for r in s.scalars(q):
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
                r.clean_version_id or "",
                f"{r.started_at:%Y-%m-%d %H:%M}",
            )
    console.print(t)


def show(run_id: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = "latest") -> None:
    """Show a run's summary."""
    ws = Workspace()
    rid = resolve_run(ws, run_id)
    with ws.catalog.session() as s:
        summary = ws.catalog.run(s, rid).summary
    if summary and summary.get("skipped"):
        console.print(escape(f"run {rid} was skipped: {summary['reason']}"))
        return
    if not summary:
        raise SanitizeError(f"run {rid} has no summary (it did not complete)")
    print_summary(summary)


def lineage_cmd(version: Annotated[str, typer.Argument(help="A version id.")]) -> None:
    """Print a version's chain back to the sources it came from."""
    for depth, step in enumerate(lineage(Workspace(), version)):
        pad = "  " * depth
        made = f" by run {step.run_id}" if step.run_id else ""
        out = f", {step.excluded} samples excluded" if step.excluded is not None else ""
        console.print(escape(f"{pad}{step.version} [{step.kind}, {step.status}]{made}{out}, {step.created_at[:19]}"))
        for src in step.sources:
            console.print(
                escape(
                    f"{pad}  <- source {src['source']}: {src['samples']} samples from {src['uri']} "
                    f"({src['format']}, ingest {src['ingest_id']}, {src['ingested_at'][:19]})"
                )
            )
        for model in step.models:
            console.print(escape(f"{pad}  -> model {model.get('model')} trained by {model['by']}, {model['at'][:19]}"))


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
