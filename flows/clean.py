"""The cleaning run as a Prefect 3 flow: one task per stage, each calling :mod:`sanitize.pipeline`.

Tasks pass the run id and file paths, never arrays. The flow's parameter is the same typed
:class:`~sanitize.config.RunConfig` the CLI builds, so Prefect validates it and shows its fields.
Run it without a server (Prefect starts an ephemeral local API)::

    python -m flows.clean                       # the built-in digits demo
    sanitize run --prefect --dataset NAME       # the same through the CLI
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows import make_prefect_home
from sanitize import pipeline
from sanitize.config import RedTeamConfig, RunConfig
from sanitize.quarantine import QuarantineSummary
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

make_prefect_home()


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
def export(run_id: str, verdict_path: Path) -> str:
    ws = Workspace()
    return pipeline.export_stage(ws, RunContext.load(ws, run_id), verdict_path)


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
    return (
        f"# Cleaning run {summary['run_id']}\n\n| figure | value |\n|---|---|\n{rows}\n\n"
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
        clean_version = export(run_id, verdict)
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
