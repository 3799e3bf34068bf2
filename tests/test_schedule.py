"""Scheduled cleaning, the library side (no Prefect): cron, schedules, sources read again, skip, failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import select

from sanitize.catalog import AuditRecord, Run, Source
from sanitize.config import ModelConfig, RunConfig
from sanitize.demo import digits_arrays
from sanitize.errors import InputError, NotFoundError
from sanitize.ingest.core import arrays_to_batches, ingest_batches, ingest_path
from sanitize.schedule import (
    ScheduleSpec,
    list_schedules,
    previous_equivalent_run,
    record_failure,
    record_skip,
    refresh_sources,
    remove_schedule,
    save_schedule,
    validate_cron,
)
from sanitize.workspace import Workspace


def digits_npz(path: Path, n_train: int = 200, n_test: int = 50, offset: int = 0) -> Path:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    np.savez(
        path,
        x_train=x_tr[offset : offset + n_train],
        y_train=y_tr[offset : offset + n_train],
        x_test=x_te[:n_test],
        y_test=y_te[:n_test],
    )
    return path


# --- cron -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cron", ["0 3 * * *", "*/15 * * * *", "0 0 1 jan,jul *", "30 6 * * mon-fri", "0 0-23/2 * * 0,7", "@daily"]
)
def test_valid_cron_expressions_pass(cron: str) -> None:
    assert validate_cron(cron) == cron


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * *", "has 4 fields; expected 5"),
        ("60 3 * * *", "minute 60 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 3 0 * *", "day of month 0 is outside 1-31"),
        ("0 3 * foo *", "month 'foo' is not a number or a name"),
        ("0 3 * * 8", "day of week 8 is outside 0-7"),
        ("0 5-2 * * *", "hour range '5-2' runs backwards"),
        ("*/0 * * * *", "minute step must be at least 1"),
        ("0 3 * * mon;", "day of week 'mon;' is not valid"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_cron(cron)


# --- schedules --------------------------------------------------------------------------------------
def test_a_schedule_needs_one_timing_and_its_own_dataset() -> None:
    config = RunConfig(dataset="shop")
    with pytest.raises(ValidationError, match="exactly one of a cron expression and an interval"):
        ScheduleSpec(dataset="shop", config=config)
    with pytest.raises(ValidationError, match="exactly one"):
        ScheduleSpec(dataset="shop", cron="0 3 * * *", interval_seconds=3600, config=config)
    with pytest.raises(ValidationError, match="cleans 'shop', not 'other'"):
        ScheduleSpec(dataset="other", cron="0 3 * * *", config=config)
    with pytest.raises(ValidationError, match="may not pin one"):
        ScheduleSpec(dataset="shop", cron="0 3 * * *", config=RunConfig(dataset="shop", version="v123"))
    with pytest.raises(ValidationError, match="greater than or equal to 60"):
        ScheduleSpec(dataset="shop", interval_seconds=5, config=config)
    with pytest.raises(ValidationError, match="hour 25 is outside"):
        ScheduleSpec(dataset="shop", cron="0 25 * * *", config=config)


def test_schedules_are_kept_replaced_and_removed(catalog_workspace: Workspace, tmp_path: Path) -> None:
    ws = catalog_workspace
    with pytest.raises(NotFoundError, match="unknown dataset 'shop'"):
        save_schedule(ws, ScheduleSpec(dataset="shop", cron="0 3 * * *", config=RunConfig(dataset="shop")))
    ingest_path(ws.catalog, ws.store, dataset="shop", path=digits_npz(tmp_path / "a.npz"), source="vendor-a")

    save_schedule(ws, ScheduleSpec(dataset="shop", cron="0 3 * * *", config=RunConfig(dataset="shop")))
    # The built-in demo needs no ingest first: its first run ingests it.
    save_schedule(ws, ScheduleSpec(dataset="digits-demo", interval_seconds=3600, config=RunConfig()))
    epochs3 = RunConfig(dataset="shop", model=ModelConfig(epochs=3))
    save_schedule(ws, ScheduleSpec(dataset="shop", interval_seconds=600, config=epochs3))

    specs = list_schedules(ws)
    assert [(s.dataset, s.cron, s.interval_seconds) for s in specs] == [
        ("digits-demo", None, 3600),
        ("shop", None, 600),
    ]
    assert specs[1].config == epochs3 and specs[1].config.fingerprint() == epochs3.fingerprint()

    remove_schedule(ws, "shop")
    assert [s.dataset for s in list_schedules(ws)] == ["digits-demo"]
    with pytest.raises(NotFoundError, match="'shop' has no schedule"):
        remove_schedule(ws, "shop")
    with ws.catalog.session() as s:
        actions = s.scalars(select(AuditRecord.action).where(AuditRecord.action.like("schedule.%"))).all()
    assert actions == ["schedule.set", "schedule.set", "schedule.set", "schedule.remove"]


# --- reading the sources again ----------------------------------------------------------------------
def test_sources_are_read_again_from_where_they_were_ingested(catalog_workspace: Workspace, tmp_path: Path) -> None:
    ws = catalog_workspace
    npz = digits_npz(tmp_path / "a.npz")
    x_tr, y_tr, _, _ = digits_arrays()
    folder = tmp_path / "holdout"
    for i in range(20):
        (folder / str(y_tr[600 + i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x_tr[600 + i, ..., 0]).save(folder / str(y_tr[600 + i]) / f"{i}.png")
    ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a")
    # A test-only source: read again, it must stay test (its split is part of its address).
    ingest_path(ws.catalog, ws.store, dataset="shop", path=folder, source="holdout", split="test")
    ingest_batches(
        ws.catalog,
        ws.store,
        dataset="shop",
        batches=arrays_to_batches(x_tr[800:820], y_tr[800:820], "train"),
        source="memory",
        uri="mem://memory",
        fmt="arrays",
    )
    with ws.catalog.session() as s:
        before = ws.catalog.dataset(s, "shop").current_version
        holdout = s.get(Source, ("shop", "holdout"))
        assert holdout is not None and holdout.format == "imagefolder" and holdout.options == {"split": "test"}

    same = refresh_sources(ws, "shop")

    assert (same.version_before, same.version, same.changed) == (before, before, False)
    assert [(r.source, r.outcome) for r in same.sources] == [
        ("holdout", "unchanged"),
        ("memory", "not re-readable"),
        ("vendor-a", "unchanged"),
    ]

    digits_npz(npz, n_train=230)  # the supplier delivered 30 more images
    grown = refresh_sources(ws, "shop")

    assert grown.changed and grown.version_before == before
    assert [(r.source, r.outcome) for r in grown.sources if r.source == "vendor-a"] == [("vendor-a", "new data")]
    manifest = ws.store.manifest("shop", grown.version)
    assert (manifest.n_train, manifest.n_test) == (230 + 20, 50 + 20)


def test_a_source_that_cannot_be_read_again_is_named(catalog_workspace: Workspace, tmp_path: Path) -> None:
    ws = catalog_workspace
    npz = digits_npz(tmp_path / "a.npz")
    ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a")
    npz.unlink()
    with pytest.raises(InputError, match=f"source 'vendor-a' of dataset 'shop' could not be read again from {npz}"):
        refresh_sources(ws, "shop")
    npz.write_bytes(b"PK\x03\x04 not a zip any more")
    with pytest.raises(InputError, match="source 'vendor-a'"):
        refresh_sources(ws, "shop")
    with pytest.raises(NotFoundError, match="unknown dataset 'nosuch'"):
        refresh_sources(ws, "nosuch")


# --- skip or fail -----------------------------------------------------------------------------------
def _completed(ws: Workspace, run_id: str, config: RunConfig, version: str, minutes_ago: int) -> None:
    with ws.catalog.session() as s:
        s.add(
            Run(
                id=run_id,
                dataset=config.dataset,
                version_id=version,
                status="completed",
                config=config.model_dump(mode="json"),
                config_fingerprint=config.fingerprint(),
                summary={"ingested_version": version},
                started_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
            )
        )


def test_a_skip_needs_the_same_version_and_configuration_as_the_last_run(catalog_workspace: Workspace) -> None:
    ws = catalog_workspace
    config = RunConfig(dataset="shop")
    other = RunConfig(dataset="shop", seed=1)
    _completed(ws, "run-old", config, "v1", minutes_ago=30)
    _completed(ws, "run-new", config, "v2", minutes_ago=20)
    _completed(ws, "run-other-config", other, "v2", minutes_ago=10)

    assert previous_equivalent_run(ws, config, "v2") == "run-new"
    # v1 was cleaned, but not last: data that changed back is cleaned again.
    assert previous_equivalent_run(ws, config, "v1") is None
    assert previous_equivalent_run(ws, config, "v3") is None
    assert previous_equivalent_run(ws, RunConfig(dataset="shop", seed=2), "v2") is None
    # The pinned version is no part of the configuration's identity.
    assert previous_equivalent_run(ws, config.model_copy(update={"version": "v2"}), "v2") == "run-new"

    skipped = record_skip(ws, config, "v2", "run-new")
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, skipped)
        assert (run.status, run.version_id, run.clean_version_id) == ("skipped", "v2", None)
        assert run.summary is not None and run.summary["same_as"] == "run-new"
        assert "unchanged since run run-new" in run.summary["reason"]
    # A skip is no completed run: the next check still compares with run-new.
    assert previous_equivalent_run(ws, config, "v2") == "run-new"


def test_a_failure_before_cleaning_is_a_failed_run_with_its_error(catalog_workspace: Workspace) -> None:
    ws = catalog_workspace
    config = RunConfig(dataset="shop")
    run_id = record_failure(ws, config, InputError("source 'vendor-a' could not be read again from /x.npz"))
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        assert run.status == "failed" and run.clean_version_id is None and run.finished_at is not None
        assert run.error == "InputError: source 'vendor-a' could not be read again from /x.npz"
        audit = s.scalars(select(AuditRecord).where(AuditRecord.subject == run_id)).one()
        assert audit.action == "run.fail"


# --- the command line -------------------------------------------------------------------------------
def test_schedule_commands_record_list_and_stop_a_schedule(
    sanitize_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sanitize import cli

    monkeypatch.setenv("COLUMNS", "200")
    ws = Workspace()
    ingest_path(ws.catalog, ws.store, dataset="shop", path=digits_npz(tmp_path / "a.npz"), source="vendor-a")
    runner = CliRunner()

    made = runner.invoke(
        cli.app, ["schedule", "--dataset", "shop", "--cron", "0 3 * * *", "--epochs", "3", "--no-serve"]
    )
    assert made.exit_code == 0, made.output
    fingerprint = RunConfig(dataset="shop", model=ModelConfig(epochs=3)).fingerprint()
    assert f"scheduled shop: cron '0 3 * * *' (UTC), configuration {fingerprint}" in made.output
    listed = runner.invoke(cli.app, ["schedules"])
    assert listed.exit_code == 0 and "shop" in listed.output and fingerprint in listed.output
    assert runner.invoke(cli.app, ["unschedule", "shop"]).exit_code == 0
    assert "shop" not in runner.invoke(cli.app, ["schedules"]).output
    assert list_schedules(ws) == []


def test_a_bad_schedule_exits_2_naming_the_problem(sanitize_home: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SANITIZE_HOME": str(sanitize_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "sanitize.cli", "schedule", "--dataset", "digits-demo", "--cron", "0 3 * *"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "cron '0 3 * *' has 4 fields; expected 5" in " ".join(proc.stderr.split())
    assert list_schedules(Workspace()) == []
