"""Approval: a clean version with nothing to review is approved at once only when the policy says so,
a red team that shows the poison is still there approves nothing, and a run without a test split
says what it cannot measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import Run, Version
from sanitize.config import ModelConfig, RedTeamConfig, RunConfig
from sanitize.demo import digits_arrays
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning
from sanitize.quarantine import list_quarantine
from sanitize.review import decide
from sanitize.runs import ApprovalRefused, approval_policy, approve_run, detection_failure
from sanitize.workspace import Workspace


def one_line(text: str) -> str:
    return " ".join(text.split())


def ingest_digits(ws: Workspace, tmp_path: Path, dataset: str, *, n_train: int = 400, n_test: int = 60) -> str:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    arrays = {"x_train": x_tr[:n_train], "y_train": y_tr[:n_train]}
    if n_test:
        arrays |= {"x_test": x_te[:n_test], "y_test": y_te[:n_test]}
    npz = tmp_path / f"{dataset}.npz"
    np.savez(npz, **arrays)  # type: ignore[arg-type]
    return ingest_path(ws.catalog, ws.store, dataset=dataset, path=npz, source="vendor-a").version_id


def quick(dataset: str, **options: Any) -> RunConfig:
    return RunConfig(dataset=dataset, model=ModelConfig(epochs=2), retrain=False, **options)


def status_of(ws: Workspace, version: str | None) -> str:
    assert version is not None
    with ws.catalog.session() as s:
        return ws.catalog.version(s, version).status


# --- the red team's verdict, in words ----------------------------------------------------------------


def test_a_red_team_that_found_nothing_says_detection_failed_in_words() -> None:
    figures = {"recall": 0.0, "asr_before": 0.979, "asr_after": 0.354}
    failure = detection_failure(figures)
    assert failure is not None
    assert failure.startswith("detection failed: recall 0 %, ASR 97.9 % before -> 35.4 % after (")
    assert "under 50%" in failure and "clean-data floor (3.0 %, assumed) + 2 points" in failure


@pytest.mark.parametrize(
    ("figures", "fails"),
    [
        ({"recall": 1.0, "asr_before": 1.0, "asr_after": 0.05}, False),  # 3 % assumed + 2 points
        ({"recall": 1.0, "asr_before": 1.0, "asr_after": 0.051}, True),
        ({"recall": 1.0, "asr_before": 1.0, "asr_after": 0.03, "asr_floor": 0.005}, True),  # measured floor
        ({"recall": 1.0, "asr_before": 1.0, "asr_after": 0.024, "asr_floor": 0.005}, False),
        ({"recall": 0.5, "asr_before": 1.0, "asr_after": None}, False),  # ASR not measured: recall alone
        ({"recall": 0.49, "asr_before": None, "asr_after": None}, True),
        ({"clean_acc_after": 0.9}, False),  # no red team
    ],
)
def test_the_bars_are_recall_half_and_asr_two_points_over_the_floor(figures: dict[str, Any], fails: bool) -> None:
    assert (detection_failure(figures) is not None) is fails


# --- the policy ----------------------------------------------------------------------------------------


def test_a_datasets_first_clean_version_waits_for_a_person_then_later_ones_are_approved_at_once(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    ingest_digits(ws, tmp_path, "plain")
    assert approval_policy(ws, quick("plain")).policy == "review"

    first = run_cleaning(quick("plain"), ws, progress=False)
    assert first.summary["quarantined"] == 0, "clean digits: the detectors flag nothing"
    approval = first.summary["approval"]
    assert (approval["policy"], approval["version_status"]) == ("review", "provisional")
    assert f"sanitize approve {first.run_id}" in approval["why"]
    assert status_of(ws, first.clean_version) == "provisional"

    approved = CliRunner().invoke(cli.app, ["approve", first.run_id, "--reviewer", "ana", "--note", "looked"])
    assert approved.exit_code == 0, approved.output
    assert f"clean version {first.clean_version} is approved" in one_line(approved.output)
    assert status_of(ws, first.clean_version) == "approved"

    # The dataset has an approved version: the next run that flags nothing is approved at once.
    second = run_cleaning(quick("plain", seed=1), ws, progress=False)
    assert second.summary["approval"]["policy_from"] == "by default: the dataset has an approved version"
    assert status_of(ws, second.clean_version) == "approved"


def test_the_policy_given_is_recorded_and_becomes_the_datasets(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ingest_digits(ws, tmp_path, "auto-shop")
    first = run_cleaning(quick("auto-shop", approve="auto"), ws, progress=False)
    assert first.summary["approval"]["policy_from"] == "--approve"
    assert status_of(ws, first.clean_version) == "approved"
    with ws.catalog.session() as s:
        assert ws.catalog.run(s, first.run_id).config["approve"] == "auto"

    # Not given again: the dataset keeps the policy its last run was given.
    policy = approval_policy(ws, quick("auto-shop"))
    assert (policy.policy, policy.given_by) == ("auto", f"the dataset's policy, given to run {first.run_id}")
    assert approval_policy(ws, quick("auto-shop", approve="review")).policy == "review"
    review = run_cleaning(quick("auto-shop", approve="review", seed=2), ws, progress=False)
    assert approval_policy(ws, quick("auto-shop")).policy == "review"
    # The same clean version again: published and approved before, it stays approved, and the
    # summary says what the version is, not what this run would have made it.
    assert review.clean_version == first.clean_version and status_of(ws, review.clean_version) == "approved"
    assert review.summary["approval"]["version_status"] == "approved"
    assert f"published by run {first.run_id}, is approved" in review.summary["approval"]["why"]


def test_the_approval_policy_is_an_option_of_run_and_schedule_and_not_part_of_the_fingerprint() -> None:
    fingerprints = {quick("x", approve=policy).fingerprint() for policy in ("auto", "review", None)}
    assert fingerprints == {quick("x").fingerprint()}
    bad = CliRunner().invoke(cli.app, ["run", "--dataset", "x", "--approve", "always"])
    assert bad.exit_code == 2 and "--approve" in bad.output
    for command in ("run", "schedule"):
        shown = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--approve" in shown.output and "<auto|review>" in shown.output


def test_approving_by_hand_is_refused_while_entries_are_pending(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1), retrain=False)
    result = run_cleaning(config, workspace, progress=False)
    assert result.summary["quarantined"] > 0
    with pytest.raises(ApprovalRefused, match=r"pending quarantine entries: decide them"):
        approve_run(workspace, result.run_id, reviewer="ana")
    refused = CliRunner().invoke(cli.app, ["approve", result.run_id])  # main() prints it on one line, exit 2
    assert isinstance(refused.exception, ApprovalRefused)
    assert status_of(workspace, result.clean_version) == "provisional"


# --- a red team that shows the poison is still there ------------------------------------------------


def test_a_failed_detection_approves_nothing_and_says_so(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import sanitize.pipeline

    real = sanitize.pipeline.measure_run

    def missed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # What a red team that the detectors missed measures: its trigger still works on the clean model.
        return {**real(*args, **kwargs), "recall": 0.0, "asr_before": 0.979, "asr_after": 0.354}

    monkeypatch.setattr(sanitize.pipeline, "measure_run", missed)
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1), retrain=False, approve="auto")
    result = run_cleaning(config, workspace, progress=False)

    approval = result.summary["approval"]
    assert approval["detection_failed"].startswith("detection failed: recall 0 %, ASR 97.9 % before -> 35.4 % after")
    assert approval["version_status"] == "provisional" and "not approved" in approval["why"]
    shown = CliRunner().invoke(cli.app, ["show", result.run_id], env={"COLUMNS": "200"})
    assert "detection failed: recall 0 %, ASR 97.9 % before -> 35.4 % after" in one_line(shown.output)

    # Every flag confirmed: the decisions stand, the version is still not approved.
    ids = [r.sample_id for r in list_quarantine(workspace, result.run_id)]
    with pytest.raises(ApprovalRefused, match="detection failed"):
        decide(workspace, result.run_id, ids, "confirm", reviewer="ana")
    with pytest.raises(ApprovalRefused, match="detection failed"):
        approve_run(workspace, result.run_id, reviewer="ana")
    with workspace.catalog.session() as s:
        assert s.scalars(select(Version).where(Version.status == "approved")).first() is None
        assert {e.status for e in list_quarantine(workspace, result.run_id)} == {"confirmed"}


# --- a run without a test split -------------------------------------------------------------------------


def test_a_run_without_a_test_split_says_at_its_start_and_in_its_summary_what_it_cannot_measure(
    workspace: Workspace, tmp_path: Path
) -> None:
    ingest_digits(workspace, tmp_path, "no-test", n_test=0)
    ran = CliRunner().invoke(
        cli.app,
        ["run", "--dataset", "no-test", "--epochs", "2", "--no-retrain", "--poison", "badnets"],
        env={"COLUMNS": "200"},
    )
    assert ran.exit_code == 0, ran.output
    out = one_line(ran.output)
    said = "has no test split: clean accuracy and the attack success rate cannot be measured"
    start, summary = out.index(said), out.rindex(said)
    assert start < out.index("train reference ...") < summary  # at the start, and again in the summary
    with workspace.catalog.session() as s:
        run = s.scalars(select(Run)).one()
    assert run.summary is not None and run.summary["measurable"] is False
    assert [said in w for w in run.summary["warnings"]] == [True]


def test_each_stage_says_when_it_starts_and_how_long_it_took(workspace: Workspace, tmp_path: Path) -> None:
    ingest_digits(workspace, tmp_path, "timed")
    ran = CliRunner().invoke(cli.app, ["run", "--dataset", "timed", "--epochs", "2", "--no-retrain"])
    assert ran.exit_code == 0, ran.output
    for stage in ("train reference", "features", "detect", "quarantine", "evaluate", "export"):
        assert f"{stage} ..." in ran.output and f"{stage} done in " in ran.output
