"""Clean versions for training jobs: poisons confirmed once stay out of later versions, approval,
a failed run's export, export formats (Parquet for pandas/pyarrow/Hugging Face, npz, image folders),
and the example training job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from sanitize.catalog import QuarantineEntry, Run, Version
from sanitize.config import ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.data import CleanDataset
from sanitize.demo import digits_arrays
from sanitize.errors import InputError, NotFoundError
from sanitize.evaluate.redteam import stamp_patch
from sanitize.export import copy_out
from sanitize.ingest.core import ingest_path
from sanitize.lineage import lineage
from sanitize.pipeline import RunResult, run_cleaning
from sanitize.quarantine import list_quarantine
from sanitize.review import decide
from sanitize.store import content_hash
from sanitize.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
N_POISON = 70


@dataclass
class TwoRuns:
    """Run 1 on a supplier's poisoned digits, every flag confirmed; then the supplier sends the same
    images with the poisons' labels put back, and run 2 cleans that version."""

    home: Path
    ws: Workspace
    first: RunResult
    second: RunResult
    poison_hashes: set[str]
    confirmed_hashes: set[str]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    home = tmp_path_factory.mktemp("versions-home")
    ws = Workspace(Settings(home=home, catalog_url=None))
    x_tr, y_tr, x_te, y_te = digits_arrays()
    victims = np.random.default_rng(0).choice(np.flatnonzero(y_tr != 0), N_POISON, replace=False)
    x = x_tr.copy()
    x[victims] = stamp_patch(x_tr[victims])
    y = y_tr.copy()
    y[victims] = 0
    npz = tmp_path_factory.mktemp("supplier") / "vendor-a.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x_te, y_test=y_te)
    ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a")
    config = RunConfig(dataset="shop", retrain=False)
    first = run_cleaning(config, ws, progress=False)
    flagged = [r.sample_id for r in list_quarantine(ws, first.run_id)]
    decide(ws, first.run_id, flagged, "confirm", reviewer="ana", note="corner patch")
    with ws.catalog.session() as s:
        confirmed = set(s.scalars(select(QuarantineEntry.content_sha256).where(QuarantineEntry.run_id == first.run_id)))

    np.savez(npz, x_train=x, y_train=y_tr, x_test=x_te, y_test=y_te)  # same pixels, labels put back
    ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a")
    second = run_cleaning(config, ws, progress=False)
    poisons = {content_hash(img) for img in x[victims]}
    return TwoRuns(home, ws, first, second, poisons, confirmed)


def test_confirmed_poisons_stay_out_of_later_versions_of_the_same_data(two_runs: TwoRuns) -> None:
    ws, first, second = two_runs.ws, two_runs.first, two_runs.second
    assert two_runs.poison_hashes <= two_runs.confirmed_hashes, "run 1 must have found the poisons to confirm"
    assert second.version != first.version

    entries = list_quarantine(ws, second.run_id)
    carried = {e.content_sha256: e for e in entries if e.content_sha256 in two_runs.confirmed_hashes}
    # Every confirmed content is in run 2's quarantine, already confirmed, with run 1 as the reason,
    # also where run 2's detectors did not flag it (with the right labels the patch hides well).
    assert set(carried) == two_runs.confirmed_hashes
    assert {e.status for e in carried.values()} == {"confirmed"}
    assert all(e.reason.startswith(f"confirmed poison in run {first.run_id} (sample ") for e in carried.values())
    assert sum(e.detectors == "review" for e in carried.values()) > 0

    clean = CleanDataset(second.clean_version, settings=ws.settings)  # type: ignore[arg-type]
    kept = {content_hash(clean.image(i)) for i in range(len(clean))}
    assert not kept & two_runs.confirmed_hashes
    assert len(clean) == second.summary["kept"] == second.summary["ingested"] - len(entries)
    manifest = ws.store.manifest("shop", second.clean_version)  # type: ignore[arg-type]
    assert manifest.extra is not None
    elsewhere = manifest.extra["confirmed_elsewhere"]
    assert len(elsewhere) == len(two_runs.confirmed_hashes)
    assert set(elsewhere) <= set(manifest.extra["excluded_sample_ids"])
    assert all(reason.startswith(f"confirmed poison in run {first.run_id}") for reason in elsewhere.values())


def test_a_run_with_nothing_left_to_review_exports_an_approved_version(two_runs: TwoRuns) -> None:
    ws, second = two_runs.ws, two_runs.second
    assert [e.status for e in list_quarantine(ws, second.run_id, status="pending")] == []
    with ws.catalog.session() as s:
        assert ws.catalog.version(s, second.clean_version).status == "approved"  # type: ignore[arg-type]
    assert CleanDataset("shop", version="approved", settings=ws.settings).version == second.clean_version


def test_a_run_that_fails_after_its_export_leaves_no_clean_version(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sanitize.pipeline

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full while writing the summary")

    monkeypatch.setattr(sanitize.pipeline, "source_verdicts", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_cleaning(RunConfig(model=ModelConfig(epochs=1), retrain=False), workspace, progress=False)

    with workspace.catalog.session() as s:
        run = s.scalars(select(Run)).one()
        exported = s.scalars(select(Version).where(Version.kind == "clean")).one()
    assert run.status == "failed" and run.clean_version_id is None
    assert exported.run_id == run.id and exported.status == "failed"
    with pytest.raises(NotFoundError, match="no clean version"):
        CleanDataset("digits-demo", version="latest", settings=workspace.settings)
    with pytest.raises(NotFoundError, match="which failed"):
        CleanDataset(exported.id, settings=workspace.settings)


# --- export formats ---------------------------------------------------------------------------------
def test_an_imagefolder_export_reads_back_as_the_same_samples(two_runs: TwoRuns, tmp_path: Path) -> None:
    ws, version = two_runs.ws, two_runs.second.clean_version
    assert version is not None
    out = tmp_path / "folder"

    copy_out(ws, version, out, "imagefolder")

    manifest = ws.store.manifest("shop", version)
    assert json.loads((out / "manifest.json").read_text())["version_id"] == version
    files = sorted(out.glob("*/*/*.png"))
    assert len(files) == manifest.n_train + manifest.n_test
    train = CleanDataset(version, settings=ws.settings)
    i = 5
    assert (out / "train" / str(train.labels[i]) / f"{train.sample_ids[i]}.png").is_file()
    # Our own reader takes the folder back: same pixels, labels and splits.
    back = Workspace(Settings(home=tmp_path / "other-home", catalog_url=None))
    rep = ingest_path(back.catalog, back.store, dataset="back", path=out, source="export")
    assert (rep.n_train, rep.n_test) == (manifest.n_train, manifest.n_test)
    columns = ["content_sha256", "label", "split"]
    theirs = back.store.read_column_table(back.store.manifest("back", rep.version_id), columns).to_pylist()
    ours = ws.store.read_column_table(manifest, columns).to_pylist()
    assert sorted(map(str, theirs)) == sorted(map(str, ours))


def test_an_imagefolder_export_is_all_or_nothing(
    two_runs: TwoRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    ws, version = two_runs.ws, two_runs.second.clean_version
    assert version is not None
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=f"{taken} exists and is not an empty folder"):
        copy_out(ws, version, taken, "imagefolder")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    saved: list[object] = []
    real_save = Image.Image.save

    def fail_later(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if len(saved) == 100:
            raise OSError("no space left on device")
        saved.append(fp)
        real_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", fail_later)
    with pytest.raises(OSError, match="no space left"):
        copy_out(ws, version, tmp_path / "half", "imagefolder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no folder, no temporary left behind


def test_a_parquet_export_is_read_by_pandas_pyarrow_and_hugging_face_datasets(
    two_runs: TwoRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    ws, version = two_runs.ws, two_runs.second.clean_version
    assert version is not None
    copy_out(ws, version, tmp_path / "pq", "parquet")
    train = CleanDataset(version, settings=ws.settings)
    path = tmp_path / "pq" / "train.parquet"

    frame = pd.read_parquet(path)
    table = pq.read_table(path)
    assert len(frame) == table.num_rows == len(train)
    assert frame["sample_id"].tolist() == train.sample_ids

    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hf = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "hf-cache"))
    assert hf.num_rows == len(train)
    assert {"sample_id", "label", "pixels", "height", "width", "channels"} <= set(hf.column_names)
    row = hf[7]
    image = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], row["channels"])
    assert row["sample_id"] == train.sample_ids[7] and row["label"] == train.labels[7]
    assert np.array_equal(image, train.image(7))


# --- the example training job -----------------------------------------------------------------------
def test_the_example_trains_on_the_approved_version_and_records_it(two_runs: TwoRuns, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    env = {**os.environ, "SANITIZE_HOME": str(two_runs.home), "OMP_NUM_THREADS": "1"}
    env.pop("SANITIZE_CATALOG_URL", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_on_approved.py"), "--dataset", "shop", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    approved = two_runs.second.clean_version
    assert f"training on shop version {approved} (approved)" in proc.stdout

    record = json.loads((tmp_path / "model.pt.lineage.json").read_text())
    assert (record["version"], record["version_status"], record["run_id"]) == (
        approved,
        "approved",
        two_runs.second.run_id,
    )
    assert record["parent_version"] == two_runs.second.version and record["run_config"]["dataset"] == "shop"
    assert record["test_accuracy"] > 0.9
    assert out.is_file()
    steps = lineage(two_runs.ws, approved)  # type: ignore[arg-type]
    assert [m["model"] for m in steps[0].models] == [str(out)]
    assert steps[0].models[0]["by"] == "examples/train_on_approved.py"


def test_the_example_refuses_a_dataset_without_an_approved_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ws = Workspace(Settings(home=home, catalog_url=None))
    x_tr, y_tr, x_te, y_te = digits_arrays()
    np.savez(tmp_path / "a.npz", x_train=x_tr[:100], y_train=y_tr[:100], x_test=x_te[:20], y_test=y_te[:20])
    ingest_path(ws.catalog, ws.store, dataset="fresh", path=tmp_path / "a.npz", source="a")
    env = {**os.environ, "SANITIZE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("SANITIZE_CATALOG_URL", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_on_approved.py"), "--dataset", "fresh"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "dataset 'fresh' has no approved clean version (review its quarantine first)" in proc.stderr
    assert not (tmp_path / "model.pt").exists()


def _published_bytes(home: Path) -> dict[str, bytes]:
    """Every published version's manifest and files, and every export's copy of its manifest, by path."""
    ws = Workspace(Settings(home=home, catalog_url=None))
    out: dict[str, bytes] = {}
    with ws.catalog.session() as s:
        for v in s.scalars(select(Version)):
            manifest = ws.store.manifest(v.dataset, v.id)
            for path in [home / v.manifest, *ws.store.files(manifest)]:
                out[str(path.relative_to(home))] = path.read_bytes()
    for path in (home / "exports").rglob("manifest.json"):
        out[str(path.relative_to(home))] = path.read_bytes()
    return out


def test_later_runs_never_rewrite_a_published_version(workspace: Workspace, tmp_path: Path) -> None:
    # A second run of the same red team, and a run refused for its model, used to rewrite the red-team
    # version's manifest (files, run_id) and the clean export's manifest.json (run_id, config).
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1), retrain=False)
    first = run_cleaning(config, workspace, progress=False)
    before = _published_bytes(workspace.store.home)
    assert any("redteam" in p for p in before) and any(p.startswith("exports/") for p in before)

    second = run_cleaning(config, workspace, progress=False)
    assert (second.version, second.clean_version) == (first.version, first.clean_version)
    with pytest.raises(FileNotFoundError):
        bad = config.model_copy(update={"model": ModelConfig(torchscript=tmp_path / "gone.pt", feature_layer="embed")})
        run_cleaning(bad, workspace, progress=False)

    assert _published_bytes(workspace.store.home) == before
    # The second run's poisoned copy is the same data as the published one: it is not left behind.
    ingests = sorted(p.name for p in workspace.store.dataset_dir(first.dataset).glob("ingests/redteam-*"))
    assert ingests == [f"redteam-{first.run_id}.parquet"]
    with workspace.catalog.session() as s:
        assert s.get(Version, first.version).run_id == first.run_id  # type: ignore[union-attr]
