"""The ``sanitize`` command line.

``sanitize run`` with no arguments cleans the built-in default: scikit-learn's digits with a
simulated BadNets poisoning (5 % of the training set, target class 0), so the detection is visible.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sanitize.config import DEFAULT_DATASET, DetectConfig, ModelConfig, RedTeamConfig, RunConfig
from sanitize.errors import SanitizeError
from sanitize.workspace import Workspace

app = typer.Typer(
    help="Find backdoor-poisoned training samples, quarantine them, export clean versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
quarantine_app = typer.Typer(help="The quarantine of a run.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
console = Console()
err = Console(stderr=True)


class Attack(StrEnum):
    badnets = "badnets"
    badnets_random = "badnets_random"
    blend = "blend"
    sig = "sig"
    wanet = "wanet"
    adaptive_blend = "adaptive_blend"


class OutFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(StrEnum):
    parquet = "parquet"
    npz = "npz"
    imagefolder = "imagefolder"


@app.command()
def run(
    dataset: Annotated[
        str, typer.Option(help="Dataset to clean (default: the built-in digits demo).")
    ] = DEFAULT_DATASET,
    version: Annotated[str | None, typer.Option(help="Dataset version (default: the dataset's current one).")] = None,
    poison: Annotated[
        Attack | None, typer.Option(help="Red team: poison the dataset on the fly with this attack.")
    ] = None,
    rate: Annotated[float, typer.Option(help="Red team: share of the training set to poison.")] = 0.05,
    target: Annotated[int, typer.Option(help="Red team: target class.")] = 0,
    contamination: Annotated[
        float | None, typer.Option(help="Expected poison share, if known (default: estimated).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Reference-model epochs (default: by dataset size).")] = None,
    arch: Annotated[str, typer.Option(help="auto, cnn or resnet18.")] = "auto",
    model: Annotated[Path | None, typer.Option(help="Your own TorchScript model instead of training one.")] = None,
    feature_layer: Annotated[
        str | None, typer.Option(help="With --model: the layer whose output is the feature.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    retrain: Annotated[bool, typer.Option(help="Retrain a clean model on the kept samples.")] = True,
    retrain_epochs: Annotated[
        int | None, typer.Option(help="Clean-model epochs (default: three times the reference model's, up to 40).")
    ] = None,
    retrain_augment: Annotated[
        str, typer.Option(help="The clean model's training augmentation: warp (random small warps) or none.")
    ] = "warp",
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    prefect: Annotated[bool, typer.Option(help="Run as the Prefect flow (records it in Prefect).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a complete cleaning run: features, detectors, quarantine, retrain, clean export."""
    redteam = None
    if poison is not None or (dataset == DEFAULT_DATASET and version is None):
        redteam = RedTeamConfig(attack=(poison or Attack.badnets).value, rate=rate, target=target, seed=seed)
    config = RunConfig(
        dataset=dataset,
        version=version,
        seed=seed,
        retrain=retrain,
        retrain_epochs=retrain_epochs,
        retrain_augment=retrain_augment,  # type: ignore[arg-type]  # validated by pydantic
        redteam=redteam,
        model=ModelConfig(
            arch=arch,  # type: ignore[arg-type]  # validated by pydantic
            epochs=epochs,
            device=device,
            torchscript=model,
            feature_layer=feature_layer,
        ),
        detect=DetectConfig(contamination=contamination),
    )
    if prefect:
        from flows.clean import cleaning_flow

        summary = cleaning_flow(config=config)
    else:
        from sanitize.pipeline import run_cleaning

        summary = run_cleaning(config, Workspace(), progress=sys.stderr.isatty()).summary
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)


def print_summary(summary: dict[str, Any]) -> None:
    """The run's result for a person: what was ingested, flagged, quarantined, measured, and where it is."""
    t = Table(title=f"cleaning run {summary['run_id']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    t.add_row("dataset", f"{summary['dataset']} (version {summary['version']})")
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
    t.add_row("run records", str(Path(summary["model_reference"]).parent))
    t.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(t)
    console.print(f"List the quarantine: [bold]sanitize quarantine list --run {summary['run_id']}[/bold]")


@app.command()
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
    from sanitize.ingest.core import ingest_path

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
        f"{path} as source [bold]{source}[/bold] into [bold]{dataset}[/bold]"
    )
    console.print(
        f"{state} {rep.version_id}"
        + ("" if rep.stored else " (identical to this source's last ingest: nothing stored)")
    )
    if rep.duplicates_within or rep.duplicates_across:
        console.print(
            f"[yellow]exact duplicate contents: {rep.duplicates_within} within the source, "
            f"{rep.duplicates_across} shared with other sources ({rep.conflicting_labels} with another "
            f"label)[/yellow]" + (f"; e.g. {', '.join(rep.duplicate_examples[:3])}" if rep.duplicate_examples else "")
        )
    few = [c for c, n in rep.class_counts.items() if n < 2]
    if few:
        console.print(f"[yellow]class(es) {few} have fewer than 2 training samples in this source[/yellow]")


@app.command()
def datasets() -> None:
    """List datasets with their current version and sources."""
    from sqlalchemy import select

    from sanitize.catalog import Dataset, Ingest

    ws = Workspace()
    t = Table("dataset", "current version", "sources")
    with ws.catalog.session() as s:
        for ds in s.scalars(select(Dataset).order_by(Dataset.name)):
            sources = sorted({i.source for i in s.scalars(select(Ingest).where(Ingest.dataset == ds.name))})
            t.add_row(ds.name, ds.current_version or "", ", ".join(sources))
    console.print(t)


@app.command()
def versions(dataset: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """List a dataset's versions (ingested, red-team and clean) with their lineage."""
    from sqlalchemy import select

    from sanitize.catalog import Version

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


@app.command()
def runs(dataset: Annotated[str | None, typer.Option(help="Only this dataset's runs.")] = None) -> None:
    """List cleaning runs."""
    from sqlalchemy import select

    from sanitize.catalog import Run

    ws = Workspace()
    t = Table("run", "dataset", "version", "status", "quarantined", "clean version", "started")
    with ws.catalog.session() as s:
        q = select(Run).order_by(Run.started_at)
        if dataset:
            q = q.where(Run.dataset == dataset)
        for r in s.scalars(q):
            t.add_row(
                r.id,
                r.dataset,
                r.version_id or "",
                r.status
                + (f": {r.error[:60]}" if r.error else "")
                + (f" (unchanged since {r.summary['same_as']})" if r.status == "skipped" and r.summary else ""),
                str((r.summary or {}).get("quarantined", "")),
                r.clean_version_id or "",
                f"{r.started_at:%Y-%m-%d %H:%M}",
            )
    console.print(t)


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = "latest") -> None:
    """Show a run's summary."""
    from sanitize.quarantine import resolve_run

    ws = Workspace()
    rid = resolve_run(ws, run_id)
    with ws.catalog.session() as s:
        summary = ws.catalog.run(s, rid).summary
    if summary and summary.get("skipped"):
        console.print(f"run {rid} was skipped: {summary['reason']}")
        return
    if not summary:
        raise SanitizeError(f"run {rid} has no summary (it did not complete)")
    print_summary(summary)


@quarantine_app.command("list")
def quarantine_list(
    run_id: Annotated[str, typer.Option("--run", help="Run id, or 'latest'.")] = "latest",
    dataset: Annotated[str | None, typer.Option(help="With --run latest: the latest run of this dataset.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, confirmed, released or relabelled.")] = None,
    label: Annotated[int | None, typer.Option(help="Only this class.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows (table format: 50 by default).")] = None,
    format: Annotated[OutFormat, typer.Option(help="table, csv or json.")] = OutFormat.table,
) -> None:
    """List quarantined samples, most suspicious first, with provenance and reasons."""
    from sanitize.quarantine import list_quarantine, resolve_run, status_counts

    ws = Workspace()
    rid = resolve_run(ws, run_id, dataset)
    if format is OutFormat.table and limit is None:
        limit = 50
    rows = list_quarantine(ws, rid, status=status, label=label, source=source, limit=limit)
    if format is OutFormat.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if format is OutFormat.csv:
        buf = io.StringIO()
        fields = list(rows[0].as_dict()) if rows else ["run_id", "sample_id"]
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r.as_dict())
        sys.stdout.write(buf.getvalue())
        return
    counts = status_counts(ws, rid)
    t = Table(title=f"quarantine of {rid}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    t.add_column("sample", no_wrap=True, min_width=20)
    for name in ("class", "source", "where", "score", "detectors", "status"):
        t.add_column(name, overflow="ellipsis", no_wrap=True)
    t.add_column("why (voter)", overflow="fold", ratio=1)
    for r in rows:
        t.add_row(
            r.sample_id,
            str(r.label),
            r.source,
            r.locator,
            f"{r.suspicion_score:.3g}",
            r.detectors,
            r.status,
            r.reason.split(";")[0],
        )
    console.print(t)


def _decide(
    action: str, sample_ids: list[str], run_id: str, reviewer: str | None, note: str | None, label: int | None = None
) -> None:
    import getpass

    from sanitize.quarantine import resolve_run
    from sanitize.review import decide

    ws = Workspace()
    rid = resolve_run(ws, run_id)
    who = reviewer or os.environ.get("SANITIZE_REVIEWER") or getpass.getuser()
    results = decide(ws, rid, sample_ids, action, reviewer=who, note=note, new_label=label)
    for r in results:
        console.print(f"{r.sample_id}: {r.status}" + ("" if r.changed else " (already; nothing changed)"))
    with ws.catalog.session() as s:
        from sqlalchemy import select

        from sanitize.catalog import Version

        approved = s.scalars(select(Version).where(Version.run_id == rid, Version.status == "approved")).all()
    for v in approved:
        console.print(f"run {rid} is fully reviewed: approved clean version [bold]{v.id}[/bold]")


ReviewIds = Annotated[list[str], typer.Argument(help="Sample ids from the quarantine.")]
ReviewRun = Annotated[str, typer.Option("--run", help="Run id, or 'latest'.")]
Reviewer = Annotated[str | None, typer.Option(help="Who decides (default: $SANITIZE_REVIEWER or the login).")]
Note = Annotated[str | None, typer.Option(help="A note kept with the decision.")]


@quarantine_app.command("confirm")
def quarantine_confirm(
    sample_ids: ReviewIds, run_id: ReviewRun = "latest", reviewer: Reviewer = None, note: Note = None
) -> None:
    """Confirm samples as poison: they stay out of every clean version."""
    _decide("confirm", sample_ids, run_id, reviewer, note)


@quarantine_app.command("release")
def quarantine_release(
    sample_ids: ReviewIds, run_id: ReviewRun = "latest", reviewer: Reviewer = None, note: Note = None
) -> None:
    """Release samples back into training."""
    _decide("release", sample_ids, run_id, reviewer, note)


@quarantine_app.command("relabel")
def quarantine_relabel(
    sample_ids: ReviewIds,
    label: Annotated[int, typer.Option(help="The corrected class.")],
    run_id: ReviewRun = "latest",
    reviewer: Reviewer = None,
    note: Note = None,
) -> None:
    """Release samples back into training under a corrected label."""
    _decide("relabel", sample_ids, run_id, reviewer, note, label)


@app.command("lineage")
def lineage_cmd(version: Annotated[str, typer.Argument(help="A version id.")]) -> None:
    """Print a version's chain back to the sources it came from."""
    from sanitize.lineage import lineage

    for depth, step in enumerate(lineage(Workspace(), version)):
        pad = "  " * depth
        made = f" by run {step.run_id}" if step.run_id else ""
        out = f", {step.excluded} samples excluded" if step.excluded is not None else ""
        console.print(escape(f"{pad}{step.version} [{step.kind}, {step.status}]{made}{out}, {step.created_at[:19]}"))
        for src in step.sources:
            console.print(
                f"{pad}  <- source {src['source']}: {src['samples']} samples from {src['uri']} "
                f"({src['format']}, ingest {src['ingest_id']}, {src['ingested_at'][:19]})"
            )
        for model in step.models:
            console.print(escape(f"{pad}  -> model {model.get('model')} trained by {model['by']}, {model['at'][:19]}"))


@app.command("export")
def export_cmd(
    version: Annotated[str, typer.Argument(help="A clean version id (c...).")],
    out: Annotated[Path, typer.Option(help="Folder to write into.")],
    format: Annotated[
        ExportFormat, typer.Option(help="parquet (with manifest), npz, or imagefolder (split/class/id.png).")
    ] = ExportFormat.parquet,
) -> None:
    """Copy a clean version out for a training job: Parquet + manifest, a NumPy .npz, or PNG files."""
    from sanitize.export import copy_out

    paths = copy_out(Workspace(), version, out, format.value)
    for p in paths:
        console.print(str(p))


reviewer_app = typer.Typer(help="Who may decide in the review web page.", no_args_is_help=True)
app.add_typer(reviewer_app, name="reviewer")


@reviewer_app.command("add")
def reviewer_add(
    name: Annotated[str, typer.Argument(help="The reviewer's name, recorded with each decision.")],
    rotate: Annotated[bool, typer.Option(help="Give an existing reviewer a new token (ends the old one).")] = False,
) -> None:
    """Make a reviewer and print their token, once: only its SHA-256 is stored."""
    from sanitize.web.auth import add_reviewer

    token = add_reviewer(Workspace().catalog, name, rotate=rotate)
    err.print(f"reviewer [bold]{escape(name)}[/bold]: their token, shown once (only its hash is kept):")
    print(token)


@reviewer_app.command("list")
def reviewer_list() -> None:
    """List reviewers and whether their token is active."""
    from sanitize.web.auth import list_reviewers

    t = Table("reviewer", "since", "state")
    for r in list_reviewers(Workspace().catalog):
        state = "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        t.add_row(escape(r.name), f"{r.created_at:%Y-%m-%d %H:%M}", state)
    console.print(t)


@reviewer_app.command("revoke")
def reviewer_revoke(name: Annotated[str, typer.Argument(help="The reviewer whose token stops working.")]) -> None:
    """Revoke a reviewer's token and end their browser sessions."""
    from sanitize.web.auth import revoke_reviewer

    changed = revoke_reviewer(Workspace().catalog, name)
    console.print(f"reviewer {escape(name)}: " + ("revoked" if changed else "was already revoked"))


@app.command("review")
def review_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
) -> None:
    """Serve the review web page: runs, quarantine, samples, pictures; decisions need a reviewer token."""
    import uvicorn

    from sanitize.web.app import create_app

    ws = Workspace()
    application = create_app(ws)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"review page: [bold]http://{shown}:{port}/[/bold] (data in {ws.settings.home}; Ctrl-C stops it)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]listening on {host}: anyone who can reach it can read the pages[/yellow]")
    uvicorn.run(application, host=host, port=port, log_level="warning")


# --- scheduled runs and the local stack -----------------------------------------------------------
@app.command()
def schedule(
    dataset: Annotated[str, typer.Option(help="Dataset to clean on a schedule.")],
    cron: Annotated[str | None, typer.Option(help="When, as cron in UTC, e.g. '0 3 * * *' (03:00 daily).")] = None,
    interval: Annotated[int | None, typer.Option(help="Or every this many seconds (at least 60).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Reference-model epochs (default: by dataset size).")] = None,
    contamination: Annotated[
        float | None, typer.Option(help="Expected poison share, if known (default: estimated).")
    ] = None,
    retrain: Annotated[bool, typer.Option(help="Retrain a clean model on the kept samples.")] = True,
    retrain_epochs: Annotated[
        int | None, typer.Option(help="Clean-model epochs (default: three times the reference model's, up to 40).")
    ] = None,
    retrain_augment: Annotated[
        str, typer.Option(help="The clean model's training augmentation: warp (random small warps) or none.")
    ] = "warp",
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    serve: Annotated[
        bool, typer.Option(help="Serve it now (starts a Prefect server); --no-serve only records it for 'up'.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
) -> None:
    """Clean a dataset on a schedule: each run reads its sources again, and skips when nothing changed."""
    from sanitize.schedule import ScheduleSpec, save_schedule

    redteam = RedTeamConfig(seed=seed) if dataset == DEFAULT_DATASET else None  # the demo shows a detection
    config = RunConfig(
        dataset=dataset,
        seed=seed,
        retrain=retrain,
        retrain_epochs=retrain_epochs,
        retrain_augment=retrain_augment,  # type: ignore[arg-type]  # validated by pydantic
        redteam=redteam,
        model=ModelConfig(epochs=epochs, device=device),
        detect=DetectConfig(contamination=contamination),
    )
    spec = ScheduleSpec(dataset=dataset, cron=cron, interval_seconds=interval, config=config)
    ws = Workspace()
    save_schedule(ws, spec)
    console.print(f"scheduled [bold]{dataset}[/bold]: {spec.describe()}, configuration {config.fingerprint()}")
    if serve:
        _serve_stack(ws, [spec], port=port, review_port=None)
    else:
        console.print("start it with: sanitize up")


@app.command()
def schedules() -> None:
    """List the datasets cleaned on a schedule."""
    from sanitize.schedule import list_schedules

    t = Table("dataset", "when", "configuration", "epochs", "retrain", "red team")
    for spec in list_schedules(Workspace()):
        c = spec.config
        t.add_row(
            spec.dataset,
            spec.describe(),
            c.fingerprint(),
            str(c.model.epochs or "auto"),
            "yes" if c.retrain else "no",
            c.redteam.attack if c.redteam else "",
        )
    console.print(t)


@app.command()
def unschedule(dataset: Annotated[str, typer.Argument(help="Dataset whose schedule stops.")]) -> None:
    """Stop cleaning a dataset on a schedule (its runs and versions stay)."""
    from sanitize.schedule import remove_schedule

    remove_schedule(Workspace(), dataset)
    console.print(f"{dataset} is no longer scheduled")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
    review_port: Annotated[int, typer.Option(help="Port of the review page on 127.0.0.1.")] = 8765,
) -> None:
    """Bring the local stack up: Prefect server, the scheduled datasets' runs, the review page."""
    from sanitize.schedule import list_schedules

    ws = Workspace()
    _serve_stack(ws, list_schedules(ws), port=port, review_port=review_port)


def _start_review_page(ws: Workspace, port: int) -> str:
    """Start the review page (``sanitize review``) in a background thread; say where it is."""
    import threading
    import time

    import uvicorn

    from flows.serve import port_taken
    from sanitize.web.app import create_app

    if port_taken("127.0.0.1", port):
        raise SanitizeError(f"127.0.0.1:{port} is in use; pick the review page's port with --review-port")
    server = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="review-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SanitizeError(f"the review page did not start on 127.0.0.1:{port}")
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/ (decisions need a reviewer token: sanitize reviewer add NAME)"


def _serve_stack(ws: Workspace, specs: list[Any], *, port: int, review_port: int | None) -> None:
    """Start (or find) the Prefect server, the review page, and serve ``specs`` until Ctrl-C."""
    import time

    from flows.serve import serve_schedules, start_server

    os.environ.setdefault("SANITIZE_HOME", str(ws.settings.home))
    console.print(f"Prefect server on 127.0.0.1:{port}: starting or connecting (up to a few minutes)...")
    server = start_server(ws.settings.home, port=port)
    try:
        how = f"started here, log {server.log}" if server.started_here else "already running"
        console.print(f"Prefect UI: [bold]{server.ui_url}[/bold] ({how})")
        if review_port is not None:
            console.print(f"review page: {_start_review_page(ws, review_port)}")
        if specs:
            for spec in specs:
                console.print(f"serving {spec.dataset}: {spec.describe()}")
            console.print("Ctrl-C stops serving" + (" and the server" if server.started_here else ""))
            serve_schedules(specs, server)
        else:
            console.print("no dataset is scheduled (add one: sanitize schedule --dataset NAME --cron '0 3 * * *')")
            console.print("Ctrl-C stops" + (" the server" if server.started_here else " the review page"))
            while server.process is None or server.process.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("copy-catalog")
def copy_catalog_cmd(
    to: Annotated[str, typer.Option(help="SQLAlchemy URL of an empty catalog, e.g. postgresql+psycopg://...")],
) -> None:
    """Copy this catalog (runs, quarantine, decisions, audit log...) into another database, ids unchanged."""
    from sanitize.catalog import Catalog
    from sanitize.migrate import copy_catalog

    ws = Workspace()
    target = Catalog(to)
    copied = copy_catalog(ws.catalog, target)
    target.dispose()
    console.print(f"copied {sum(copied.values())} rows from {ws.catalog.engine.url!r} to {target.engine.url!r}:")
    console.print(", ".join(f"{table} {n}" for table, n in copied.items() if n))
    console.print(f"use it: export SANITIZE_CATALOG_URL='{to}' (the data folder stays {ws.settings.home})")


def main() -> None:
    """Entry point: user errors print one clear line and exit 2; nothing half-written stays behind."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except (SanitizeError, ValidationError, ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
