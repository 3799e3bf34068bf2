"""The audit log's hash chain, walked by id (see :mod:`sanitize.catalog` for how it is written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanitize.catalog import AUDIT_GENESIS, audit_record_hash
from sanitize.verify.report import VerifyReport


def check_chain(report: VerifyReport, records: Sequence[Any], noted_head: str | None = None) -> None:
    """Walk the audit log by id: recompute each record's hash and link it to the one before.

    The chain alone cannot tell that its newest records were deleted; ``noted_head``, the
    ``audit_head`` of an earlier report kept elsewhere, must still be a record of the chain.
    """
    report.audit_records = len(records)
    prev_stored: str | None = None  # the previous record's stored hash (None: unchained or none)
    chained = False
    for r in records:
        where = {"file": f"audit_log record {r.id} ({r.action} {r.subject})"}
        if r.record_hash is None and r.prev_hash is None:
            if chained:
                report.problem(
                    "audit",
                    "a record without a hash after the chain began: written outside Catalog.audit, or its hash removed",
                    **where,
                )
            else:
                report.unchained_audit_records += 1
            prev_stored = None
            continue
        chained = True
        expected_prev = prev_stored or AUDIT_GENESIS
        if r.prev_hash != expected_prev:
            report.problem(
                "audit",
                "the chain is broken before this record: the one before it was deleted, edited or inserted",
                **where,
            )
        if r.record_hash != audit_record_hash(r.prev_hash or "", r.at, r.actor, r.action, r.subject, r.detail):
            report.problem("audit", "the record's fields do not hash to its recorded hash: it was edited", **where)
        prev_stored = r.record_hash
    report.audit_head = prev_stored
    if noted_head is not None and noted_head not in {r.record_hash for r in records}:
        report.problem(
            "audit",
            f"the chain no longer holds the head {noted_head} noted earlier: records were removed from its end",
            file="audit_log",
        )
    if report.unchained_audit_records:
        report.warn("audit", f"{report.unchained_audit_records} audit records from before the chain are unchained")
