"""The command line's tables and records fit a terminal and agree with each other: ids are never cut,
the quarantine's reasons read at 150 columns, a failed run shows its error, ``show`` and ``lineage``
speak JSON, and ``runs`` says provisional or approved as ``versions`` does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import Dataset, QuarantineEntry, Run, Version
from sanitize.demo import digits_arrays
from sanitize.errors import SanitizeError
from sanitize.ingest.core import ingest_path
from sanitize.store import atomic_write_json
from sanitize.workspace import Workspace

REASON = (
    "whitened_clustering flagged: score 9.01 vs threshold 2.5, rank 45/214 in class 0; "
    "input_gap flagged: score 147 vs threshold 71.6, rank 1/214 in class 0; "
    "input_neighbours not flagged: score 0.733 vs no threshold (class judged clean), rank 1/214 in class 0; "
    "spectral not flagged: score 0.1 vs threshold 0.5, rank 90/214 in class 0"
)


def invoke(columns: int, *args: str) -> str:
    result = CliRunner().invoke(cli.app, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def catalog(workspace: Workspace) -> Workspace:
    """Two runs of one dataset: run-a's reviewed version approved, run-b's provisional; run-c failed in
    its detect stage after exporting."""
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with workspace.catalog.session() as s:
        s.add(Dataset(name="shop", current_version="v0123456789abcde"))
        for i, (rid, status) in enumerate([("run-a", "completed"), ("run-b", "completed"), ("run-c", "failed")]):
            s.add(
                Run(
                    id=f"{rid}-20261201-120000-abcdef",
                    dataset="shop",
                    version_id="v0123456789abcde",
                    status=status,
                    config={},
                    config_fingerprint="f",
                    started_at=t0 + timedelta(minutes=i),
                    clean_version_id={"run-a": "ca111111111111111", "run-b": "cb22222222222222", "run-c": None}[rid],
                    error="RuntimeError: disk full while writing the verdict" if status == "failed" else None,
                    summary={"quarantined": 1} if status == "completed" else None,
                )
            )
        s.flush()
        for vid, kind, parent, run, status in [
            ("v0123456789abcde", "ingested", None, None, "ready"),
            ("ca111111111111111", "clean", "v0123456789abcde", "run-a", "provisional"),
            ("ca999999999999999", "clean", "v0123456789abcde", "run-a", "approved"),
            ("cb22222222222222", "clean", "v0123456789abcde", "run-b", "provisional"),
            ("cc33333333333333", "clean", "v0123456789abcde", "run-c", "failed"),
        ]:
            s.add(
                Version(
                    id=vid,
                    dataset="shop",
                    kind=kind,
                    parent_id=parent,
                    run_id=f"{run}-20261201-120000-abcdef" if run else None,
                    status=status,
                    n_train=10,
                    n_test=2,
                    manifest="x.json",
                )
            )
        s.add(
            QuarantineEntry(
                run_id="run-a-20261201-120000-abcdef",
                dataset="shop",
                sample_id="7f44944b6f189062a06d",
                content_sha256="0" * 64,
                label=0,
                source="vendor-with-a-long-name",
                locator="images/train/class-0/a-rather-long-file-name-0001.png",
                suspicion_score=157.0,
                detectors="whitened_clustering,input_gap",
                reason=REASON,
            )
        )
    run_dir = workspace.store.run_dir("run-c-20261201-120000-abcdef")
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "context.json", {"stage": "detect"})
    return workspace


@pytest.mark.parametrize("columns", [60, 80, 150])
def test_versions_and_runs_never_cut_an_id(catalog: Workspace, columns: int) -> None:
    versions = invoke(columns, "versions", "shop")
    runs = invoke(columns, "runs")
    for vid in ("v0123456789abcde", "ca111111111111111", "ca999999999999999", "cb22222222222222"):
        assert vid in versions
    for rid in ("run-a", "run-b", "run-c"):
        assert f"{rid}-20261201-120000-abcdef" in versions + runs


def test_runs_say_provisional_or_approved_as_versions_do(catalog: Workspace) -> None:
    runs = invoke(250, "runs").splitlines()
    versions = invoke(250, "versions", "shop").splitlines()

    def line(lines: list[str], *words: str) -> str:
        (found,) = [row for row in lines if all(w in row for w in words)]
        return found

    # run-a: reviewed, its approved version is the one it stands for (as the review page shows it).
    assert " approved " in line(runs, "run-a-") and "ca999999999999999" in line(runs, "run-a-")
    assert " approved " in line(versions, "ca999999999999999")
    assert " provisional " in line(runs, "run-b-") and " provisional " in line(versions, "cb22222222222222")


def test_the_quarantines_reasons_read_at_150_columns(catalog: Workspace) -> None:
    out = invoke(150, "quarantine", "list", "--run", "run-a-20261201-120000-abcdef")
    lines = out.splitlines()
    assert max(len(row) for row in lines) <= 150
    # Each detector that flagged the sample, whole on one line; those that did not are left out.
    assert any("whitened_clustering 9.01 > 2.5 (rank 45/214)" in row for row in lines)
    assert any("input_gap 147 > 71.6 (rank 1/214)" in row for row in lines)
    assert "input_neighbours" not in out and "7f44944b6f189062a06d" in out
    assert "name-0001.png │" in out  # a long place keeps its end

    narrow = invoke(80, "quarantine", "list", "--run", "run-a-20261201-120000-abcdef")
    assert max(len(row) for row in narrow.splitlines()) <= 80
    assert "7f44944b6f189062a06d" in narrow and "--format json" in narrow


def test_show_says_where_a_failed_run_failed_and_why(catalog: Workspace) -> None:
    failed = CliRunner().invoke(cli.app, ["show", "run-c-20261201-120000-abcdef"])  # main(): one line, exit 2
    assert isinstance(failed.exception, SanitizeError)
    assert str(failed.exception) == (
        "run run-c-20261201-120000-abcdef did not complete: it failed in stage detect: "
        "RuntimeError: disk full while writing the verdict"
    )

    record = json.loads(invoke(100, "show", "run-c-20261201-120000-abcdef", "--json"))
    assert (record["status"], record["stage"]) == ("failed", "detect")
    assert record["error"] == "RuntimeError: disk full while writing the verdict"
    assert record["versions"] == [{"id": "cc33333333333333", "kind": "clean", "status": "failed"}]
    assert record["clean_version"] is None


def test_show_as_json_names_the_version_a_run_stands_for(catalog: Workspace) -> None:
    record = json.loads(invoke(100, "show", "run-a-20261201-120000-abcdef", "--json"))
    assert record["clean_version"] == {"id": "ca999999999999999", "status": "approved"}
    assert {v["id"] for v in record["versions"]} == {"ca111111111111111", "ca999999999999999"}


def test_lineage_as_json(workspace: Workspace, tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    npz = tmp_path / "a.npz"
    np.savez(npz, x_train=x_tr[:50], y_train=y_tr[:50], x_test=x_te[:10], y_test=y_te[:10])
    version = ingest_path(workspace.catalog, workspace.store, dataset="shop", path=npz, source="vendor-a").version_id

    (step,) = json.loads(invoke(100, "lineage", version, "--json"))
    assert (step["version"], step["kind"], step["status"]) == (version, "ingested", "ready")
    assert [(s["source"], s["samples"], s["uri"]) for s in step["sources"]] == [("vendor-a", 60, str(npz))]
    assert version in invoke(20, "lineage", version)  # a narrow terminal wraps the line, the id stays whole
