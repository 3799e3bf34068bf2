"""The scheduled cleaning run as a Prefect flow: read the sources again, skip if nothing changed, clean.

Served as one deployment per scheduled dataset by ``sanitize schedule`` and ``sanitize up``
(:mod:`flows.serve`). The steps are library calls (:mod:`sanitize.schedule`); the cleaning itself is
:func:`flows.clean.cleaning_flow`, run as a subflow. A failure anywhere fails the flow run in Prefect
and leaves a failed run with its error in the catalog.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State, TaskRun

from flows.clean import cleaning_flow
from sanitize import pipeline, schedule
from sanitize.config import RunConfig
from sanitize.errors import SanitizeError
from sanitize.workspace import Workspace


def _worth_retrying(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an I/O hiccup (a network share away for a moment), not a source that is gone or wrong."""
    return not isinstance(state.result(raise_on_failure=False), SanitizeError)


@task(name="read sources again", retries=2, retry_delay_seconds=30, retry_condition_fn=_worth_retrying)
def refresh(dataset: str) -> dict[str, Any]:
    return schedule.refresh_sources(Workspace(), dataset).as_dict()


@task(name="check the run")
def check(config: RunConfig) -> str:
    return pipeline.check_run(Workspace(), config)


@task(name="skip if unchanged")
def skip_if_unchanged(config: RunConfig, version: str) -> dict[str, Any] | None:
    """The summary of a recorded skip when this configuration already cleaned ``version``; else None."""
    ws = Workspace()
    previous = schedule.previous_equivalent_run(ws, config, version)
    if previous is None:
        return None
    run_id = schedule.record_skip(ws, config, version, previous)
    with ws.catalog.session() as s:
        return {"run_id": run_id, "dataset": config.dataset, **(ws.catalog.run(s, run_id).summary or {})}


@flow(name="sanitize-scheduled-clean", log_prints=True)
def scheduled_cleaning_flow(config: RunConfig) -> dict[str, Any]:
    """Sources read again -> skip when version and configuration are unchanged -> the cleaning flow."""
    logger = get_run_logger()
    try:
        refreshed = refresh(config.dataset)
        # A run that cannot work (its model is gone, say) is refused before it records anything;
        # a scheduled one must still leave a failed run for the team to see.
        check(config.model_copy(update={"version": refreshed["version"]}))
    except BaseException as exc:
        run_id = schedule.record_failure(Workspace(), config, exc)
        logger.error("run %s failed before cleaning: %s", run_id, exc)
        raise
    version = refreshed["version"]
    for src in refreshed["sources"]:
        logger.info("source %s (%s, %s): %s", src["source"], src["format"], src["uri"], src["outcome"])
    skipped = skip_if_unchanged(config, version)
    if skipped is not None:
        create_markdown_artifact(
            markdown=f"# Skipped run {skipped['run_id']}\n\n{skipped['reason']}\n",
            key="cleaning-run-summary",
            description=f"Skipped run {skipped['run_id']}",
        )
        logger.info("run %s skipped: %s", skipped["run_id"], skipped["reason"])
        return skipped
    # Clean exactly the version the sources gave, even if another ingest lands meanwhile.
    return cleaning_flow(config=config.model_copy(update={"version": version}))
