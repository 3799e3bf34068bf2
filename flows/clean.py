"""The cleaning run as a Prefect 3 flow: one task per stage, each calling :mod:`sanitize.pipeline`.

Tasks pass the run id and file paths, never arrays. The flow's parameter is the same typed
:class:`~sanitize.config.RunConfig` the CLI builds, so Prefect validates it and shows its fields.
Run it without a server (Prefect starts an ephemeral local API)::

    python -m flows.clean                       # the built-in digits demo
    sanitize run --prefect --dataset NAME       # the same through the CLI
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError

from flows import make_prefect_home
from sanitize import pipeline
from sanitize.config import RedTeamConfig, RunConfig
from sanitize.quarantine import QuarantineSummary
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

make_prefect_home()

DEFAULT_REVIEW_URL = "http://127.0.0.1:8765"


def review_url(path: str = "/") -> str:
    """The review page's address for ``path``: ``SANITIZE_REVIEW_URL`` (``sanitize up`` sets it to the
    page it serves), else where ``sanitize review`` listens by default."""
    return os.environ.get("SANITIZE_REVIEW_URL", DEFAULT_REVIEW_URL).rstrip("/") + path


class RunLogHandler(logging.Handler):
    """Hands the library's progress lines (logger ``sanitize.run``: each stage's start and duration,
    what a run cannot measure, its approval) to the Prefect task or flow run they happen in, so each
    task's log in the UI says what it did. Outside a run they are left to the usual handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = get_run_logger()
        except MissingContextError:
            return
        logger.log(record.levelno, record.getMessage())


def _forward_run_log() -> None:
    library = logging.getLogger("sanitize.run")
    if not any(isinstance(h, RunLogHandler) for h in library.handlers):
        library.addHandler(RunLogHandler())
    library.setLevel(logging.INFO)
    library.propagate = False  # Prefect's console handler on the root would print each line twice


_forward_run_log()


def _progress() -> bool:
    """Progress bars only on a terminal; in logs and CI they would be thousands of lines."""
    return sys.stderr.isatty()


@task(name="start run")
def start(config: RunConfig) -> str:
    return pipeline.start_run(Workspace(), config).run_id


@task(name="red-team poisoning")
def poison(run_id: str) -> str:
    ws = Workspace()
    return pipeline.poison_stage(ws, RunContext.load(ws, run_id)).version


@task(name="train reference model")
def train_reference(run_id: str) -> Path:
    ws = Workspace()
    return pipeline.train_reference_stage(ws, RunContext.load(ws, run_id), progress=_progress())


@task(name="extract features")
def features(run_id: str, model_path: Path) -> Path:
    ws = Workspace()
    return pipeline.features_stage(ws, RunContext.load(ws, run_id), model_path, progress=_progress())


@task(name="detect")
def detect(run_id: str, features_path: Path) -> Path:
    ws = Workspace()
    return pipeline.detect_stage(ws, RunContext.load(ws, run_id), features_path)


@task(name="quarantine")
def quarantine(run_id: str, verdict_path: Path) -> QuarantineSummary:
    ws = Workspace()
    return pipeline.quarantine_stage(ws, RunContext.load(ws, run_id), verdict_path)


@task(name="retrain clean model")
def retrain(run_id: str, verdict_path: Path) -> Path | None:
    ws = Workspace()
    return pipeline.retrain_stage(ws, RunContext.load(ws, run_id), verdict_path, progress=_progress())


@task(name="evaluate")
def evaluate(run_id: str, reference: Path, clean_model: Path | None, verdict_path: Path) -> dict[str, Any]:
    ws = Workspace()
    return pipeline.evaluate_stage(ws, RunContext.load(ws, run_id), reference, clean_model, verdict_path)


@task(name="export clean version")
def export(run_id: str, verdict_path: Path, figures: dict[str, Any]) -> str:
    ws = Workspace()
    return pipeline.export_stage(ws, RunContext.load(ws, run_id), verdict_path, figures)


@task(name="finish run")
def finish(
    run_id: str, counts: QuarantineSummary, figures: dict[str, Any], clean_version: str, clean_model: Path | None
) -> dict[str, Any]:
    ws = Workspace()
    return pipeline.finish_run(ws, RunContext.load(ws, run_id), counts, figures, clean_version, clean_model).summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run's summary as a Markdown table for the Prefect UI."""

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    keys = [
        "dataset",
        "version",
        "ingested",
        "quarantined",
        "kept",
        "estimated_poison_rate",
        "recall",
        "precision",
        "fpr",
        "auroc",
        "clean_acc_before",
        "clean_acc_after",
        "asr_before",
        "asr_after",
        "clean_version",
        "seconds",
    ]
    rows = "\n".join(f"| {k} | {fmt(summary.get(k))} |" for k in keys if k in summary)
    sources = "\n".join(
        f"| {src} | {v['samples']} | {v['quarantined']} | {v['share']:.2%} |"
        for src, v in summary.get("per_source", {}).items()
    )
    approval = summary.get("approval") or {}
    verdict = "".join(
        f"{line}\n\n"
        for line in (
            *(f"**{w}**" for w in summary.get("warnings") or []),
            f"**{approval['detection_failed']}**" if approval.get("detection_failed") else "",
            f"Clean version `{summary['clean_version']}` is **{approval['version_status']}**: {approval['why']}"
            if approval
            else "",
        )
        if line
    )
    page = review_url(f"/runs/{summary['run_id']}")
    return (
        f"# Cleaning run {summary['run_id']}\n\n{verdict}Review it: [{page}]({page})\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n\n"
        f"## Per source\n\n| source | samples | quarantined | share |\n|---|---|---|---|\n{sources}\n"
    )


@flow(name="sanitize-clean", log_prints=True)
def cleaning_flow(config: RunConfig = RunConfig(redteam=RedTeamConfig())) -> dict[str, Any]:  # noqa: B008
    """Ingested version -> reference model -> features -> detectors -> quarantine -> retrain -> export."""
    logger = get_run_logger()
    run_id = start(config)
    try:
        poison(run_id)
        reference = train_reference(run_id)
        feats = features(run_id, reference)
        verdict = detect(run_id, feats)
        counts = quarantine(run_id, verdict)
        clean_model = retrain(run_id, verdict)
        figures = evaluate(run_id, reference, clean_model, verdict)
        clean_version = export(run_id, verdict, figures)
        summary = finish(run_id, counts, figures, clean_version, clean_model)
    except BaseException as exc:
        pipeline.fail_run(Workspace(), run_id, exc)
        raise
    create_markdown_artifact(
        markdown=summary_markdown(summary), key="cleaning-run-summary", description=f"Cleaning run {run_id}"
    )
    logger.info(
        "run %s: quarantined %s of %s, clean version %s",
        run_id,
        summary["quarantined"],
        summary["ingested"],
        clean_version,
    )
    return summary


if __name__ == "__main__":
    cleaning_flow()
