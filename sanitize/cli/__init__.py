"""The ``sanitize`` command line.

``sanitize run`` with no arguments cleans the built-in default: scikit-learn's digits with a
simulated BadNets poisoning (5 % of the training set, target class 0), so the detection is visible.

Every command and option is declared here, once; the run options come from the pydantic config
(:mod:`sanitize.cli.options`). The library never imports ``flows/``, so the three things that need
Prefect (``run --prefect``, ``schedule`` serving, ``up``) call an
:class:`~sanitize.cli.cleaning.Orchestration` handed in through click's context object:
:func:`main` takes it, and the installed ``sanitize`` command (:func:`flows.cli.main`) passes
Prefect's. This keeps one app (``python -m sanitize.cli --help`` lists what ``sanitize --help``
does) and lets every other command run, and be tested, without Prefect. The other design, flows
adding or overriding commands on this app, would have declared ``run`` and ``schedule`` twice.

Start-up: the commands import torch (``sanitize.pipeline``) and FastAPI (``sanitize.web.app``) only
where they need them: ``sanitize --help`` takes about 0.9 s of CPU so, 4.5 s with them (measured
with ``time``); every other import is at the top of its module.
"""

from __future__ import annotations

import logging

import typer
from pydantic import ValidationError
from rich.markup import escape

from sanitize.cli import cleaning, datasets, integrity, maintenance, review
from sanitize.cli.cleaning import Orchestration
from sanitize.cli.output import err, error_message
from sanitize.errors import SanitizeError

__all__ = ["Orchestration", "app", "main"]

app = typer.Typer(
    help="Find backdoor-poisoned training samples, quarantine them, export clean versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
quarantine_app = typer.Typer(help="The quarantine of a run.", no_args_is_help=True)
reviewer_app = typer.Typer(help="Who may decide in the review web page.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(reviewer_app, name="reviewer")

# In the order ``sanitize --help`` lists them.
app.command()(cleaning.run)
app.command()(datasets.ingest)
app.command()(datasets.datasets)
app.command()(datasets.versions)
app.command()(datasets.runs)
app.command()(datasets.show)
app.command("lineage")(datasets.lineage_cmd)
app.command("export")(datasets.export_cmd)
app.command("review")(review.review_cmd)
app.command("approve")(review.approve_cmd)
app.command()(cleaning.schedule)
app.command()(cleaning.trigger)
app.command()(cleaning.schedules)
app.command()(cleaning.unschedule)
app.command()(cleaning.up)
app.command("copy-catalog")(datasets.copy_catalog_cmd)
app.command("verify")(integrity.verify_cmd)
app.command()(maintenance.gc)
quarantine_app.command("list")(review.quarantine_list)
quarantine_app.command("confirm")(review.quarantine_confirm)
quarantine_app.command("release")(review.quarantine_release)
quarantine_app.command("relabel")(review.quarantine_relabel)
quarantine_app.command("add")(review.quarantine_add)
quarantine_app.command("undo")(review.quarantine_undo)
reviewer_app.command("add")(review.reviewer_add)
reviewer_app.command("list")(review.reviewer_list)
reviewer_app.command("revoke")(review.reviewer_revoke)


def main(orchestration: Orchestration | None = None) -> None:
    """Entry point: user errors print one clear line and exit 2; nothing half-written stays behind.

    ``orchestration`` runs what needs Prefect; without it those commands exit 2 saying so.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(obj=orchestration)
    except (SanitizeError, ValidationError, ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {escape(error_message(exc))}", highlight=False)
        raise SystemExit(2) from None
