"""Shared fixtures: every test gets its own data folder; the Prefect harness is opt-in."""

from __future__ import annotations

import os

# One thread for OpenMP and BLAS (torch, scikit-learn's k-means, NumPy), set before any of them loads:
# their worker threads spin while waiting, and on a 2-core machine shared with other jobs that turns
# a 17 s demo run into minutes. No result depends on the thread count. Set it yourself to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# pytest-xdist's workers start with COLUMNS=80 in their environment; rich's consoles, made when the CLI
# is imported, would keep that width for good, where the CLI tests give each command its own width.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

import gc  # noqa: E402
import uuid  # noqa: E402
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


# --- the catalog on SQLite and on PostgreSQL ------------------------------------------------------
PG_URL_VARIABLE = "SANITIZE_TEST_PG_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A catalog URL on a fresh schema of the PostgreSQL server in ``SANITIZE_TEST_PG_URL``, dropped after.

    The session speaks a zone far from UTC, so a time that is not normalised to UTC shows up.
    """
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(
            f"PostgreSQL variant: set {PG_URL_VARIABLE}=postgresql+psycopg://USER:PASSWORD@127.0.0.1:5432/DB "
            "(.ci/run starts a server and sets it)"
        )
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema} -ctimezone=Pacific/Chatham"})
        yield url.render_as_string(hide_password=False)
    finally:
        gc.collect()  # engines of finished workspaces give their connections back
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, sanitize_home: Path) -> str:
    """The catalog URL of a test that runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        sanitize_home.mkdir(parents=True, exist_ok=True)
        return Settings(home=sanitize_home, catalog_url=None).resolved_catalog_url
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def catalog_workspace(sanitize_home: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A workspace over the test's data folder with its catalog on each database in turn.

    ``SANITIZE_CATALOG_URL`` is set too, so code that builds its own ``Settings()`` finds the same catalog.
    """
    monkeypatch.setenv("SANITIZE_CATALOG_URL", catalog_url)
    ws = Workspace(Settings(home=sanitize_home, catalog_url=catalog_url))
    yield ws
    ws.catalog.dispose()
