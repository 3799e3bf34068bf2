"""The catalog queries behind the review page: runs with their counts, and the quarantine filtered,
sorted and paged in SQL, so a page of a 10,000-entry quarantine costs a few indexed queries."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select

from sanitize.catalog import Decision, QuarantineEntry, Run, Version
from sanitize.quarantine import STATUSES
from sanitize.workspace import Workspace

SORTS = ("score_desc", "score_asc")
GROUPS = ("class", "none")
MAX_PER_PAGE = 1000


MAX_PAGE = 10**9
# Labels, ids and counts are 64-bit integers in the catalog: a larger one is no class, and SQLite
# cannot even compare it (Python's int is unbounded, so without this bound it was a 500).
INT64 = (-(2**63), 2**63 - 1)
_WHOLE = re.compile(r"[+-]?[0-9]{1,30}")


def whole_number(value: str | None, name: str, low: int = INT64[0], high: int = INT64[1]) -> int | None:
    """The whole number from ``low`` to ``high`` a URL or form parameter holds (plain decimal
    digits, no ``_``); None when it is absent or blank. Anything else is a ValueError naming ``name``."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{name} must be a whole number, not {value[:40]!r}")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {text[:40]}")
    return number


@dataclass(frozen=True)
class QuarantineQuery:
    """Which entries of a run's quarantine to show, in which order, and which page of them."""

    status: str | None = None
    label: int | None = None
    source: str | None = None
    detector: str | None = None
    sort: str = "score_desc"
    group: str = "class"
    page: int = 1
    per_page: int = 200

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; choose one of {', '.join(STATUSES)}")
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORTS)}")
        if self.group not in GROUPS:
            raise ValueError(f"unknown grouping {self.group!r}; choose one of {', '.join(GROUPS)}")
        if not 1 <= self.page <= MAX_PAGE:
            raise ValueError(f"page must be between 1 and {MAX_PAGE}, not {self.page}")
        if self.label is not None and not INT64[0] <= self.label <= INT64[1]:
            raise ValueError(f"label must be a 64-bit integer, not {self.label}")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {self.per_page}")

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, paged: bool = True) -> QuarantineQuery:
        """The query a page's URL parameters ask for: ``status``, ``label``, ``source``, ``detector``,
        ``sort``, ``group`` and, when ``paged``, ``page`` and ``per_page`` (a sample page walks the
        quarantine's order and ignores them). Blank parameters count as absent."""
        label = whole_number(params.get("label"), "label")
        page = whole_number(params.get("page"), "page", 1, MAX_PAGE) if paged else None
        per_page = whole_number(params.get("per_page"), "per_page", 1, MAX_PER_PAGE) if paged else None
        return cls(
            status=params.get("status") or None,
            label=label,
            source=params.get("source") or None,
            detector=params.get("detector") or None,
            sort=params.get("sort", cls.sort),
            group=params.get("group", cls.group),
            page=cls.page if page is None else page,
            per_page=cls.per_page if per_page is None else per_page,
        )

    def check_run(self, classes: Sequence[int], detectors: Sequence[str]) -> QuarantineQuery:
        """The query itself, once its class (where the run knows its classes) and detector are the
        run's (else ValueError)."""
        if self.label is not None and classes and self.label not in classes:
            raise ValueError(f"label {self.label} is not a class of this dataset ({', '.join(map(str, classes))})")
        if self.detector is not None and self.detector not in detectors:
            raise ValueError(f"unknown detector {self.detector!r}; this run ran {', '.join(detectors)}")
        return self

    def params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters (defaults left out), with ``changes`` applied."""
        q = replace(self, **changes)
        default = QuarantineQuery()
        return {
            k: str(v)
            for k, v in q.__dict__.items()
            if v is not None and v != "" and (v != getattr(default, k) or k in changes)
        }

    def filters(self, run_id: str) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [QuarantineEntry.run_id == run_id]
        if self.status:
            conds.append(QuarantineEntry.status == self.status)
        if self.label is not None:
            conds.append(QuarantineEntry.label == self.label)
        if self.source:
            conds.append(QuarantineEntry.source == self.source)
        if self.detector:
            # ``detectors`` is a comma-separated list: match a whole name, never a part of one.
            padded = literal(",") + QuarantineEntry.detectors + literal(",")
            conds.append(padded.contains(f",{self.detector},", autoescape=True))
        return conds

    def order(self) -> list[tuple[Any, bool]]:
        """(column, ascending) pairs, ending in the entry id so the order is total."""
        keys: list[tuple[Any, bool]] = [(QuarantineEntry.label, True)] if self.group == "class" else []
        keys.append((QuarantineEntry.suspicion_score, self.sort == "score_asc"))
        keys.append((QuarantineEntry.id, True))
        return keys


@dataclass(frozen=True)
class EntryView:
    """One quarantine entry as the page shows it."""

    id: int
    sample_id: str
    label: int
    source: str
    locator: str
    content_sha256: str
    suspicion_score: float
    detectors: tuple[str, ...]
    status: str
    new_label: int | None
    reason: str
    updated_at: datetime

    @classmethod
    def of(cls, e: QuarantineEntry) -> EntryView:
        return cls(
            e.id,
            e.sample_id,
            e.label,
            e.source,
            e.locator,
            e.content_sha256,
            e.suspicion_score,
            tuple(d for d in e.detectors.split(",") if d),
            e.status,
            e.new_label,
            e.reason,
            e.updated_at,
        )


@dataclass
class QuarantinePage:
    entries: list[EntryView]
    total: int
    query: QuarantineQuery
    class_counts: dict[int, int]
    sources: list[str]
    status_counts: dict[str, int]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))

    def groups(self) -> list[tuple[int | None, list[EntryView]]]:
        """The page's entries by class (one group of all of them when not grouped)."""
        if self.query.group != "class":
            return [(None, self.entries)]
        out: list[tuple[int | None, list[EntryView]]] = []
        for e in self.entries:
            if not out or out[-1][0] != e.label:
                out.append((e.label, []))
            out[-1][1].append(e)
        return out


def quarantine_page(ws: Workspace, run_id: str, q: QuarantineQuery) -> QuarantinePage:
    """One page of a run's quarantine under ``q``'s filters, with the counts the page shows."""
    conds = q.filters(run_id)
    order = [col.asc() if asc else col.desc() for col, asc in q.order()]
    with ws.catalog.session() as s:
        ws.catalog.run(s, run_id)
        total = s.scalar(select(func.count()).select_from(QuarantineEntry).where(*conds)) or 0
        # Order and page on the narrow key columns first, then read the page's full rows: sorting
        # 10,000 entries with their long reasons attached is what made deep pages slow.
        page_ids = s.scalars(
            select(QuarantineEntry.id)
            .where(*conds)
            .order_by(*order)
            .offset((q.page - 1) * q.per_page)
            .limit(q.per_page)
        ).all()
        by_id = {e.id: e for e in s.scalars(select(QuarantineEntry).where(QuarantineEntry.id.in_(page_ids)))}
        rows = [by_id[i] for i in page_ids]
        by_class = s.execute(
            select(QuarantineEntry.label, func.count()).where(*conds).group_by(QuarantineEntry.label)
        ).all()
        sources = s.scalars(
            select(QuarantineEntry.source)
            .where(QuarantineEntry.run_id == run_id)
            .distinct()
            .order_by(QuarantineEntry.source)
        ).all()
        by_status = s.execute(
            select(QuarantineEntry.status, func.count())
            .where(QuarantineEntry.run_id == run_id)
            .group_by(QuarantineEntry.status)
        ).all()
        entries = [EntryView.of(e) for e in rows]
    return QuarantinePage(
        entries,
        int(total),
        q,
        {int(c): int(n) for c, n in by_class},
        list(sources),
        {str(st): int(n) for st, n in by_status},
    )


def entry_of(ws: Workspace, run_id: str, sample_id: str) -> EntryView | None:
    """The quarantine entry of ``sample_id`` in ``run_id``, or None when the run kept the sample."""
    with ws.catalog.session() as s:
        e = s.scalars(
            select(QuarantineEntry).where(QuarantineEntry.run_id == run_id, QuarantineEntry.sample_id == sample_id)
        ).first()
        return None if e is None else EntryView.of(e)


@dataclass(frozen=True)
class DecisionView:
    action: str
    new_label: int | None
    reviewer: str
    note: str | None
    created_at: datetime


def decisions_of(ws: Workspace, entry_id: int) -> list[DecisionView]:
    with ws.catalog.session() as s:
        return [
            DecisionView(d.action, d.new_label, d.reviewer, d.note, d.created_at)
            for d in s.scalars(select(Decision).where(Decision.quarantine_id == entry_id).order_by(Decision.id))
        ]


def _beyond(keys: list[tuple[Any, bool]], values: list[Any], forward: bool) -> ColumnElement[bool]:
    """Rows strictly after (``forward``) or before the row with key ``values`` in the order ``keys``."""
    clauses = []
    for k, (col, asc) in enumerate(keys):
        same = [keys[j][0] == values[j] for j in range(k)]
        step = col > values[k] if asc == forward else col < values[k]
        clauses.append(and_(*same, step))
    return or_(*clauses)


def adjacent_entries(ws: Workspace, run_id: str, entry: EntryView, q: QuarantineQuery) -> tuple[str | None, str | None]:
    """The sample ids before and after ``entry`` in the quarantine's order under ``q`` (keyset, no offset)."""
    keys = q.order()
    own = {
        QuarantineEntry.label.key: entry.label,
        QuarantineEntry.suspicion_score.key: entry.suspicion_score,
        QuarantineEntry.id.key: entry.id,
    }
    values = [own[col.key] for col, _ in keys]
    out: list[str | None] = []
    with ws.catalog.session() as s:
        for forward in (False, True):
            order = [col.asc() if asc == forward else col.desc() for col, asc in keys]
            out.append(
                s.scalars(
                    select(QuarantineEntry.sample_id)
                    .where(*q.filters(run_id), _beyond(keys, values, forward))
                    .order_by(*order)
                    .limit(1)
                ).first()
            )
    return out[0], out[1]


@dataclass
class RunRow:
    """A run as the runs page lists it."""

    id: str
    dataset: str
    version_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    summary: dict[str, Any]
    config: dict[str, Any]
    clean_version_id: str | None
    counts: dict[str, int] = field(default_factory=dict)
    approved_version: str | None = None

    @property
    def quarantined(self) -> int:
        return sum(self.counts.values())


def list_runs(ws: Workspace, run_id: str | None = None) -> list[RunRow]:
    """Every run (or the one ``run_id``), newest first, with its quarantine's status counts and its
    approved version."""
    runs_q = select(Run).order_by(Run.started_at.desc())
    counts_q = select(QuarantineEntry.run_id, QuarantineEntry.status, func.count()).group_by(
        QuarantineEntry.run_id, QuarantineEntry.status
    )
    approved_q = select(Version.run_id, Version.id).where(Version.kind == "clean", Version.status == "approved")
    if run_id is not None:
        runs_q = runs_q.where(Run.id == run_id)
        counts_q = counts_q.where(QuarantineEntry.run_id == run_id)
        approved_q = approved_q.where(Version.run_id == run_id)
    with ws.catalog.session() as s:
        if run_id is not None:
            ws.catalog.run(s, run_id)
        runs = s.scalars(runs_q).all()
        counts = s.execute(counts_q).all()
        approved = s.execute(approved_q).all()
        rows = [
            RunRow(
                r.id,
                r.dataset,
                r.version_id,
                r.status,
                r.started_at,
                r.finished_at,
                r.error,
                dict(r.summary or {}),
                dict(r.config or {}),
                r.clean_version_id,
            )
            for r in runs
        ]
    by_id = {r.id: r for r in rows}
    for run_id, status, n in counts:
        if run_id in by_id:
            by_id[run_id].counts[str(status)] = int(n)
    for run_id, version_id in approved:
        if run_id in by_id:
            by_id[run_id].approved_version = version_id
    return rows


def run_row(ws: Workspace, run_id: str) -> RunRow:
    return list_runs(ws, run_id)[0]


def status_by_source(ws: Workspace, run_id: str) -> dict[str, dict[str, int]]:
    """Per source, the number of the run's quarantine entries in each status."""
    with ws.catalog.session() as s:
        rows = s.execute(
            select(QuarantineEntry.source, QuarantineEntry.status, func.count())
            .where(QuarantineEntry.run_id == run_id)
            .group_by(QuarantineEntry.source, QuarantineEntry.status)
        ).all()
    out: dict[str, dict[str, int]] = {}
    for source, status, n in rows:
        out.setdefault(str(source), {})[str(status)] = int(n)
    return out


def statuses_of(ws: Workspace, run_id: str) -> dict[str, str]:
    """Every quarantined sample of the run with its status."""
    with ws.catalog.session() as s:
        return {
            str(sid): str(st)
            for sid, st in s.execute(
                select(QuarantineEntry.sample_id, QuarantineEntry.status).where(QuarantineEntry.run_id == run_id)
            )
        }
