"""``sanitize verify``: check that what is stored is what was published and recorded.

Four kinds of check, each mismatch reported with its version, file, run and sample id:

- **files**: every file a version's manifest lists exists and has the SHA-256 recorded at
  publication (:func:`sanitize.versions.publish_version`); every stored sample's ``content_sha256``
  is the hash of its pixels (:func:`sanitize.store.content_hash`); the rows per split are the
  manifest's and the catalog's counts; an ingested or red-team version's id is the hash of its
  (content hash, label, split) pairs, and a clean version holds its parent's samples minus the ones
  its manifest excludes. A manifest written before checksums were recorded is a *warning* ("no
  checksums recorded"): its files are still hashed sample by sample, but their bytes cannot be
  compared with anything.
- **runs**: for every completed run, kept + quarantined = ingested across its verdict, its
  quarantine rows and its version's train split: the verdict covers exactly the train split, every
  sample it flags has an entry (a deleted row is found), every entry is a sample of the version with
  that sample's content hash and label (a planted hash or a changed label is found), an entry the
  verdict did not flag is a poison confirmed in another run, the quarantine stage's audit record
  counts the entries there are, and an approved clean version of the run leaves every confirmed
  poison out.
- **decisions**: an entry that is not ``pending`` has the decision that moved it (action and label
  matching its state) and that decision's audit record; a pending one has none. Entries that came in
  already confirmed from another run (confirmed poisons stay out) need that run's confirmed entry.
- **audit chain**: each record's hash is recomputed and its ``prev_hash`` compared with the record
  before it (:func:`sanitize.catalog.audit_record_hash`): an edited or deleted record breaks the
  chain. Records written before the chain existed (a prefix with no hashes) are counted as
  unchained, not reported as tampered; a record without a hash after the chain began is.
  Deleting the newest records leaves no trace in the chain itself: the report gives the chain's head
  (``audit_head``), and a head noted earlier and passed back must still be in the chain.

The pixels are hashed once per file (files are shared between versions), batch by batch from the
Parquet value buffer without copying a row.
"""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import select

from sanitize.catalog import AuditRecord, Dataset, Decision, QuarantineEntry, Run, Version
from sanitize.errors import NotFoundError
from sanitize.verify.chain import check_chain
from sanitize.verify.files import StoreChecker
from sanitize.verify.report import Finding, VerifyReport
from sanitize.verify.runs import check_run
from sanitize.workspace import Workspace

__all__ = ["Finding", "VerifyReport", "verify"]


def verify(ws: Workspace, target: str | None = None, *, audit_head: str | None = None) -> VerifyReport:
    """Verify the whole store, one dataset (``target`` a dataset name) or one version (a version id).

    Raises :class:`~sanitize.errors.NotFoundError` for a target that is neither. The audit chain is
    always checked whole: it is one chain for the catalog. ``audit_head``, the report's
    ``audit_head`` from an earlier verify, must still be in the chain (its newest records not removed).
    """
    start = time.perf_counter()
    report = VerifyReport(scope=target or "everything")
    with ws.catalog.session() as s:
        versions = s.scalars(select(Version).order_by(Version.created_at, Version.id)).all()
        runs = s.scalars(select(Run).where(Run.status == "completed").order_by(Run.started_at)).all()
        if target is not None:
            if s.get(Dataset, target) is not None:
                versions = [v for v in versions if v.dataset == target]
                runs = [r for r in runs if r.dataset == target]
            elif s.get(Version, target) is not None:
                versions = [v for v in versions if v.id == target]
                runs = [r for r in runs if target in (r.version_id, r.clean_version_id)]
            else:
                raise NotFoundError(f"{target!r} is neither a dataset nor a dataset version")
        entries = s.scalars(select(QuarantineEntry).order_by(QuarantineEntry.id)).all()
        decisions = s.scalars(select(Decision).order_by(Decision.id)).all()
        audit = s.execute(
            select(
                AuditRecord.id,
                AuditRecord.at,
                AuditRecord.actor,
                AuditRecord.action,
                AuditRecord.subject,
                AuditRecord.detail,
                AuditRecord.prev_hash,
                AuditRecord.record_hash,
            ).order_by(AuditRecord.id)
        ).all()
        s.expunge_all()
    checker = StoreChecker(ws, report)
    for v in versions:
        checker.check_version(v)
    by_run: dict[str, list[QuarantineEntry]] = defaultdict(list)
    for e in entries:
        by_run[e.run_id].append(e)
    by_entry: dict[int, list[Decision]] = defaultdict(list)
    for d in decisions:
        by_entry[d.quarantine_id].append(d)
    audited = {(a.action, a.subject) for a in audit}
    entered = {a.subject: a.detail or {} for a in audit if a.action == "run.quarantine"}
    confirmed = {(e.run_id, e.sample_id): e.content_sha256 for e in entries if e.status == "confirmed"}
    clean_of_run: dict[str, list[Version]] = defaultdict(list)
    for v in versions:
        if v.kind == "clean" and v.run_id:
            clean_of_run[v.run_id].append(v)
    for run in runs:
        check_run(checker, run, by_run[run.id], by_entry, audited, confirmed, clean_of_run[run.id], entered)
    check_chain(report, audit, audit_head)
    report.runs = len(runs)
    report.seconds = round(time.perf_counter() - start, 2)
    return report
