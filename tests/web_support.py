"""A finished demo run for the review-page tests: made once per test session, copied per test.

Shared by ``test_web.py`` and ``test_browser.py`` through a module-level cache rather than a
conftest fixture, so the two modules pay for one cleaning run between them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from sanitize.catalog import QuarantineEntry
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.pipeline import run_cleaning
from sanitize.workspace import Workspace

_made: dict[Path, tuple[Path, str]] = {}


def demo_run(factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(data folder, run id) of one red-team demo run without retraining, made once per session."""
    base = factory.getbasetemp()
    if base not in _made:
        home = factory.mktemp("web-demo-home")
        ws = Workspace(Settings(home=home, catalog_url=None))
        result = run_cleaning(RunConfig(redteam=RedTeamConfig(), retrain=False), ws, progress=False)
        ws.catalog.engine.dispose()  # checkpoint SQLite's log so a copy of the folder is complete
        _made[base] = (home, result.run_id)
    return _made[base]


def copy_of(home: Path, dest: Path) -> Workspace:
    """A workspace over a private copy of ``home``: each test decides on its own quarantine."""
    shutil.copytree(home, dest)
    return Workspace(Settings(home=dest, catalog_url=None))


def quarantined(ws: Workspace, run_id: str) -> dict[str, QuarantineEntry]:
    with ws.catalog.session() as s:
        return {e.sample_id: e for e in s.scalars(select(QuarantineEntry).where(QuarantineEntry.run_id == run_id))}


def tile_ids(html: str) -> list[str]:
    """Sample ids of the quarantine grid's tiles, in page order."""
    return re.findall(r'<div class="tile [^"]*" data-sample="([0-9a-f]{20})"', html)
