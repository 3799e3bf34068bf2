"""Review from the command line beyond the detectors' flags: send a kept sample to the quarantine by
hand, take a decision back, and approve a version that waits with nothing left to review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sanitize import cli
from sanitize.config import ModelConfig, RunConfig
from sanitize.demo import digits_arrays
from sanitize.export import clean_version_id
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning
from sanitize.quarantine import ReviewClosedError, list_quarantine
from sanitize.workspace import Workspace


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_reviewer_sends_kept_samples_to_the_quarantine_takes_one_back_and_confirms_the_other(
    workspace: Workspace, tmp_path: Path
) -> None:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    npz = tmp_path / "a.npz"
    np.savez(npz, x_train=x_tr[:400], y_train=y_tr[:400], x_test=x_te[:60], y_test=y_te[:60])
    ingest_path(workspace.catalog, workspace.store, dataset="shop", path=npz, source="vendor-a")
    result = run_cleaning(RunConfig(dataset="shop", model=ModelConfig(epochs=2), retrain=False), workspace)
    assert result.summary["quarantined"] == 0 and result.summary["approval"]["version_status"] == "provisional"
    manifest = workspace.store.manifest("shop", result.version)
    ids = workspace.store.read_column_table(manifest, ["sample_id"], split="train")["sample_id"].to_pylist()
    first, second = ids[:2]
    run = ["--run", result.run_id, "--reviewer", "ana"]

    added = invoke("quarantine", "add", first, second, *run, "--note", "a patch in the corner")
    assert f"{first}: pending" in added and f"{second}: pending" in added
    assert f"{first}: released" in invoke("quarantine", "undo", first, *run)
    confirmed = invoke("quarantine", "confirm", second, *run)

    # The last pending entry decided: the reviewed version leaves the confirmed one out, approved.
    approved = clean_version_id(result.version, {second})
    assert f"approved clean version {approved}" in " ".join(confirmed.split())
    assert {e.sample_id: e.status for e in list_quarantine(workspace, result.run_id)} == {
        first: "released",
        second: "confirmed",
    }
    refused = CliRunner().invoke(cli.app, ["quarantine", "undo", second, *run])
    assert isinstance(refused.exception, ReviewClosedError)
