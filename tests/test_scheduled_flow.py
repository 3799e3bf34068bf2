"""The scheduled flow end to end under a throw-away Prefect API: clean, skip, new data, failures."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import Run, Version
from sanitize.config import ModelConfig, RunConfig, Settings
from sanitize.demo import digits_arrays
from sanitize.ingest.core import ingest_path
from sanitize.schedule import ScheduleSpec, save_schedule
from sanitize.workspace import Workspace

pytestmark = pytest.mark.usefixtures("prefect_harness")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Small and quick: 300 digits, 2 epochs, no retraining.
CONFIG = RunConfig(dataset="shop", model=ModelConfig(epochs=2), retrain=False)


def write_npz(path: Path, n_train: int) -> Path:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    np.savez(path, x_train=x_tr[:n_train], y_train=y_tr[:n_train], x_test=x_te[:60], y_test=y_te[:60])
    return path


def runs(ws: Workspace) -> list[Run]:
    with ws.catalog.session() as s:
        return list(s.scalars(select(Run).order_by(Run.started_at)))


def clean_versions(ws: Workspace) -> list[str]:
    with ws.catalog.session() as s:
        return list(s.scalars(select(Version.id).where(Version.kind == "clean", Version.status != "failed")))


def test_a_scheduled_run_cleans_then_skips_then_cleans_new_data_then_fails_visibly(
    sanitize_home: Path, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact

    from flows.cli import PrefectOrchestration
    from flows.scheduled import scheduled_cleaning_flow

    ws = Workspace(Settings(home=sanitize_home, catalog_url=None))
    npz = write_npz(tmp_path / "vendor-a.npz", 300)
    first_version = ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a").version_id

    # 1. First run: a real cleaning run of the current version.
    state = scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert first["version"] == first_version and first["clean_version"] in clean_versions(ws)

    # 2. Nothing changed at the source, same configuration: a skip, recorded, and no new version. It
    # ends in Prefect's Skipped state (a Completed one), its artifact linking to the review page.
    state = scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_completed() and state.name == "Skipped", state
    skip = state.result()
    assert skip["skipped"] is True and skip["same_as"] == first["run_id"]
    assert state.message == skip["reason"]
    assert [(r.status, r.version_id) for r in runs(ws)] == [("completed", first_version), ("skipped", first_version)]
    assert clean_versions(ws) == [first["clean_version"]]
    listed = CliRunner().invoke(cli.app, ["runs", "--dataset", "shop"], env={"COLUMNS": "250"})
    assert f"skipped (unchanged since {first['run_id']})" in listed.output
    artifact = Artifact.get("cleaning-run-summary")
    assert artifact is not None and artifact.flow_run_id == state.state_details.flow_run_id
    assert f"(http://127.0.0.1:8765/runs/{first['run_id']})" in str(artifact.data)

    # 2b. Run now: no Prefect server on the port, so the scheduled flow runs here, and skips again.
    save_schedule(ws, ScheduleSpec(dataset="shop", interval_seconds=3600, config=CONFIG))
    now = CliRunner().invoke(
        cli.app, ["trigger", "shop", "--port", str(free_port())], obj=PrefectOrchestration(), env={"COLUMNS": "250"}
    )
    assert now.exit_code == 0, now.output
    assert f"skipped: dataset version {first_version}" in now.output
    assert [r.status for r in runs(ws)] == ["completed", "skipped", "skipped"]

    # 3. The supplier delivered more: the source is read again, a new version, a new real run.
    write_npz(npz, 360)
    state = scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_completed(), state.message
    third = state.result()
    assert third["version"] != first_version and third["ingested"] == 360
    with ws.catalog.session() as s:
        assert ws.catalog.dataset(s, "shop").current_version == third["version"]
    assert len(clean_versions(ws)) == 2

    # 4. The source became unreadable: the flow fails in Prefect and the catalog says why.
    npz.write_bytes(b"truncated")
    state = scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_failed()
    failed = runs(ws)[-1]
    assert failed.status == "failed" and failed.clean_version_id is None
    assert failed.error is not None and "source 'vendor-a'" in failed.error and str(npz) in failed.error
    assert len(clean_versions(ws)) == 2


def test_a_run_that_fails_while_cleaning_fails_the_schedule_and_leaves_no_clean_version(
    sanitize_home: Path, tmp_path: Path
) -> None:
    from flows.scheduled import scheduled_cleaning_flow

    ws = Workspace(Settings(home=sanitize_home, catalog_url=None))
    ingest_path(ws.catalog, ws.store, dataset="shop", path=write_npz(tmp_path / "a.npz", 300), source="vendor-a")
    # A configuration that cannot work: the user's model file is gone by the time the run starts.
    bad = RunConfig(
        dataset="shop", model=ModelConfig(torchscript=tmp_path / "gone.pt", feature_layer="fc1"), retrain=False
    )

    state = scheduled_cleaning_flow(config=bad, return_state=True)

    assert state.is_failed()
    (run,) = runs(ws)
    assert run.status == "failed" and run.error is not None and "gone.pt" in run.error
    assert run.clean_version_id is None and clean_versions(ws) == []


def test_an_io_hiccup_while_reading_sources_is_retried_and_a_missing_source_is_not(
    sanitize_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import flows.scheduled as scheduled
    from sanitize import schedule as library

    ws = Workspace(Settings(home=sanitize_home, catalog_url=None))
    npz = write_npz(tmp_path / "vendor-a.npz", 300)
    ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a")
    calls: list[str] = []
    hiccups = [OSError(errno.EIO, "Input/output error", str(npz))]  # the share fails once
    real = library.refresh_sources

    def flaky(ws: Workspace, dataset: str, **options: object) -> library.Refresh:
        calls.append(dataset)
        if hiccups:
            raise hiccups.pop()
        return real(ws, dataset)

    monkeypatch.setattr(library, "refresh_sources", flaky)
    monkeypatch.setattr(scheduled, "refresh", scheduled.refresh.with_options(retry_delay_seconds=0))

    state = scheduled.scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_completed(), state.message
    assert len(calls) == 2 and [r.status for r in runs(ws)] == ["completed"]

    calls.clear()
    npz.unlink()
    state = scheduled.scheduled_cleaning_flow(config=CONFIG, return_state=True)
    assert state.is_failed()
    assert len(calls) == 1  # the source is gone: trying again would not bring it back
    assert runs(ws)[-1].status == "failed" and "could not be read again" in (runs(ws)[-1].error or "")
