"""``sanitize gc``: a dry run lists the debris with sizes and why and removes nothing; ``--yes`` removes it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanitize import cli
from sanitize.cli.maintenance import size_text
from sanitize.config import Settings
from sanitize.demo import ingest_demo
from sanitize.workspace import Workspace

AN_HOUR_AGO = time.time() - 3600


def gc(*args: str) -> str:
    """``sanitize gc ARGS``'s output on one line, the table's borders left out."""
    result = CliRunner().invoke(cli.app, ["gc", *args], env={"COLUMNS": "250"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.replace("│", " ").split())


@pytest.fixture
def planted(sanitize_home: Path) -> dict[str, int]:
    """A demo home with what a killed ingest leaves: a temporary file and a Parquet file no ingest recorded."""
    ingest_demo(Workspace(Settings(home=sanitize_home, catalog_url=None)), "digits-demo")
    ingests = sanitize_home / "datasets" / "digits-demo" / "ingests"
    real = next(ingests.glob("ing-*.parquet"))
    debris = {
        ingests / ".ing-killed.parquet.x1y2.tmp": b"half a parquet file",
        ingests / "ing-never-recorded.parquet": real.read_bytes(),
    }
    for path, data in debris.items():
        path.write_bytes(data)
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    return {str(path.relative_to(sanitize_home)): len(data) for path, data in debris.items()}


def test_a_dry_run_lists_each_item_with_its_size_and_why_and_removes_nothing(
    sanitize_home: Path, planted: dict[str, int]
) -> None:
    out = gc()

    tmp, orphan = sorted(planted)
    assert f"{tmp} {planted[tmp]} B temporary file of a write that never finished" in out
    assert f"{orphan} {size_text(planted[orphan])} data file no ingest or version refers to" in out
    total = size_text(sum(planted.values()))
    assert f"2 items, {total}: nothing removed; remove them with: sanitize gc --yes" in out
    assert all((sanitize_home / rel).exists() for rel in planted)
    assert len(list(sanitize_home.glob("datasets/digits-demo/ingests/ing-*.parquet"))) == 2


def test_yes_removes_the_debris_and_reports_what_it_freed(sanitize_home: Path, planted: dict[str, int]) -> None:
    out = gc("--yes")

    assert f"removed 2 of 2 items, freed {size_text(sum(planted.values()))}" in out
    assert not any((sanitize_home / rel).exists() for rel in planted)
    # The recorded ingest stays, and a second collection finds nothing.
    assert len(list(sanitize_home.glob("datasets/digits-demo/ingests/ing-*.parquet"))) == 1
    assert "nothing to collect" in gc("--yes")


def test_what_changed_within_older_than_minutes_stays(sanitize_home: Path, planted: dict[str, int]) -> None:
    now = time.time()
    for rel in planted:
        os.utime(sanitize_home / rel, (now, now))  # a write that may still be in progress

    assert "nothing to collect" in gc("--yes")
    assert all((sanitize_home / rel).exists() for rel in planted)
    assert "2 items" in gc("--older-than", "0")


def test_a_negative_age_exits_2(sanitize_home: Path) -> None:
    result = CliRunner().invoke(cli.app, ["gc", "--older-than", "-1"])

    assert result.exit_code == 2
    assert "--older-than" in result.output


def test_sizes_read_as_a_person_would() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 3_500_000, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.3 MiB",
        "5.0 GiB",
    ]
