"""The SQL catalog: datasets, ingests, versions, runs, quarantine entries, decisions and the audit log.

SQLite by default; any SQLAlchemy URL (PostgreSQL for a team) through ``SANITIZE_CATALOG_URL``.
Nothing here is ever deleted: quarantine is a state and every state change is an audit record.

The audit log is a hash chain: each record carries the hash of the record before it (by id) and its
own hash over that and its fields (:func:`audit_record_hash`), so a record edited or deleted by hand
breaks the chain at that point (``sanitize verify`` walks it). :meth:`Catalog.audit` is its one
writer; records are chained when their transaction commits, under a lock that makes concurrent
writers take turns (see :func:`_chain_audit_records`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sanitize.errors import NotFoundError


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back as an aware UTC ``datetime`` on every database.

    SQLite keeps no zone (it would hand back naive values) and PostgreSQL answers in the session's
    zone; one convention lets callers compare and format times without asking which one they got.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the catalog stores aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_version: Mapped[str | None] = mapped_column(String(64))


class Ingest(Base):
    """One ingest of one source: what was read, from where, and what it added."""

    __tablename__ = "ingests"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    source: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    n_samples: Mapped[int] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    n_duplicates: Mapped[int] = mapped_column(Integer, default=0)
    file: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Source(Base):
    """Where a source of a dataset lives and how to read it, so a scheduled run can read it again."""

    __tablename__ = "sources"
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(20))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the reader's options (columns, split)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelMap(Base):
    """One version of a dataset's label map: ``names[i]`` is the class of label ``i``, for every source.

    Versions only grow: a later version keeps every earlier name at its index and appends new ones,
    so a label never changes meaning. A dataset whose labels are plain class indices has none.
    """

    __tablename__ = "label_maps"
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    names: Mapped[list[str]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(200))  # the source whose ingest made this version
    ingest_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Version(Base):
    """A dataset version: ingested (the union of each source's latest ingest) or clean (a run's export)."""

    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("datasets.name"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # ingested | redteam | clean
    parent_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="ready")  # ready | provisional | approved | failed
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    version_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | completed | failed | skipped
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_fingerprint: Mapped[str] = mapped_column(String(32))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    clean_version_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who runs it, to tell a run whose process was killed from one still working (sanitize.processes).
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    process_start: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Schedule(Base):
    """A dataset's scheduled cleaning: when (cron or interval) and with which run configuration."""

    __tablename__ = "schedules"
    dataset: Mapped[str] = mapped_column(String(200), primary_key=True)
    cron: Mapped[str | None] = mapped_column(String(100))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuarantineEntry(Base):
    """A flagged sample held out of training. Status: pending, confirmed, released or relabelled."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("run_id", "sample_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    dataset: Mapped[str] = mapped_column(String(200))
    sample_id: Mapped[str] = mapped_column(String(64), index=True)
    content_sha256: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(200))
    locator: Mapped[str] = mapped_column(Text)
    suspicion_score: Mapped[float] = mapped_column(Float)
    detectors: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    new_label: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarantine_id: Mapped[int] = mapped_column(ForeignKey("quarantine.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # confirm | release | relabel
    new_label: Mapped[int | None] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRecord(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The chain: the previous record's hash (AUDIT_GENESIS for the first chained one) and this one's.
    # NULL in both for records an older release wrote: unchained, not tampered.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    record_hash: Mapped[str | None] = mapped_column(String(64))


AUDIT_GENESIS = "0" * 64
"""The ``prev_hash`` of the first chained record (none before it, or only unchained ones)."""


def audit_record_hash(
    prev_hash: str, at: datetime, actor: str, action: str, subject: str, detail: dict[str, Any] | None
) -> str:
    """SHA-256 over the previous record's hash and this record's fields, in a canonical JSON form.

    The time is taken in UTC to the microsecond, which SQLite and PostgreSQL both keep, so a record
    hashes the same when it is read back from either (and after ``sanitize copy-catalog``).
    """
    body = json.dumps(
        [prev_hash, at.astimezone(UTC).isoformat(timespec="microseconds"), actor, action, subject, detail],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


class Reviewer(Base):
    """Someone who may decide in the review web page. Only the SHA-256 of their token is kept."""

    __tablename__ = "reviewers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReviewSession(Base):
    """A browser logged in with a reviewer token: the SHA-256 of its cookie and its CSRF token."""

    __tablename__ = "review_sessions"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    reviewer: Mapped[str] = mapped_column(ForeignKey("reviewers.name"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The review page's default order (class, then most suspicious first), covering its counts too, so
# a page of a 10,000-entry quarantine never sorts the table. Catalogs made before it was added get
# it from :func:`_upgrade` when they are next opened.
QUARANTINE_REVIEW_INDEX = Index(
    "ix_quarantine_review",
    QuarantineEntry.run_id,
    QuarantineEntry.label,
    QuarantineEntry.suspicion_score.desc(),
    QuarantineEntry.id,
    QuarantineEntry.status,
    QuarantineEntry.source,
)


class Catalog:
    """A handle on the catalog database; ``session()`` gives a transaction that commits or rolls back."""

    def __init__(self, url: str):
        self.url = url
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        with self.engine.connect() as conn:
            # Two processes opening a fresh catalog at once (``sanitize up`` starts several) would both
            # see a table missing and both CREATE it; taking a lock first makes them take turns.
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)
            _upgrade(conn)
            conn.commit()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        """Close the catalog's pooled connections (a server counts them; SQLite does not care)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def audit(self, session: Session, actor: str, action: str, subject: str, **detail: Any) -> None:
        """Append one record to the audit log, inside the caller's transaction.

        The record is written, chained to the one before it, when the transaction commits (and not
        at all when it rolls back); a query in the same transaction does not see it yet.
        """
        session.info.setdefault(_PENDING_AUDIT, []).append(
            {
                "at": utcnow(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "detail": json.loads(json.dumps(detail, default=str)),
            }
        )

    def dataset(self, session: Session, name: str) -> Dataset:
        ds = session.get(Dataset, name)
        if ds is None:
            known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
            hint = f"; known datasets: {', '.join(known)}" if known else "; no dataset has been ingested yet"
            raise NotFoundError(f"unknown dataset {name!r}{hint}")
        return ds

    def label_map(self, session: Session, dataset: str) -> LabelMap | None:
        """The dataset's current label map (its latest version), None when its labels have no names."""
        query = select(LabelMap).where(LabelMap.dataset == dataset).order_by(LabelMap.version.desc()).limit(1)
        return session.scalars(query).first()

    def version(self, session: Session, version_id: str) -> Version:
        v = session.get(Version, version_id)
        if v is None:
            raise NotFoundError(f"unknown dataset version {version_id!r}")
        return v

    def run(self, session: Session, run_id: str) -> Run:
        r = session.get(Run, run_id)
        if r is None:
            raise NotFoundError(f"unknown run {run_id!r}")
        return r

    def latest_run(self, session: Session, dataset: str | None = None) -> Run:
        query = select(Run).where(Run.status == "completed").order_by(Run.started_at.desc())
        if dataset:
            query = query.where(Run.dataset == dataset)
        run = session.scalars(query.limit(1)).first()
        if run is None:
            raise NotFoundError(f"no completed run{' for dataset ' + repr(dataset) if dataset else ''}")
        return run

    def confirmed_poisons(self, session: Session, dataset: str, *, other_than: str | None = None) -> dict[str, str]:
        """Content hash -> why it stays out, for every sample confirmed as poison in a run of ``dataset``.

        Confirmed poisons stay out for good: a later version that holds the same pixels (same content
        hash, whatever its source, place or label) excludes them too, so both the quarantine (entering
        a run's flags) and the export (writing a clean version) ask for them here. ``other_than``
        leaves out one run's own entries. The reason names the first run that confirmed the content.
        """
        query = (
            select(QuarantineEntry.content_sha256, QuarantineEntry.run_id, QuarantineEntry.sample_id)
            .where(QuarantineEntry.dataset == dataset, QuarantineEntry.status == "confirmed")
            .order_by(QuarantineEntry.created_at, QuarantineEntry.id)
        )
        if other_than is not None:
            query = query.where(QuarantineEntry.run_id != other_than)
        found: dict[str, str] = {}
        for sha, run_id, sample_id in session.execute(query):
            found.setdefault(sha, f"confirmed poison in run {run_id} (sample {sample_id})")
        return found


_SCHEMA_LOCK = 0x5A417A  # any constant: the advisory lock that serialises creating the tables
_AUDIT_LOCK = 0x5A417B  # the advisory lock (PostgreSQL) under which audit records are chained
_PENDING_AUDIT = "sanitize.audit_pending"  # session.info key: records audit() took, not yet written


@event.listens_for(Session, "before_commit")
def _chain_audit_records(session: Session) -> None:
    """Write the records :meth:`Catalog.audit` took in this transaction, chained to the last one.

    Two writers must not both chain onto the same last record, so the last hash is read under a lock
    held until commit: on PostgreSQL a transaction-scoped advisory lock taken first; on SQLite the
    database's one write lock, which the INSERT takes (or already holds since the transaction's first
    write) before the previous hash is read. Taking it at commit, after the transaction's own work,
    holds it for milliseconds and never while the transaction still waits for row locks. On SQLite
    an id is the largest so far plus one, and on PostgreSQL the sequence is drawn under the lock, so
    id order is chain order. A savepoint's commit leaves them for the outer one.
    """
    # Listening on the Session class reaches every session in the process (Prefect's server has its
    # own): one that took no audit record returns at the first line.
    if not session.info.get(_PENDING_AUDIT) or session.in_nested_transaction():
        return
    pending = session.info.pop(_PENDING_AUDIT)
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK})
    records = [AuditRecord(**fields) for fields in pending]
    session.add_all(records)
    session.flush()
    records.sort(key=lambda r: r.id)
    prev = session.scalar(
        select(AuditRecord.record_hash).where(AuditRecord.id < records[0].id).order_by(AuditRecord.id.desc()).limit(1)
    )
    prev = prev or AUDIT_GENESIS
    for r in records:
        r.prev_hash = prev
        r.record_hash = prev = audit_record_hash(prev, r.at, r.actor, r.action, r.subject, r.detail)
    session.flush()


@event.listens_for(Session, "after_rollback")
def _drop_pending_audit(session: Session) -> None:
    # Records of a transaction that rolled back were never its history.
    session.info.pop(_PENDING_AUDIT, None)


def _upgrade(conn: Connection) -> None:
    """Add to a catalog made by an older release what today's schema has beyond its tables (idempotent).

    ``create_all`` creates a missing table with its indexes but never touches a table that exists,
    so an index added later reaches old catalogs only through a step here.
    """
    # The audit chain's columns stay NULL in records written before them: verify calls those unchained.
    for table, names in (
        ("runs", ("host", "pid", "process_start", "heartbeat_at")),
        ("audit_log", ("prev_hash", "record_hash")),
    ):
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        for name in names:
            if name not in have:
                kind = Base.metadata.tables[table].c[name].type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
    try:
        QUARANTINE_REVIEW_INDEX.create(conn, checkfirst=True)
    except DBAPIError:
        # SQLite and PostgreSQL hold the schema lock here; on another database a second process can
        # make the index between the check and the create. Anything else shows on first use.
        if not inspect(conn).has_index("quarantine", "ix_quarantine_review"):
            raise


_BUSY_TIMEOUT_S = 30.0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    _switch_to_wal(cur)
    cur.close()


def _switch_to_wal(cur: Any) -> None:
    """Put the database in WAL mode, waiting for other connections as a busy timeout would.

    Switching a fresh file to WAL needs it to itself, and SQLite answers "database is locked" at once
    rather than calling the busy handler, so several processes opening a new catalog together would
    fail at random. Once the file is in WAL mode the pragma is a no-op and returns straight away.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.2)
