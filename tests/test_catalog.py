"""The catalog itself, on SQLite and on PostgreSQL: times, JSON, opening at once, moving to a server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from sanitize.catalog import AuditRecord, Catalog, Dataset, Run
from sanitize.errors import SanitizeError
from sanitize.migrate import copy_catalog
from sanitize.workspace import Workspace


def test_times_come_back_as_aware_utc(catalog_workspace: Workspace) -> None:
    # 09:30 in UTC+05:30 is 04:00 UTC; the PostgreSQL session of the tests speaks Pacific/Chatham.
    started = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with catalog_workspace.catalog.session() as s:
        s.add(Run(id="r1", dataset="d", status="completed", config={}, config_fingerprint="f", started_at=started))
        catalog_workspace.catalog.audit(s, "test", "run.start", "r1")
    with catalog_workspace.catalog.session() as s:
        run = s.get(Run, "r1")
        assert run is not None
        assert run.started_at == datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
        assert run.started_at.tzinfo is UTC and f"{run.started_at:%H:%M}" == "04:00"
        # A default time too: aware, so it compares with an aware now() (a naive one raises TypeError).
        at = s.scalars(select(AuditRecord.at)).one()
    assert at.tzinfo is UTC and timedelta(0) <= datetime.now(UTC) - at < timedelta(minutes=5)


def test_a_naive_time_is_refused(catalog_workspace: Workspace) -> None:
    with pytest.raises(Exception, match="naive datetime"), catalog_workspace.catalog.session() as s:
        s.add(Dataset(name="d", created_at=datetime(2026, 1, 1)))


def test_json_columns_keep_nested_values(catalog_workspace: Workspace) -> None:
    config = {"model": {"epochs": 3, "lr": 0.002}, "detectors": ["spectral", "knn"], "redteam": None}
    with catalog_workspace.catalog.session() as s:
        s.add(Run(id="r1", dataset="d", status="running", config=config, config_fingerprint="f"))
        catalog_workspace.catalog.audit(s, "test", "run.start", "r1", when=datetime(2026, 1, 1, tzinfo=UTC), n=3)
    with catalog_workspace.catalog.session() as s:
        assert s.get(Run, "r1").config == config  # type: ignore[union-attr]
        detail = s.scalars(select(AuditRecord.detail)).one()
    assert detail == {"when": "2026-01-01 00:00:00+00:00", "n": 3}


def test_many_processes_may_open_a_fresh_catalog_at_once(catalog_url: str, tmp_path: Path) -> None:
    # The race (two connections switching a new SQLite file to WAL together) lost about one round in
    # twenty, so try it on several fresh files; PostgreSQL's schema lock is exercised on the first.
    urls = [catalog_url] + (
        [f"sqlite:///{tmp_path / f'fresh{i}.db'}" for i in range(15)] if "sqlite" in catalog_url else []
    )
    errors: list[BaseException] = []
    for url in urls:
        barrier = threading.Barrier(4, timeout=30)

        def open_catalog(url: str = url, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                Catalog(url).dispose()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_catalog) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_a_catalog_moves_to_another_database_with_its_ids(catalog_url: str, tmp_path: Path) -> None:
    source = Catalog(f"sqlite:///{tmp_path / 'old.db'}")
    with source.session() as s:
        s.add(Dataset(name="d"))
        s.add(Run(id="r1", dataset="d", status="completed", config={"seed": 1}, config_fingerprint="f"))
        for i in range(3):
            source.audit(s, "ana", "quarantine.confirm", f"r1/s{i}", note=f"note {i}")
    target = Catalog(catalog_url)

    copied = copy_catalog(source, target)

    assert copied["audit_log"] == 3 and copied["runs"] == 1 and copied["datasets"] == 1
    with target.session() as s:
        assert s.get(Run, "r1").config == {"seed": 1}  # type: ignore[union-attr]
        assert s.scalars(select(AuditRecord.id).order_by(AuditRecord.id)).all() == [1, 2, 3]
        target.audit(s, "ben", "quarantine.release", "r1/s9")  # the id sequence continues after the copy
    with target.session() as s:
        assert s.scalars(select(AuditRecord.id).order_by(AuditRecord.id)).all() == [1, 2, 3, 4]
    with pytest.raises(SanitizeError, match="is not empty"):
        copy_catalog(source, target)
    source.dispose()
    target.dispose()


def test_copy_catalog_moves_this_home_s_catalog_from_the_command_line(
    catalog_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from typer.testing import CliRunner

    from sanitize import cli
    from sanitize.config import Settings
    from sanitize.ingest.core import arrays_to_batches, ingest_batches

    home = tmp_path / "team-home"
    ws = Workspace(Settings(home=home, catalog_url=None))
    x = np.random.default_rng(0).integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    ingest_batches(
        ws.catalog,
        ws.store,
        dataset="d",
        batches=arrays_to_batches(x, np.arange(6) % 2, "train"),
        source="s",
        uri="mem://s",
        fmt="arrays",
    )
    monkeypatch.setenv("SANITIZE_HOME", str(home))
    monkeypatch.delenv("SANITIZE_CATALOG_URL", raising=False)

    result = CliRunner().invoke(cli.app, ["copy-catalog", "--to", catalog_url])

    assert result.exit_code == 0, result.output
    assert "datasets 1" in result.output and "ingests 1" in result.output and "sources 1" in result.output
    with ws.catalog.session() as s:
        version = ws.catalog.dataset(s, "d").current_version
    moved = Catalog(catalog_url)
    with moved.session() as s:
        assert version is not None and moved.dataset(s, "d").current_version == version
    moved.dispose()
