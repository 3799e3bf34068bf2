"""``sanitize gc``: temporary files and data nothing refers to go, everything referred to stays."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from sanitize.catalog import Ingest
from sanitize.cleanup import collect, find_debris
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.data import CleanDataset
from sanitize.pipeline import RunResult, run_cleaning
from sanitize.workspace import Workspace

NOW = timedelta(0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    home = tmp_path_factory.mktemp("gc-home")
    config = RunConfig(redteam=RedTeamConfig(), retrain=False)
    return home, run_cleaning(config, Workspace(Settings(home=home, catalog_url=None)), progress=False)


@pytest.fixture
def run(demo: tuple[Path, RunResult], tmp_path: Path) -> RunResult:
    """A copy of the demo run's data folder, as the test's workspace."""
    shutil.copytree(demo[0], tmp_path / "home")
    return demo[1]


@pytest.fixture
def workspace(tmp_path: Path, run: RunResult) -> Workspace:
    return Workspace(Settings(home=tmp_path / "home", catalog_url=None))


def _files(home: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.startswith("catalog.db")
    }


def _plant(home: Path, run: RunResult) -> set[str]:
    """What a killed ingest, a killed export and an older release leave behind."""
    ingests = home / "datasets" / run.dataset / "ingests"
    real = next(ingests.glob("ing-*.parquet"))
    planted = {
        f"datasets/{run.dataset}/ingests/.ing-killed.parquet.x1y2.tmp": b"half a parquet file",
        f"datasets/{run.dataset}/ingests/ing-never-recorded.parquet": real.read_bytes(),
        f"datasets/{run.dataset}/ingests/redteam-run-old.parquet": real.read_bytes(),
        f"datasets/{run.dataset}/versions/vdeadbeef00000000.json": b"{}",
        f"exports/{run.dataset}/cdeadbeef0000000/train.parquet": b"x",
        "runs/run-20000101-000000-abcdef/context.json": b"{}",
        f"runs/{run.run_id}/.verdict.parquet.k9.tmp": b"partial",
    }
    for rel, data in planted.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
    return {
        f"datasets/{run.dataset}/ingests/.ing-killed.parquet.x1y2.tmp",
        f"datasets/{run.dataset}/ingests/ing-never-recorded.parquet",
        f"datasets/{run.dataset}/ingests/redteam-run-old.parquet",
        f"datasets/{run.dataset}/versions/vdeadbeef00000000.json",
        f"exports/{run.dataset}/cdeadbeef0000000",
        "runs/run-20000101-000000-abcdef",
        f"runs/{run.run_id}/.verdict.parquet.k9.tmp",
    }


def test_gc_lists_then_removes_only_debris_and_keeps_all_that_is_referred_to(
    workspace: Workspace, run: RunResult
) -> None:
    home = workspace.store.home
    kept = _files(home)
    expected = _plant(home, run)
    debris = find_debris(workspace, older_than=NOW)
    assert {d.path for d in debris} == expected
    assert all(d.bytes > 0 and d.why for d in debris)

    freed = collect(workspace, debris)

    assert freed == sum(d.bytes for d in debris)
    assert _files(home) == kept  # every referred-to byte is where it was
    assert find_debris(workspace, older_than=NOW) == []
    assert len(CleanDataset(run.clean_version, settings=workspace.settings)) == run.summary["kept"]


def test_gc_leaves_what_may_be_a_write_in_progress(workspace: Workspace, run: RunResult) -> None:
    home = workspace.store.home
    expected = _plant(home, run)
    assert find_debris(workspace) == []  # all of it was written just now
    old = time.time() - 3600
    for rel in expected:
        for p in [home / rel, *(home / rel).rglob("*")]:
            os.utime(p, (old, old))
    assert {d.path for d in find_debris(workspace)} == expected


def test_gc_keeps_what_became_referred_to_after_it_was_listed(workspace: Workspace, run: RunResult) -> None:
    home = workspace.store.home
    spare = home / "datasets" / run.dataset / "ingests" / "ing-late.parquet"
    shutil.copyfile(next(spare.parent.glob("ing-*.parquet")), spare)
    debris = find_debris(workspace, older_than=NOW)
    assert [d.path for d in debris] == [str(spare.relative_to(home))]
    with workspace.catalog.session() as s:
        ingest = s.scalars(select(Ingest)).first()
        assert ingest is not None
        ingest.file = str(spare.relative_to(home))  # an ingest that finished in the meantime
    assert collect(workspace, debris) == 0 and spare.exists()
