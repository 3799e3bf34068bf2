"""The ``sanitize`` command line: real processes for what a user types, one shared small run."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import QuarantineEntry, Run, Version
from sanitize.config import DetectConfig, Settings
from sanitize.demo import digits_arrays
from sanitize.workspace import Workspace

N_TRAIN, N_TEST = 1437, 360


def sanitize_cmd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sanitize ARGS`` in a fresh process against ``home``, with a terminal wide enough for the tables."""
    env = {**os.environ, "SANITIZE_HOME": str(home), "COLUMNS": "250", "LINES": "60"}
    return subprocess.run(
        [sys.executable, "-m", "sanitize.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def one_line(text: str) -> str:
    """Terminal output with its wrapping undone."""
    return " ".join(text.split())


def write_digits_npz(path: Path) -> Path:
    x_tr, y_tr, x_te, y_te = digits_arrays()
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


@dataclass
class CliRun:
    home: Path
    ws: Workspace
    ingest_output: str
    summary: dict


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """Digits ingested from an .npz with ``sanitize ingest``, then one ``sanitize run --poison badnets``."""
    home = tmp_path_factory.mktemp("cli-home")
    npz = write_digits_npz(tmp_path_factory.mktemp("cli-input") / "digits.npz")
    ingested = sanitize_cmd(home, "ingest", str(npz), "--dataset", "digits", "--source", "vendor-a")
    assert ingested.returncode == 0, ingested.stderr
    result = CliRunner().invoke(
        cli.app,
        ["run", "--dataset", "digits", "--poison", "badnets", "--no-retrain", "--json"],
        env={"SANITIZE_HOME": str(home)},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return CliRun(home, Workspace(Settings(home=home, catalog_url=None)), ingested.stdout, json.loads(result.stdout))


# --- ingest ------------------------------------------------------------------------------------


def test_ingest_prints_the_new_version(cli_run: CliRun) -> None:
    with cli_run.ws.catalog.session() as s:
        version = cli_run.ws.catalog.dataset(s, "digits").current_version
    out = one_line(cli_run.ingest_output)
    assert "ingested 1797 samples (1437 train, 360 test)" in out
    assert "as source vendor-a into digits" in out
    assert f"new version {version}" in out


def test_ingesting_the_same_file_again_changes_nothing(tmp_path: Path, sanitize_home: Path) -> None:
    npz = write_digits_npz(tmp_path / "digits.npz")
    first = sanitize_cmd(sanitize_home, "ingest", str(npz), "--dataset", "d", "--source", "s")
    second = sanitize_cmd(sanitize_home, "ingest", str(npz), "--dataset", "d", "--source", "s")

    assert first.returncode == second.returncode == 0
    version = one_line(first.stdout).split("new version ")[1].split()[0]
    assert f"unchanged version {version} (identical to this source's last ingest: nothing stored)" in one_line(
        second.stdout
    )
    assert len(list((sanitize_home / "datasets" / "d" / "ingests").iterdir())) == 1


def test_ingesting_a_missing_path_exits_2_naming_it(tmp_path: Path, sanitize_home: Path) -> None:
    missing = tmp_path / "no-such-dir" / "digits.npz"

    proc = sanitize_cmd(sanitize_home, "ingest", str(missing), "--dataset", "d", "--source", "s")

    assert proc.returncode == 2
    assert f"error: {missing}: no such file or directory" in one_line(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_ingesting_a_corrupt_file_exits_2_naming_it(tmp_path: Path, sanitize_home: Path) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")

    proc = sanitize_cmd(sanitize_home, "ingest", str(corrupt), "--dataset", "d", "--source", "s")

    assert proc.returncode == 2
    assert f"error: {corrupt}: not a readable .npz archive" in one_line(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not list(sanitize_home.rglob("*.parquet"))


def test_main_exits_2_with_one_line_on_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sanitize", "ingest", "gone.npz", "--dataset", "d", "--source", "s"])

    with pytest.raises(SystemExit) as exit_info:
        cli.main()

    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) == "error: gone.npz: no such file or directory"
    assert captured.out == ""


def test_a_path_with_rich_markup_is_printed_as_typed(tmp_path: Path, sanitize_home: Path) -> None:
    # 'x[/red]' was read as a closing tag: ingest committed, then exited 1; lineage crashed every time.
    (tmp_path / "x[").mkdir()
    npz = write_digits_npz(tmp_path / "x[" / "red].npz")
    runner = CliRunner()

    # Wide enough for the whole path on one line (a worker's temporary folder is longer).
    ingested = runner.invoke(
        cli.app, ["ingest", str(npz), "--dataset", "d", "--source", "s"], catch_exceptions=False, env={"COLUMNS": "250"}
    )
    assert ingested.exit_code == 0, ingested.output
    assert f"from {npz} as source s into d" in one_line(ingested.stdout)
    version = one_line(ingested.stdout).split("new version ")[1].split()[0]

    shown = runner.invoke(cli.app, ["lineage", version], catch_exceptions=False, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"samples from {npz} (npz" in one_line(shown.stdout)


def test_an_error_naming_a_path_with_rich_markup_is_printed_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sanitize", "ingest", "gone[/red].npz", "--dataset", "d", "--source", "s"])

    with pytest.raises(SystemExit) as exit_info:
        cli.main()

    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == "error: gone[/red].npz: no such file or directory"


@pytest.mark.parametrize("length", [300, 5000])
def test_a_dataset_name_over_the_limit_exits_2_naming_the_field_and_the_limit(
    length: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 300-character name was a folder name the file system refused: an OSError traceback, exit 1.
    npz = write_digits_npz(tmp_path / "digits.npz")
    name = "d" * length
    monkeypatch.setattr(sys, "argv", ["sanitize", "ingest", str(npz), "--dataset", name, "--source", "s"])

    with pytest.raises(SystemExit) as exit_info:
        cli.main()

    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == f"error: dataset name is {length} characters long; the limit is 100"

    ran = CliRunner().invoke(cli.app, ["run", "--dataset", name], env={"COLUMNS": "250"})
    assert ran.exit_code == 2
    assert "Invalid value for '--dataset': dataset: String should have at most 100 characters" in one_line(ran.output)
    assert len(ran.output) < 1000


def test_a_source_name_over_the_limit_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = write_digits_npz(tmp_path / "digits.npz")
    monkeypatch.setattr(sys, "argv", ["sanitize", "ingest", str(npz), "--dataset", "d", "--source", "s" * 300])

    with pytest.raises(SystemExit) as exit_info:
        cli.main()

    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == "error: source name is 300 characters long; the limit is 100"


def test_a_reviewer_name_over_the_limit_exits_2_before_the_run_is_looked_up(sanitize_home: Path) -> None:
    # The decision's and the audit record's reviewer columns are String(200).
    result = CliRunner().invoke(
        cli.app, ["quarantine", "confirm", "s1", "--reviewer", "r" * 300], env={"COLUMNS": "250"}
    )

    assert result.exit_code == 2
    assert "Invalid value for '--reviewer': reviewer name is 300 characters long; the limit is 100" in one_line(
        result.output
    )
    assert not (sanitize_home / "catalog.db").exists()


def test_tables_print_markup_in_user_text_as_typed(workspace: Workspace) -> None:
    # A run's error and a quarantined sample's locator and reason hold paths and names from the source.
    with workspace.catalog.session() as s:
        s.add(Run(id="run-a", dataset="d", status="failed", config={}, config_fingerprint="f", error="x[/red]: gone"))
        s.add(Run(id="run-b", dataset="d", status="completed", config={}, config_fingerprint="f"))
        s.flush()
        s.add(
            QuarantineEntry(
                run_id="run-b",
                dataset="d",
                sample_id="s1",
                content_sha256="0" * 64,
                label=0,
                source="vendor",
                locator="[bold]cat[/red].png",
                suspicion_score=1.0,
                detectors="knn[/i]",
                reason="flagged [/x]",
            )
        )
    runner = CliRunner(env={"COLUMNS": "250"})

    runs = runner.invoke(cli.app, ["runs"], catch_exceptions=False)
    listed = runner.invoke(cli.app, ["quarantine", "list", "--run", "run-b"], catch_exceptions=False)

    assert runs.exit_code == listed.exit_code == 0
    assert "failed: x[/red]: gone" in runs.stdout
    for text in ("[bold]cat[/red].png", "flagged [/x]"):  # the detectors are in the reason's words
        assert text in listed.stdout


# --- run ---------------------------------------------------------------------------------------


def test_running_an_unknown_dataset_exits_2_naming_it(sanitize_home: Path) -> None:
    proc = sanitize_cmd(sanitize_home, "run", "--dataset", "nosuch")

    assert proc.returncode == 2
    assert "error: unknown dataset 'nosuch'" in one_line(proc.stderr)


def test_an_out_of_range_option_exits_2(sanitize_home: Path) -> None:
    proc = sanitize_cmd(sanitize_home, "run", "--dataset", "nosuch", "--poison", "badnets", "--rate", "0.9")

    assert proc.returncode == 2
    assert "rate" in proc.stderr and "less than 0.5" in one_line(proc.stderr)
    assert not (sanitize_home / "runs").exists()


def test_an_unknown_retrain_augmentation_exits_2_naming_the_choices(sanitize_home: Path) -> None:
    proc = sanitize_cmd(sanitize_home, "run", "--dataset", "nosuch", "--retrain-augment", "blur")

    assert proc.returncode == 2
    assert "retrain_augment" in proc.stderr and "'none' or 'warp'" in one_line(proc.stderr)
    assert not (sanitize_home / "runs").exists()


def test_zero_retrain_epochs_exit_2(sanitize_home: Path) -> None:
    proc = sanitize_cmd(sanitize_home, "run", "--dataset", "nosuch", "--retrain-epochs", "0")

    assert proc.returncode == 2
    assert "retrain_epochs" in proc.stderr and "greater than or equal to 1" in one_line(proc.stderr)
    assert not (sanitize_home / "runs").exists()


def test_the_run_summary_is_consistent(cli_run: CliRun) -> None:
    s = cli_run.summary
    assert (s["dataset"], s["ingested"]) == ("digits", N_TRAIN)
    assert s["kept"] + s["quarantined"] == N_TRAIN
    assert s["quarantined"] > 0
    assert s["redteam"]["attack"] == "badnets"
    assert s["model_clean"] is None and s["clean_acc_after"] is None  # --no-retrain
    assert list(s["per_source"]) == ["vendor-a"]


# --- listing -----------------------------------------------------------------------------------


def test_quarantine_list_as_json(cli_run: CliRun) -> None:
    proc = sanitize_cmd(cli_run.home, "quarantine", "list", "--format", "json")

    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == cli_run.summary["quarantined"]
    assert {r["run_id"] for r in rows} == {cli_run.summary["run_id"]}
    for r in rows:
        assert r["sample_id"] and r["source"] == "vendor-a" and r["status"] == "pending"
        assert any(f"{voter} flagged" in r["reason"] for voter in DetectConfig().voters), r["reason"]
        assert r["locator"].startswith("train:")
    scores = [r["suspicion_score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_quarantine_list_as_csv_matches_json(cli_run: CliRun) -> None:
    as_csv = sanitize_cmd(cli_run.home, "quarantine", "list", "--format", "csv", "--run", cli_run.summary["run_id"])
    as_json = sanitize_cmd(cli_run.home, "quarantine", "list", "--format", "json", "--limit", "5")

    assert as_csv.returncode == as_json.returncode == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == cli_run.summary["quarantined"]
    assert {"sample_id", "source", "reason", "label", "suspicion_score", "status"} <= set(rows[0])
    assert all(r["source"] == "vendor-a" and r["reason"] for r in rows)
    assert [r["sample_id"] for r in rows[:5]] == [r["sample_id"] for r in json.loads(as_json.stdout)]


def test_quarantine_list_of_an_unknown_run_exits_2(cli_run: CliRun) -> None:
    proc = sanitize_cmd(cli_run.home, "quarantine", "list", "--run", "run-nope")

    assert proc.returncode == 2
    assert "unknown run 'run-nope'" in proc.stderr


def test_datasets_versions_runs_and_show_list_the_run(cli_run: CliRun) -> None:
    s = cli_run.summary
    with cli_run.ws.catalog.session() as session:
        versions = {v.id: v.kind for v in session.scalars(select(Version).where(Version.dataset == "digits"))}
    assert sorted(versions.values()) == ["clean", "ingested", "redteam"]

    datasets = sanitize_cmd(cli_run.home, "datasets")
    listed = sanitize_cmd(cli_run.home, "versions", "digits")
    runs = sanitize_cmd(cli_run.home, "runs")
    show = sanitize_cmd(cli_run.home, "show", s["run_id"])

    assert datasets.returncode == listed.returncode == runs.returncode == show.returncode == 0
    dataset_line = next(line for line in datasets.stdout.splitlines() if " digits " in line)
    assert s["ingested_version"] in dataset_line and "vendor-a" in dataset_line
    for vid, kind in versions.items():
        assert any(vid in line and f" {kind} " in line for line in listed.stdout.splitlines())
    run_line = next(line for line in runs.stdout.splitlines() if s["run_id"] in line)
    assert "completed" in run_line and s["clean_version"] in run_line and f" {s['quarantined']} " in run_line
    assert s["run_id"] in show.stdout and s["clean_version"] in show.stdout


def test_versions_of_an_unknown_dataset_exits_2(sanitize_home: Path) -> None:
    proc = sanitize_cmd(sanitize_home, "versions", "nosuch")

    assert proc.returncode == 2
    assert "unknown dataset 'nosuch'" in proc.stderr


# --- export ------------------------------------------------------------------------------------


def test_export_as_parquet_is_readable_by_pandas(cli_run: CliRun, tmp_path: Path) -> None:
    s = cli_run.summary
    out = tmp_path / "parquet-out"

    proc = sanitize_cmd(cli_run.home, "export", s["clean_version"], "--out", str(out), "--format", "parquet")

    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.parquet", "train.parquet"]
    assert str(out / "train.parquet") in one_line(proc.stdout)
    train, test = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "test.parquet")
    assert (len(train), len(test)) == (s["kept"], N_TEST)
    assert set(train["split"]) == {"train"} and set(test["split"]) == {"test"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["extra"]["excluded_sample_ids"]) == s["quarantined"]
    assert not set(manifest["extra"]["excluded_sample_ids"]) & set(train["sample_id"])
    assert (manifest["version_id"], manifest["kind"], manifest["n_train"]) == (s["clean_version"], "clean", s["kept"])
    # The digits have no names: each label's name is its integer, in the file and the manifest.
    assert (train["label_name"] == train["label"].astype(str)).all()
    assert manifest["class_names"] == [str(k) for k in range(10)]


def test_export_as_npz_is_readable_by_numpy(cli_run: CliRun, tmp_path: Path) -> None:
    s = cli_run.summary
    out = tmp_path / "npz-out"

    proc = sanitize_cmd(cli_run.home, "export", s["clean_version"], "--out", str(out), "--format", "npz")

    assert proc.returncode == 0, proc.stderr
    with np.load(out / f"digits-{s['clean_version']}.npz") as data:
        assert data["x_train"].shape == (s["kept"], 8, 8, 1) and data["x_train"].dtype == np.uint8
        assert data["y_train"].shape == (s["kept"],)
        assert data["x_test"].shape == (N_TEST, 8, 8, 1)
        assert len(set(data["sample_ids_train"].tolist())) == s["kept"]
        assert data["class_names"].tolist() == [str(k) for k in range(10)]
        excluded = json.loads((out / "manifest.json").read_text())["extra"]["excluded_sample_ids"]
        assert len(excluded) == s["quarantined"]
        assert not set(excluded) & set(data["sample_ids_train"].tolist())


def test_exporting_an_unknown_version_exits_2(cli_run: CliRun, tmp_path: Path) -> None:
    proc = sanitize_cmd(cli_run.home, "export", "cnope", "--out", str(tmp_path / "x"))

    assert proc.returncode == 2
    assert "unknown dataset version 'cnope'" in proc.stderr
    assert not (tmp_path / "x").exists()
