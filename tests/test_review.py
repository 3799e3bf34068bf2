"""Review decisions: confirm, release, relabel; idempotence, conflicts, approval of the clean version."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import AuditRecord, Catalog, Decision, QuarantineEntry, Version
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.data import CleanDataset
from sanitize.errors import InputError, NotFoundError
from sanitize.migrate import copy_catalog
from sanitize.pipeline import RunResult, run_cleaning
from sanitize.review import ConflictError, decide
from sanitize.workspace import Workspace


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    """One demo run (without retraining) for the module; each test reviews a copy of its data folder."""
    home = tmp_path_factory.mktemp("review-home")
    result = run_cleaning(
        RunConfig(redteam=RedTeamConfig(), retrain=False), Workspace(Settings(home=home)), progress=False
    )
    return home, result


@pytest.fixture(params=["sqlite", "postgresql"])
def reviewed_run(
    request: pytest.FixtureRequest, demo_run: tuple[Path, RunResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Workspace, RunResult, list[str]]:
    """A copy of the demo run's data folder; its catalog on SQLite, or moved to a PostgreSQL schema."""
    source, result = demo_run
    home = tmp_path / "home"
    shutil.copytree(source, home)
    monkeypatch.setenv("SANITIZE_HOME", str(home))
    settings = Settings(home=home, catalog_url=None)
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        sqlite = Catalog(settings.resolved_catalog_url)
        copy_catalog(sqlite, Catalog(url))
        sqlite.dispose()
        for f in home.glob("catalog.db*"):
            f.unlink()  # nothing may quietly read the SQLite copy
        monkeypatch.setenv("SANITIZE_CATALOG_URL", url)
        settings = Settings(home=home, catalog_url=url)
    ws = Workspace(settings)
    with ws.catalog.session() as s:
        ids = sorted(s.scalars(select(QuarantineEntry.sample_id).where(QuarantineEntry.run_id == result.run_id)))
    assert len(ids) >= 10, "the demo run must quarantine something to review"
    return ws, result, ids


def statuses(ws: Workspace, run_id: str) -> dict[str, str]:
    with ws.catalog.session() as s:
        rows = s.execute(
            select(QuarantineEntry.sample_id, QuarantineEntry.status).where(QuarantineEntry.run_id == run_id)
        ).all()
    return dict(rows)


def test_decisions_change_status_once_and_are_recorded(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    first = decide(ws, result.run_id, ids[:3], "confirm", reviewer="ana", note="patch in the corner")
    again = decide(ws, result.run_id, ids[:3], "confirm", reviewer="ana")

    assert [r.changed for r in first] == [True, True, True]
    assert [r.changed for r in again] == [False, False, False]
    st = statuses(ws, result.run_id)
    assert [st[i] for i in ids[:3]] == ["confirmed"] * 3
    assert all(st[i] == "pending" for i in ids[3:])
    with ws.catalog.session() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 3
        notes = s.scalars(select(Decision.note)).all()
        audits = s.scalars(select(AuditRecord.action).where(AuditRecord.action == "quarantine.confirm")).all()
    assert notes == ["patch in the corner"] * 3
    assert len(audits) == 3


def test_a_conflicting_decision_is_refused(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    decide(ws, result.run_id, [ids[0]], "confirm", reviewer="ana")

    with pytest.raises(ConflictError, match=f"{ids[0]} was already confirmed"):
        decide(ws, result.run_id, [ids[1], ids[0]], "release", reviewer="ben")

    # All or nothing: the first id of the refused batch did not change either.
    st = statuses(ws, result.run_id)
    assert (st[ids[0]], st[ids[1]]) == ("confirmed", "pending")


def test_two_reviewers_at_once_one_wins(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def reviewer(action: str) -> None:
        barrier.wait()
        try:
            decide(Workspace(ws.settings), result.run_id, [ids[0]], action, reviewer=action)
            outcomes.append(f"ok:{action}")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=reviewer, args=(a,)) for a in ("confirm", "release")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "ok"]
    winner = next(o.split(":")[1] for o in outcomes if o.startswith("ok"))
    assert statuses(ws, result.run_id)[ids[0]] == {"confirm": "confirmed", "release": "released"}[winner]


def test_two_reviewers_settling_the_last_entries_at_once_approve_one_version(
    reviewed_run: tuple[Workspace, RunResult, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sanitize.export
    import sanitize.review

    ws, result, ids = reviewed_run
    decide(ws, result.run_id, ids[:-2], "confirm", reviewer="ana")
    # The worst interleaving, forced: both decisions are stored before either looks for pending
    # entries, and both approvals write their files, then record the same version at the same moment.
    before_approval, before_record = threading.Barrier(2, timeout=60), threading.Barrier(2, timeout=60)
    real_approve, real_write = sanitize.review.maybe_approve, sanitize.export.atomic_write_json

    def meet_then_approve(ws: Workspace, run_id: str) -> str | None:
        before_approval.wait()
        return real_approve(ws, run_id)

    def write_then_meet(path: Path, obj: object) -> None:
        real_write(path, obj)
        before_record.wait()

    monkeypatch.setattr(sanitize.review, "maybe_approve", meet_then_approve)
    monkeypatch.setattr(sanitize.export, "atomic_write_json", write_then_meet)
    errors: list[BaseException] = []

    def reviewer(sid: str) -> None:
        try:
            decide(Workspace(ws.settings), result.run_id, [sid], "release", reviewer=sid[:6])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(sid,)) for sid in ids[-2:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(statuses(ws, result.run_id).values()) == ["confirmed"] * (len(ids) - 2) + ["released"] * 2
    with ws.catalog.session() as s:
        approved = s.scalars(select(Version).where(Version.status == "approved")).all()
    assert len(approved) == 1 and approved[0].n_train == result.summary["kept"] + 2


def test_bad_decisions_name_what_is_wrong(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    with pytest.raises(NotFoundError, match="nosuch"):
        decide(ws, result.run_id, ["nosuch"], "confirm", reviewer="ana")
    with pytest.raises(ValueError, match="relabel needs"):
        decide(ws, result.run_id, ids[:1], "relabel", reviewer="ana")
    with pytest.raises(ValueError, match="unknown decision"):
        decide(ws, result.run_id, ids[:1], "delete", reviewer="ana")
    assert set(statuses(ws, result.run_id).values()) == {"pending"}


@pytest.mark.parametrize("label", [99, -5, 10])
def test_a_relabelling_to_a_class_the_dataset_lacks_is_refused(
    reviewed_run: tuple[Workspace, RunResult, list[str]], label: int
) -> None:
    # The digits have classes 0-9: an approved version holding label 99 crashed the training example.
    ws, result, ids = reviewed_run
    refusal = rf"class {label} is not a class of this dataset \('digits-demo': classes 0, 1,"
    with pytest.raises(InputError, match=refusal):
        decide(ws, result.run_id, ids[:1], "relabel", reviewer="ana", new_label=label)
    refused = CliRunner().invoke(
        cli.app, ["quarantine", "relabel", ids[0], "--label", str(label), "--run", result.run_id, "--reviewer", "cli"]
    )
    assert isinstance(refused.exception, InputError), refused.output
    assert set(statuses(ws, result.run_id).values()) == {"pending"}
    with ws.catalog.session() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0


@pytest.mark.parametrize("status", ["running", "failed"])
def test_a_run_that_did_not_complete_takes_no_decision(
    reviewed_run: tuple[Workspace, RunResult, list[str]], status: str
) -> None:
    # A run killed mid-way (or failed) has a partial quarantine: deciding on it would approve nothing real.
    ws, result, ids = reviewed_run
    with ws.catalog.session() as s:
        ws.catalog.run(s, result.run_id).status = status
    with pytest.raises(InputError, match=f"is {status}, not completed"):
        decide(ws, result.run_id, ids[:1], "confirm", reviewer="ana")
    refused = CliRunner().invoke(cli.app, ["quarantine", "confirm", ids[0], "--run", result.run_id, "--reviewer", "x"])
    assert isinstance(refused.exception, InputError), refused.output
    assert set(statuses(ws, result.run_id).values()) == {"pending"}


def test_the_last_decision_approves_a_reviewed_version(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    confirmed, released, relabelled = ids[:-2], ids[-2:-1], ids[-1:]
    decide(ws, result.run_id, confirmed, "confirm", reviewer="ana")
    decide(ws, result.run_id, released, "release", reviewer="ana")
    with ws.catalog.session() as s:
        assert s.scalars(select(Version).where(Version.status == "approved")).first() is None
    decide(ws, result.run_id, relabelled, "relabel", reviewer="ana", new_label=7)

    with ws.catalog.session() as s:
        approved = s.scalars(select(Version).where(Version.status == "approved")).all()
    assert len(approved) == 1 and approved[0].run_id == result.run_id
    ds = CleanDataset(approved[0].id, settings=ws.settings)
    assert len(ds) == result.summary["kept"] + 2
    kept_ids = set(ds.sample_ids)
    assert not kept_ids & set(confirmed)
    assert set(released + relabelled) <= kept_ids
    assert int(ds.labels[ds.sample_ids.index(relabelled[0])]) == 7
    manifest = ws.store.manifest(result.dataset, approved[0].id)
    assert manifest.extra is not None and manifest.extra["relabelled"] == {relabelled[0]: 7}


def test_cli_decisions(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    ws, result, ids = reviewed_run
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["quarantine", "confirm", ids[0], "--run", result.run_id, "--reviewer", "cli"])
    assert ok.exit_code == 0, ok.output
    assert f"{ids[0]}: confirmed" in ok.output
    refused = runner.invoke(cli.app, ["quarantine", "release", ids[0], "--run", result.run_id])
    assert refused.exit_code != 0
    assert isinstance(refused.exception, ConflictError)
    assert statuses(ws, result.run_id)[ids[0]] == "confirmed"


def test_clean_dataset_by_name_and_lineage(reviewed_run: tuple[Workspace, RunResult, list[str]]) -> None:
    from sanitize.lineage import lineage

    ws, result, ids = reviewed_run
    with pytest.raises(NotFoundError, match="no approved clean version"):
        CleanDataset(result.dataset, version="approved", settings=ws.settings)
    assert CleanDataset(result.dataset, version="latest", settings=ws.settings).version == result.clean_version
    decide(ws, result.run_id, ids, "confirm", reviewer="ana")
    approved = CleanDataset(result.dataset, version="approved", settings=ws.settings)
    # Every flag confirmed: the reviewed version holds what the provisional one held, now approved.
    assert approved.version == result.clean_version
    assert not set(approved.sample_ids) & set(ids)

    steps = lineage(ws, approved.version)
    assert [s.kind for s in steps] == ["clean", "redteam", "ingested"]
    assert steps[0].status == "approved" and steps[0].excluded == len(ids)
    assert steps[0].run_id == result.run_id and steps[0].run_config is not None
    assert [src["source"] for src in steps[-1].sources] == ["sklearn-digits"]
    out = CliRunner().invoke(cli.app, ["lineage", approved.version])
    assert out.exit_code == 0, out.output
    assert "[clean, approved]" in out.output and "source sklearn-digits" in out.output
