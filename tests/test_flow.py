"""The Prefect flow end to end on the digits demo, against a throw-away Prefect API."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanitize.catalog import Run
from sanitize.config import Settings
from sanitize.workspace import Workspace

TASKS = {
    "start run",
    "red-team poisoning",
    "train reference model",
    "extract features",
    "detect",
    "quarantine",
    "retrain clean model",
    "evaluate",
    "export clean version",
    "finish run",
}


@pytest.mark.usefixtures("prefect_harness")
def test_the_cleaning_flow_cleans_the_digits_demo_and_publishes_a_summary(sanitize_home: Path) -> None:
    # Imported here: Prefect must first see the harness's environment (see conftest.py).
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.clean import cleaning_flow

    state = cleaning_flow(return_state=True)  # the flow's default: digits, BadNets on 5 %, target 0

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["dataset"] == "digits-demo" and summary["redteam"]["attack"] == "badnets"
    assert summary["recall"] >= 0.95 and summary["precision"] >= 0.8
    assert summary["asr_before"] >= 0.8 and summary["asr_after"] <= 0.05
    assert summary["clean_acc_after"] >= 0.9
    assert summary["kept"] + summary["quarantined"] == summary["ingested"] == 1437

    # The flow worked on SANITIZE_HOME and recorded the run there.
    ws = Workspace(Settings(home=sanitize_home, catalog_url=None))
    with ws.catalog.session() as s:
        run = s.get(Run, summary["run_id"])
        assert run is not None
        assert (run.status, run.clean_version_id) == ("completed", summary["clean_version"])
    assert (sanitize_home / "runs" / summary["run_id"] / "verdict.parquet").is_file()

    artifact = Artifact.get("cleaning-run-summary")
    assert artifact is not None
    assert artifact.type == "markdown"
    assert artifact.flow_run_id == state.state_details.flow_run_id
    markdown = str(artifact.data)
    assert markdown.startswith(f"# Cleaning run {summary['run_id']}")
    assert f"| quarantined | {summary['quarantined']} |" in markdown
    assert f"| recall | {summary['recall']:.4f} |" in markdown
    assert f"| clean_version | {summary['clean_version']} |" in markdown
    assert f"| sklearn-digits | 1437 | {summary['quarantined']} |" in markdown

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert {t.name.rsplit("-", 1)[0] for t in task_runs} == TASKS
    assert all(t.state is not None and t.state.is_completed() for t in task_runs)

    # Each task's log says what it did: the stage's start and duration (the library's progress lines).
    APILogHandler().flush()  # the logs go to the API in batches: send what is queued
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    by_task = {t.id: t.name.rsplit("-", 1)[0] for t in task_runs}
    said: dict[str, list[str]] = {}
    for record in logs:
        if record.task_run_id in by_task:
            said.setdefault(by_task[record.task_run_id], []).append(record.message)
    assert any(m.startswith("detect done in ") for m in said["detect"]), said.get("detect")
    assert any(m == "train reference ..." for m in said["train reference model"])
    assert any("is provisional: " in m for m in said["export clean version"])
    assert "Review it: [http://127.0.0.1:8765/runs/" in markdown
