"""Fault injection: an ingest and a run killed with SIGKILL at each step, then run again.

A pause point (:mod:`sanitize.faults`) stops the child process exactly where the test kills it. After
each kill: the next command that opens the catalog marks the killed run failed (interrupted), the
rerun completes and flags the same samples as a run that was never interrupted, and after ``gc``
no temporary file, spare copy or half-published version is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from sqlalchemy import select

from sanitize.catalog import Ingest, Run, Version
from sanitize.cleanup import collect, find_debris
from sanitize.config import ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.demo import digits_arrays
from sanitize.faults import PAUSE_AT, PAUSE_FILE
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning
from sanitize.verify import verify
from sanitize.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
CONFIG = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1), retrain_epochs=1)
RUN_ARGS = ["run", "--epochs", "1", "--retrain-epochs", "1", "--json"]
STAGES = ["start", "poison", "train_reference", "features", "detect", "quarantine", "retrain", "evaluate", "export"]
STAGES += ["finish"]
INGEST_STEPS = ["ingest.staged", "ingest.file"]


def _kill_at(point: str, args: list[str], home: Path, tmp_path: Path) -> None:
    """Run ``python -m sanitize.cli ARGS`` until it reaches ``point``, then SIGKILL it."""
    marker = tmp_path / f"paused-{point}"
    env = {
        **os.environ,
        "SANITIZE_HOME": str(home),
        PAUSE_AT: point,
        PAUSE_FILE: str(marker),
        # The same threads as this process, so a reference model it trains is the one we would.
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    env.pop("SANITIZE_CATALOG_URL", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "sanitize.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child ended before {point}: {child.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"the child never reached {point}"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL


def _flagged(ws: Workspace, run_id: str) -> set[str]:
    t = pq.read_table(ws.store.run_dir(run_id) / "verdict.parquet", columns=["sample_id", "quarantine"])
    return set(t.filter(t.column("quarantine")).column("sample_id").to_pylist())


def _leftovers(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*.tmp"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    ws = Workspace(Settings(home=tmp_path_factory.mktemp("uninterrupted"), catalog_url=None))
    result = run_cleaning(CONFIG, ws, progress=False)
    return _flagged(ws, result.run_id)


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_killed_at_each_stage_is_marked_failed_and_a_rerun_flags_the_same(
    stage: str, uninterrupted: set[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _kill_at(stage, RUN_ARGS, home, tmp_path)

    ws = Workspace(Settings(home=home, catalog_url=None))  # the next command: it sees the process gone
    with ws.catalog.session() as s:
        (killed,) = s.scalars(select(Run)).all()
        assert killed.status == "failed" and (killed.error or "").startswith("interrupted: its process")
        exported = s.scalars(select(Version).where(Version.run_id == killed.id, Version.kind == "clean")).all()
        assert all(v.status == "failed" for v in exported)  # no training job may pick it up

    rerun = run_cleaning(CONFIG, ws, progress=False)
    assert _flagged(ws, rerun.run_id) == uninterrupted

    collect(ws, find_debris(ws, older_than=timedelta(0)))
    assert _leftovers(home) == []
    assert find_debris(ws, older_than=timedelta(0)) == []
    report = verify(ws)
    assert report.ok, report


@pytest.mark.parametrize("step", INGEST_STEPS)
def test_an_ingest_killed_at_each_step_leaves_nothing_after_gc_and_a_rerun_ingests_it(
    step: str, tmp_path: Path
) -> None:
    x, y, _, _ = digits_arrays()
    npz = tmp_path / "vendor.npz"
    np.savez(npz, x=x, y=y)
    home = tmp_path / "home"
    _kill_at(step, ["ingest", str(npz), "--dataset", "shop", "--source", "vendor"], home, tmp_path)

    ws = Workspace(Settings(home=home, catalog_url=None))
    with ws.catalog.session() as s:
        assert s.scalars(select(Ingest)).all() == []  # nothing was recorded
    report = ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor")
    clean = Workspace(Settings(home=tmp_path / "clean", catalog_url=None))
    assert (
        report.version_id
        == ingest_path(clean.catalog, clean.store, dataset="shop", path=npz, source="vendor").version_id
    )

    collect(ws, find_debris(ws, older_than=timedelta(0)))
    assert _leftovers(home) == []
    files = sorted(p.name for p in (home / "datasets" / "shop" / "ingests").iterdir())
    assert files == [f"{report.ingest_id}.parquet"]
    checked = verify(ws)
    assert checked.ok, checked
