"""Cleaning from the command line: ``run``, ``schedule``, ``schedules``, ``unschedule`` and ``up``.

A run in this process needs only the library. A run as a Prefect flow (``run --prefect``), serving a
schedule (``schedule``, unless ``--no-serve``) and the local stack (``up``) need Prefect, which lives
in ``flows/``; the library never imports it. These commands call an :class:`Orchestration` that the
``sanitize`` command (:mod:`flows.cli`) passes in as click's context object. Without one (``python -m
sanitize.cli``) they exit 2 saying so.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Protocol, cast

import typer
from rich.markup import escape
from rich.table import Table

from sanitize.cli.options import config_options
from sanitize.cli.output import console, print_summary, show_progress
from sanitize.config import RunConfig
from sanitize.errors import NotFoundError, SanitizeError
from sanitize.schedule import ScheduleSpec, list_schedules, remove_schedule, save_schedule
from sanitize.workspace import Workspace


class Orchestration(Protocol):
    """What the commands that need Prefect call; :class:`flows.cli.PrefectOrchestration` is the one."""

    def clean(self, config: RunConfig) -> dict[str, Any]:
        """Run the cleaning as the Prefect flow; return the run's summary."""
        ...

    def serve(self, ws: Workspace, specs: list[ScheduleSpec], *, port: int, review_port: int | None) -> None:
        """Start (or find) the Prefect server, the review page on ``review_port``, serve ``specs`` until Ctrl-C."""
        ...

    def trigger(self, ws: Workspace, spec: ScheduleSpec, *, port: int, here: bool) -> dict[str, Any]:
        """Run ``spec``'s scheduled flow now: as a flow run of its deployment on the Prefect server at
        ``port`` (``where``: ``server``, with ``flow_run_id``, ``url``, ``served``), or in this process
        (``where``: ``here``, with the flow's ``state`` name and the run's ``summary``)."""
        ...


def _orchestration(ctx: typer.Context, what: str) -> Orchestration:
    if ctx.obj is None:
        raise SanitizeError(
            f"{what} needs Prefect: use the installed 'sanitize' command (flows.cli), not 'python -m sanitize.cli'"
        )
    return cast(Orchestration, ctx.obj)


@config_options()
def run(
    ctx: typer.Context,
    config: RunConfig,
    prefect: Annotated[bool, typer.Option(help="Run as the Prefect flow (records it in Prefect).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a complete cleaning run: features, detectors, quarantine, retrain, clean export."""
    if prefect:
        summary = _orchestration(ctx, "--prefect").clean(config)
    else:
        from sanitize.pipeline import run_cleaning  # deferred: torch (see the start-up note in sanitize.cli)

        show_progress()
        summary = run_cleaning(config, Workspace(), progress=sys.stderr.isatty()).summary
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)


# A scheduled run cleans the dataset's current version: ScheduleSpec refuses a pinned one.
@config_options(exclude=("version",), required=("dataset",))
def schedule(
    ctx: typer.Context,
    config: RunConfig,
    cron: Annotated[str | None, typer.Option(help="When, as cron in UTC, e.g. '0 3 * * *' (03:00 daily).")] = None,
    interval: Annotated[int | None, typer.Option(help="Or every this many seconds (at least 60).")] = None,
    serve: Annotated[
        bool, typer.Option(help="Serve it now (starts a Prefect server); --no-serve only records it for 'up'.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
) -> None:
    """Clean a dataset on a schedule: each run reads its sources again, and skips when nothing changed."""
    spec = ScheduleSpec(dataset=config.dataset, cron=cron, interval_seconds=interval, config=config)
    orchestration = _orchestration(ctx, "serving a schedule (--serve)") if serve else None
    ws = Workspace()
    save_schedule(ws, spec)
    console.print(
        f"scheduled [bold]{escape(spec.dataset)}[/bold]: {escape(spec.describe())}, "
        f"configuration {config.fingerprint()}"
    )
    if orchestration is None:
        console.print("start it with: sanitize up")
    else:
        orchestration.serve(ws, [spec], port=port, review_port=None)


def trigger(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A scheduled dataset.")],
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
    here: Annotated[
        bool, typer.Option(help="Run it in this process, even where a Prefect server serves the schedule.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was started as JSON.")] = False,
) -> None:
    """Run a scheduled dataset's cleaning now, as its schedule would (sources read again, skip if unchanged).

    With a Prefect server up on --port that has the schedule's deployment, it starts a flow run of it
    there (the process serving it, 'sanitize up' or 'sanitize schedule', runs it); otherwise, or with
    --here, it runs the scheduled flow in this process.
    """
    ws = Workspace()
    spec = next((s for s in list_schedules(ws) if s.dataset == dataset), None)
    if spec is None:
        raise NotFoundError(
            f"dataset {dataset!r} has no schedule; "
            f"add one with: sanitize schedule --dataset {dataset} --cron '0 3 * * *'"
        )
    started = _orchestration(ctx, "trigger").trigger(ws, spec, port=port, here=here)
    if as_json:
        print(json.dumps(started, indent=2, default=str))
        return
    if started["where"] == "server":
        run = escape(started["flow_run"])
        console.print(f"started flow run [bold]{run}[/bold] of {escape(dataset)}: {started['url']}")
        if not started["served"]:
            console.print("[yellow]nothing serves this schedule now: the run waits for 'sanitize up'[/yellow]")
        return
    summary = started["summary"]
    if started["state"] == "Skipped":
        console.print(escape(f"run {summary['run_id']} skipped: {summary['reason']}"))
    else:
        print_summary(summary)


def schedules() -> None:
    """List the datasets cleaned on a schedule."""
    t = Table("dataset", "when", "configuration", "epochs", "retrain", "red team", "approve")
    for spec in list_schedules(Workspace()):
        c = spec.config
        t.add_row(
            escape(spec.dataset),
            escape(spec.describe()),
            c.fingerprint(),
            str(c.model.epochs or "auto"),
            "yes" if c.retrain else "no",
            c.redteam.attack if c.redteam else "",
            c.approve or "dataset's",
        )
    console.print(t)


def unschedule(dataset: Annotated[str, typer.Argument(help="Dataset whose schedule stops.")]) -> None:
    """Stop cleaning a dataset on a schedule (its runs and versions stay)."""
    remove_schedule(Workspace(), dataset)
    console.print(f"{escape(dataset)} is no longer scheduled")


def up(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
    review_port: Annotated[int, typer.Option(help="Port of the review page on 127.0.0.1.")] = 8765,
) -> None:
    """Bring the local stack up: Prefect server, the scheduled datasets' runs, the review page."""
    orchestration = _orchestration(ctx, "up")
    ws = Workspace()
    orchestration.serve(ws, list_schedules(ws), port=port, review_port=review_port)
