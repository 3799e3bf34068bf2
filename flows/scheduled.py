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
from prefect.states import Completed

from flows.clean import cleaning_flow, review_url
from sanitize import pipeline, schedule
from sanitize.config import RunConfig
from sanitize.errors import SanitizeError
from sanitize.workspace import Workspace


def _worth_retrying(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an I/O hiccup (a network share away for a moment), not a source that is gone or wrong."""
    return not isinstance(state.result(raise_on_failure=False), SanitizeError)


@task(name="read sources again", retries=2, retry_delay_seconds=30, retry_condition_fn=_worth_retrying)
def refresh(dataset: str) -> dict[str, Any]:
    logger = get_run_logger()
    logger.info("reading the sources of %s again", dataset)
    refreshed = schedule.refresh_sources(Workspace(), dataset).as_dict()
    for src in refreshed["sources"]:
        logger.info("source %s (%s, %s): %s", src["source"], src["format"], src["uri"], src["outcome"])
    logger.info(
        "%s is at version %s (%s)", dataset, refreshed["version"], "new" if refreshed["changed"] else "unchanged"
    )
    return refreshed


@task(name="check the run")
def check(config: RunConfig) -> str:
    version = pipeline.check_run(Workspace(), config)
    get_run_logger().info("version %s of %s can be cleaned", version, config.dataset)
    return version


@task(name="skip if unchanged")
def skip_if_unchanged(config: RunConfig, version: str) -> dict[str, Any] | None:
    """The summary of a recorded skip when this configuration already cleaned ``version``; else None."""
    ws = Workspace()
    previous = schedule.previous_equivalent_run(ws, config, version)
    if previous is None:
        get_run_logger().info("version %s is new to configuration %s: cleaning it", version, config.fingerprint())
        return None
    run_id = schedule.record_skip(ws, config, version, previous)
    get_run_logger().info("run %s skipped: nothing changed since run %s", run_id, previous)
    with ws.catalog.session() as s:
        return {"run_id": run_id, "dataset": config.dataset, **(ws.catalog.run(s, run_id).summary or {})}


def skip_markdown(skipped: dict[str, Any]) -> str:
    """The Prefect artifact of a skipped run: why, and the review page of the run it is the same as."""
    page = review_url(f"/runs/{skipped['same_as']}")
    return (
        f"# Skipped run {skipped['run_id']}\n\n{skipped['reason']}\n\n"
        f"Nothing was cleaned again. Run {skipped['same_as']} cleaned this version: review it at [{page}]({page})\n"
    )


@flow(name="sanitize-scheduled-clean", log_prints=True)
def scheduled_cleaning_flow(config: RunConfig) -> dict[str, Any] | State[dict[str, Any]]:
    """Sources read again -> skip when version and configuration are unchanged -> the cleaning flow.

    A skip ends the flow run in a Completed state named ``Skipped`` (Prefect's convention for a run
    that had nothing to do), its data the skip's record; a cleaning run ends it as the subflow did.
    """
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
    skipped = skip_if_unchanged(config, version)
    if skipped is not None:
        create_markdown_artifact(
            markdown=skip_markdown(skipped), key="cleaning-run-summary", description=f"Skipped run {skipped['run_id']}"
        )
        logger.info("run %s skipped: %s", skipped["run_id"], skipped["reason"])
        return Completed(name="Skipped", message=skipped["reason"], data=skipped)
    # Clean exactly the version the sources gave, even if another ingest lands meanwhile.
    return cleaning_flow(config=config.model_copy(update={"version": version}))
