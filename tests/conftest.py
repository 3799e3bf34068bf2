"""Shared fixtures: every test gets its own data folder; the Prefect harness is opt-in."""

from __future__ import annotations

import os

# One thread for OpenMP and BLAS (torch, scikit-learn's k-means, NumPy), set before any of them loads:
# their worker threads spin while waiting, and on a 2-core machine shared with other jobs that turns
# a 17 s demo run into minutes. No result depends on the thread count. Set it yourself to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from sanitize.config import Settings  # noqa: E402
from sanitize.workspace import Workspace  # noqa: E402


@pytest.fixture(autouse=True)
def sanitize_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``SANITIZE_HOME`` in the test's tmp folder, so nothing touches ``./data``."""
    home = tmp_path / "sanitize-home"
    monkeypatch.setenv("SANITIZE_HOME", str(home))
    monkeypatch.delenv("SANITIZE_CATALOG_URL", raising=False)
    return home


@pytest.fixture
def workspace(sanitize_home: Path) -> Workspace:
    """A workspace over the test's own data folder and SQLite catalog."""
    return Workspace(Settings(home=sanitize_home, catalog_url=None))


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throw-away Prefect API and database for the flow tests.

    The environment is set before ``prefect`` is first imported: Prefect reads its settings at import,
    and offline machines must not try to send telemetry.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from prefect.testing.utilities import prefect_test_harness

        # A loaded 2-core machine can need more than the default 30 s to start the local API.
        with prefect_test_harness(server_startup_timeout=120):
            yield
