"""Integrity end to end: ``sanitize verify`` finds each tampering by version, file and sample, and
``CleanDataset`` and the export refuse file data that is not what was published.

Each tampering is done by hand on a copy of one small store (a red-team run on the digits, most of
its flags confirmed, two left pending), the way a person with write access to the data folder or the
catalog would: a Parquet file rewritten with one pixel changed, a row updated or deleted in SQL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from sanitize import cli
from sanitize.catalog import AuditRecord, Catalog, QuarantineEntry, Version, audit_record_hash
from sanitize.config import DEFAULT_DATASET, ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.data import CleanDataset
from sanitize.export import copy_out, export_clean_version
from sanitize.pipeline import run_cleaning
from sanitize.quarantine import list_quarantine
from sanitize.review import decide
from sanitize.store import SAMPLE_SCHEMA, ChecksumError, content_hash, decode_pixels
from sanitize.verify import VerifyReport, verify
from sanitize.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
CONFIG = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1), retrain=False)


@dataclass
class Store:
    """A copy of the small store, with what the tampering tests aim at."""

    home: Path
    ws: Workspace
    run_id: str
    versions: dict[str, str]  # kind (ingested, redteam, clean) -> version id
    pending: list[str]
    confirmed: list[str]

    def sql(self, statement: str, *params: object) -> None:
        """Change the catalog by hand, as someone with the database file would."""
        with sqlite3.connect(self.home / "catalog.db") as db:
            db.execute(statement, params)

    def audit_ids(self, action: str) -> tuple[int, str]:
        """The id of the first audit record of ``action`` and how verify names the record after it."""
        with self.ws.catalog.session() as s:
            rows = s.execute(
                select(AuditRecord.id, AuditRecord.action, AuditRecord.subject).order_by(AuditRecord.id)
            ).all()
        i = next(k for k, r in enumerate(rows) if r.action == action)
        after = rows[i + 1]
        return rows[i].id, f"audit_log record {after.id} ({after.action} {after.subject})"

    def file_of(self, kind: str) -> Path:
        v = self.versions[kind]
        return self.ws.store.files(self.ws.store.manifest(DEFAULT_DATASET, v))[0]


@pytest.fixture(scope="module")
def base_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("verify-home")
    ws = Workspace(Settings(home=home, catalog_url=None))
    result = run_cleaning(CONFIG, ws, progress=False)
    flagged = [r.sample_id for r in list_quarantine(ws, result.run_id)]
    decide(ws, result.run_id, flagged[2:], "confirm", reviewer="ana", note="corner patch")
    ws.catalog.dispose()
    return home


@pytest.fixture
def store(base_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    monkeypatch.setenv("SANITIZE_HOME", str(home))
    ws = Workspace(Settings(home=home, catalog_url=None))
    with ws.catalog.session() as s:
        versions = {v.kind: v.id for v in s.scalars(select(Version).order_by(Version.created_at))}
        entries = s.scalars(select(QuarantineEntry).order_by(QuarantineEntry.id)).all()
    run_id = entries[0].run_id
    pending = [e.sample_id for e in entries if e.status == "pending"]
    confirmed = [e.sample_id for e in entries if e.status == "confirmed"]
    assert len(pending) == 2 and len(confirmed) > 10 and set(versions) == {"ingested", "redteam", "clean"}
    return Store(home, ws, run_id, versions, pending, confirmed)


def verify_cli(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, ["verify", *args], env={"SANITIZE_HOME": str(home), "COLUMNS": "300"})
    return result.exit_code, result.output


def problems(report: VerifyReport) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(p.check, p.version, p.file, p.sample_id) for p in report.problems]


def change_one_pixel(path: Path, row: int = 5) -> str:
    """Rewrite a Parquet sample file with one byte of one sample's pixels changed; return its id."""
    table = pq.read_table(path)
    pixels = table.column("pixels").to_pylist()
    changed = bytearray(pixels[row])
    changed[len(changed) // 2] ^= 0x01
    pixels[row] = bytes(changed)
    i = table.schema.get_field_index("pixels")
    table = table.set_column(i, SAMPLE_SCHEMA.field("pixels"), pa.array(pixels, pa.binary()))
    pq.write_table(table, path)
    return str(table.column("sample_id")[row].as_py())


# --- a store as published ------------------------------------------------------------------------
def test_a_store_as_published_verifies_clean(store: Store) -> None:
    report = verify(store.ws)
    assert report.ok, report.problems
    assert report.warnings == []
    assert (report.versions, report.runs) == (3, 1) and report.samples > 3000
    code, out = verify_cli(store.home)
    assert code == 0 and "all holds" in out
    code, out = verify_cli(store.home, store.versions["clean"])
    assert code == 0 and "verified " + store.versions["clean"] in out
    manifest = json.loads(
        (store.ws.store.home / "exports" / DEFAULT_DATASET / store.versions["clean"] / "manifest.json").read_text()
    )
    assert set(manifest["checksums"]) == set(manifest["files"])


def test_an_unknown_target_is_a_bad_argument(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sanitize", "verify", "no-such-thing"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2


# --- one pixel changed in a published file ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["ingested", "redteam", "clean"])
def test_one_changed_pixel_is_found_and_refused(store: Store, kind: str, tmp_path: Path) -> None:
    path = store.file_of(kind)
    rel = str(path.relative_to(store.home))
    version = store.versions[kind]
    sample = change_one_pixel(path)

    found = problems(verify(store.ws))
    assert ("files", version, rel, None) in found
    assert ("samples", version, rel, sample) in found
    code, out = verify_cli(store.home)
    assert code == 1 and rel in out and sample in out

    with pytest.raises(ChecksumError, match=f"version {version}: file {rel} does not match"):
        CleanDataset(version)
    with pytest.raises(ChecksumError, match=f"version {version}: file {rel}"):
        copy_out(store.ws, version, tmp_path / "out", "parquet")
    assert not (tmp_path / "out" / "train.parquet").exists()
    if kind != "clean":  # an export reads its parent: the red team's (of the ingest) or the run's version
        with pytest.raises(ChecksumError, match=f"version {version}"):
            export_clean_version(store.ws, DEFAULT_DATASET, version, store.run_id, set(), {})


def test_an_export_s_manifest_copy_rewritten(store: Store) -> None:
    # What defect 2 did: a later run rewrote the export folder's manifest.json (run_id, config).
    v = store.versions["clean"]
    copy = store.ws.store.export_dir(DEFAULT_DATASET, v) / "manifest.json"
    manifest = json.loads(copy.read_text())
    manifest["extra"]["run_id"] = "run-someone-else"
    copy.write_text(json.dumps(manifest))
    assert problems(verify(store.ws)) == [("files", v, str(copy.relative_to(store.home)), None)]


def test_a_manifest_from_before_checksums_loads_and_is_a_warning(store: Store) -> None:
    v = store.versions["redteam"]
    path = store.ws.store.manifest_path(DEFAULT_DATASET, v)
    manifest = json.loads(path.read_text())
    del manifest["checksums"]
    path.write_text(json.dumps(manifest))
    report = verify(store.ws)
    assert report.ok, report.problems
    assert [(w.check, w.version) for w in report.warnings] == [("files", v)]
    assert "no checksums recorded" in report.warnings[0].message
    assert len(CleanDataset(v)) == manifest["n_train"]


def test_an_export_rewritten_with_its_hashes_and_checksum_recomputed_is_still_found(store: Store) -> None:
    # A thorough tamperer rewrites one label, and one image with its content hash, and the manifest's
    # checksum: a clean version's samples must still be its parent's, under the parent's labels (or
    # the reviewed relabelling) and with the parent's content.
    v = store.versions["clean"]
    path = store.file_of("clean")
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[7] = (labels[7] + 1) % 10
    table = table.set_column(table.schema.get_field_index("label"), SAMPLE_SCHEMA.field("label"), pa.array(labels))
    pq.write_table(table, path)
    relabelled = table.column("sample_id")[7].as_py()
    repainted = change_one_pixel(path, row=9)
    table = pq.read_table(path)
    shas = table.column("content_sha256").to_pylist()
    image = decode_pixels(table.slice(9, 1))[0]
    shas[9] = content_hash(image)
    i = table.schema.get_field_index("content_sha256")
    pq.write_table(table.set_column(i, SAMPLE_SCHEMA.field("content_sha256"), pa.array(shas)), path)
    manifest_path = store.ws.store.manifest_path(DEFAULT_DATASET, v)
    manifest = json.loads(manifest_path.read_text())
    manifest["checksums"][str(path.relative_to(store.home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    (path.parent / "manifest.json").write_text(json.dumps(manifest))  # and the export folder's copy
    report = verify(store.ws)
    assert sorted(problems(report)) == sorted([("samples", v, None, relabelled), ("samples", v, None, repainted)])
    assert {p.sample_id: p.message.split(" ")[0] for p in report.problems} == {relabelled: "label", repainted: "its"}


# --- the quarantine changed by hand -----------------------------------------------------------------
def test_an_entry_released_by_hand_without_decision_or_audit(store: Store) -> None:
    sid = store.pending[0]
    store.sql("UPDATE quarantine SET status = 'released' WHERE sample_id = ?", sid)
    found = problems(verify(store.ws))
    assert found == [("decisions", None, None, sid)]
    code, out = verify_cli(store.home)
    assert code == 1 and "released without a decision" in out and sid in out


def test_a_deleted_entry(store: Store) -> None:
    sid = store.pending[1]
    store.sql("DELETE FROM quarantine WHERE sample_id = ?", sid)
    report = verify(store.ws)
    assert ("runs", None, f"runs/{store.run_id}/verdict.parquet", sid) in problems(report)
    assert any("quarantined" in p.message for p in report.problems)  # the run's counts no longer hold


def test_a_deleted_confirmed_entry_and_its_decision(store: Store) -> None:
    sid = store.confirmed[0]
    store.sql("DELETE FROM decisions WHERE quarantine_id = (SELECT id FROM quarantine WHERE sample_id = ?)", sid)
    store.sql("DELETE FROM quarantine WHERE sample_id = ?", sid)
    report = verify(store.ws)
    assert ("runs", None, f"runs/{store.run_id}/verdict.parquet", sid) in problems(report)


def test_an_entry_whose_label_changed(store: Store) -> None:
    sid = store.confirmed[1]
    store.sql("UPDATE quarantine SET label = (label + 1) % 10 WHERE sample_id = ?", sid)
    report = verify(store.ws)
    assert problems(report) == [("runs", None, None, sid)]
    assert "label" in report.problems[0].message


def test_a_clean_sample_s_hash_planted_on_a_confirmed_entry(store: Store) -> None:
    manifest = store.ws.store.manifest(DEFAULT_DATASET, store.versions["redteam"])
    train = store.ws.store.read_column_table(manifest, ["sample_id", "content_sha256"], split="train").to_pylist()
    flagged = set(store.pending) | set(store.confirmed)
    clean = next(r for r in train if r["sample_id"] not in flagged)
    victim = store.confirmed[2]
    store.sql("UPDATE quarantine SET content_sha256 = ? WHERE sample_id = ?", clean["content_sha256"], victim)
    report = verify(store.ws)
    assert problems(report) == [("runs", None, None, victim)]
    assert "content_sha256" in report.problems[0].message
    code, out = verify_cli(store.home)
    assert code == 1 and victim in out


def test_a_decision_without_its_audit_record(store: Store) -> None:
    sid = store.confirmed[3]
    store.sql("DELETE FROM audit_log WHERE subject = ?", f"{store.run_id}/{sid}")
    report = verify(store.ws)
    assert ("decisions", None, None, sid) in problems(report)
    assert any(p.check == "audit" for p in report.problems)  # and the chain is broken where it was


# --- the audit log ------------------------------------------------------------------------------
def test_an_edited_audit_record_breaks_the_chain(store: Store) -> None:
    poison, _ = store.audit_ids("run.poison")
    store.sql("UPDATE audit_log SET actor = 'mallory' WHERE id = ?", poison)
    report = verify(store.ws)
    assert [p.check for p in report.problems] == ["audit"]
    assert report.problems[0].file.startswith(f"audit_log record {poison} (run.poison")  # type: ignore[union-attr]
    assert "edited" in report.problems[0].message
    code, out = verify_cli(store.home)
    assert code == 1 and f"audit_log record {poison}" in out


def test_an_edited_audit_record_with_its_hash_recomputed_still_breaks_the_chain(store: Store) -> None:
    poison, after = store.audit_ids("run.poison")
    with store.ws.catalog.session() as s:  # rehash the edited record by hand (Catalog.audit never edits)
        r = s.get(AuditRecord, poison)
        assert r is not None and r.prev_hash is not None
        r.detail = {**(r.detail or {}), "n_poison": 0}
        r.record_hash = audit_record_hash(r.prev_hash, r.at, r.actor, r.action, r.subject, r.detail)
    report = verify(store.ws)
    assert [(p.check, p.file) for p in report.problems] == [("audit", after)]


def test_a_deleted_audit_record_breaks_the_chain(store: Store) -> None:
    poison, after = store.audit_ids("run.poison")
    store.sql("DELETE FROM audit_log WHERE id = ?", poison)
    report = verify(store.ws)
    assert [(p.check, p.file) for p in report.problems] == [("audit", after)]
    assert "deleted" in report.problems[0].message


def test_the_newest_records_removed_are_found_against_a_noted_head(store: Store) -> None:
    with store.ws.catalog.session() as s:
        store.ws.catalog.audit(s, "gc", "gc", str(store.home), removed=[], bytes=0)
    head = verify(store.ws).audit_head
    assert head is not None
    with store.ws.catalog.session() as s:
        newest = s.scalar(select(AuditRecord.id).order_by(AuditRecord.id.desc()).limit(1))
    store.sql("DELETE FROM audit_log WHERE id = ?", newest)
    assert verify(store.ws).ok  # the chain alone cannot tell
    report = verify(store.ws, audit_head=head)
    assert [(p.check, p.file) for p in report.problems] == [("audit", "audit_log")]
    code, out = verify_cli(store.home, "--audit-head", head)
    assert code == 1 and "removed from its end" in out


def test_records_from_before_the_chain_are_unchained_not_tampered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sqlite3.connect(tmp_path / "old.db") as db:  # an older release's audit log: no chain columns
        db.execute(
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, at DATETIME, actor VARCHAR(200), action VARCHAR(50), "
            "subject TEXT, detail JSON)"
        )
        db.execute("INSERT INTO audit_log VALUES (1, '2026-01-01 00:00:00.000000', 'ana', 'ingest', 'd/s', '{}')")
    catalog = Catalog(url)
    with catalog.session() as s:
        catalog.audit(s, "ben", "gc", "home", removed=[])
    ws = Workspace(Settings(home=tmp_path / "home", catalog_url=url))
    report = verify(ws)
    assert report.ok and (report.audit_records, report.unchained_audit_records) == (2, 1)
    assert [w.check for w in report.warnings] == ["audit"]
    with sqlite3.connect(tmp_path / "old.db") as db:  # a hash removed after the chain began is tampering
        db.execute(
            "INSERT INTO audit_log (id, at, actor, action, subject, detail) VALUES "
            "(3, '2026-01-02 00:00:00.000000', 'eve', 'gc', 'home', '{}')"
        )
    assert [p.check for p in verify(ws).problems] == ["audit"]
    catalog.dispose()


WRITER = """
import sys, time
from pathlib import Path
from sanitize.catalog import Catalog
catalog = Catalog(sys.argv[1])
Path(sys.argv[3] + "." + sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():  # start together
    time.sleep(0.01)
for i in range(40):
    with catalog.session() as s:
        catalog.audit(s, sys.argv[2], "test.write", f"{sys.argv[2]}/{i}", i=i)
"""


def test_two_processes_writing_at_once_keep_one_chain(catalog_url: str, tmp_path: Path) -> None:
    Catalog(catalog_url).dispose()
    go = tmp_path / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, catalog_url, name, str(go)], cwd=ROOT, stderr=subprocess.PIPE)
        for name in ("ana", "ben")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.{name}").exists() for name in ("ana", "ben")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.02)
    go.touch()
    for w in writers:
        assert w.wait(120) == 0, w.stderr.read().decode()  # type: ignore[union-attr]
    ws = Workspace(Settings(home=tmp_path / "home", catalog_url=catalog_url))
    report = verify(ws)
    assert report.ok, report.problems
    assert (report.audit_records, report.unchained_audit_records) == (80, 0)
    with ws.catalog.session() as s:
        actors = s.scalars(select(AuditRecord.actor).order_by(AuditRecord.id)).all()
    assert actors.count("ana") == actors.count("ben") == 40
    ws.catalog.dispose()
