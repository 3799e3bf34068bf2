"""Every training sample of a run, filtered, sorted and paged: the all-samples page's index.

A completed run's verdict never changes, so its columns are held in memory as arrays (one row per
training sample, in the verdict's order) with each sort order computed once, on first use: a page is
then a mask over the filter's columns, the sort order gathered through it and a slice, a few
milliseconds at 1,000,000 samples whatever the page. The one thing that changes, each sample's
quarantine status, is read from the catalog (:class:`StatusOverlay`) and read again only when the
audit log has grown: every change to a quarantine entry (a run entering its flags, a decision, an
undo, a sample sent by hand) writes an audit record in the same transaction, so an unchanged audit
head means unchanged statuses.

A SQL table of the verdict was the other way: it would put a million rows per run into a catalog a
team shares (or a second database file beside the run that ``gc`` and ``verify`` know nothing of),
and SQLite's ``OFFSET`` walks every skipped row, so page 500 costs what 500 pages cost.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pyarrow.compute as pc
from sqlalchemy import func, select

from sanitize.catalog import AuditRecord, QuarantineEntry
from sanitize.errors import NotFoundError
from sanitize.quarantine import STATUSES
from sanitize.web.data import RunData
from sanitize.web.queries import MAX_PAGE, MAX_PER_PAGE, whole_number
from sanitize.workspace import Workspace

SUSPICION = "suspicion"
"""The verdict's combined score, sortable like a detector's (it has no rank)."""
KEPT = "kept"
QUARANTINED = "quarantined"
STATUS_FILTERS = (KEPT, QUARANTINED, *STATUSES)
CODES = {KEPT: 0, **{st: i + 1 for i, st in enumerate(STATUSES)}}
NAMES = np.array([KEPT, *STATUSES], dtype=object)
SORTS = ("score_desc", "score_asc", "rank_asc", "rank_desc")
VERDICTS = ("quarantine", "keep")


def real_number(value: str | None, name: str) -> float | None:
    """The finite number a URL parameter holds; None when absent or blank, else a ValueError naming ``name``."""
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, not {value[:40]!r}")
    return number


@dataclass(frozen=True)
class SampleQuery:
    """Which of a run's training samples to show, in which order, and which page of them.

    ``detector`` (a detector's name, or ``suspicion`` for the verdict's score) is the column the
    order, ``min_score``/``max_score``, ``max_rank`` and ``flagged`` apply to. ``x0..y1`` is a
    rectangle on the run's 2-D projection (:meth:`RunData.projection`), in its coordinates.
    """

    label: int | None = None
    source: str | None = None
    status: str | None = None
    verdict: str | None = None
    detector: str = SUSPICION
    sort: str = "score_desc"
    min_score: float | None = None
    max_score: float | None = None
    max_rank: int | None = None
    flagged: str | None = None
    x0: float | None = None
    x1: float | None = None
    y0: float | None = None
    y1: float | None = None
    page: int = 1
    per_page: int = 200

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUS_FILTERS:
            raise ValueError(f"unknown status {self.status!r}; choose one of {', '.join(STATUS_FILTERS)}")
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; choose one of {', '.join(VERDICTS)}")
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORTS)}")
        if self.flagged is not None and self.flagged not in ("yes", "no"):
            raise ValueError(f"flagged must be yes or no, not {self.flagged!r}")
        rect = (self.x0, self.x1, self.y0, self.y1)
        if any(v is not None for v in rect) and any(v is None for v in rect):
            raise ValueError("a rectangle on the projection needs all of x0, x1, y0 and y1")
        if self.detector == SUSPICION and (self.sort.startswith("rank") or self.max_rank is not None):
            raise ValueError("the suspicion score has no rank: choose a detector to sort or filter by rank")
        if self.detector == SUSPICION and self.flagged is not None:
            raise ValueError("flagged needs a detector (the verdict's own decision is the verdict filter)")
        if not 1 <= self.page <= MAX_PAGE:
            raise ValueError(f"page must be between 1 and {MAX_PAGE}, not {self.page}")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {self.per_page}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SampleQuery:
        """The query a URL's parameters ask for (blank ones count as absent)."""
        text = {k: (params.get(k) or None) for k in ("source", "status", "verdict", "flagged")}
        page = whole_number(params.get("page"), "page", 1, MAX_PAGE)
        per_page = whole_number(params.get("per_page"), "per_page", 1, MAX_PER_PAGE)
        return cls(
            label=whole_number(params.get("label"), "label"),
            detector=params.get("detector") or SUSPICION,
            sort=params.get("sort") or cls.sort,
            min_score=real_number(params.get("min_score"), "min_score"),
            max_score=real_number(params.get("max_score"), "max_score"),
            max_rank=whole_number(params.get("max_rank"), "max_rank", 1),
            x0=real_number(params.get("x0"), "x0"),
            x1=real_number(params.get("x1"), "x1"),
            y0=real_number(params.get("y0"), "y0"),
            y1=real_number(params.get("y1"), "y1"),
            page=cls.page if page is None else page,
            per_page=cls.per_page if per_page is None else per_page,
            **text,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters (defaults left out), with ``changes`` applied."""
        q = replace(self, **changes)
        default = SampleQuery()
        out = {}
        for f in fields(q):
            v = getattr(q, f.name)
            if v is not None and (v != getattr(default, f.name) or f.name in changes):
                out[f.name] = repr(v) if isinstance(v, float) else str(v)
        return out

    def group_params(self) -> dict[str, str]:
        """The parameters that choose the samples (no order, no page): what a group is made of."""
        return {k: v for k, v in self.params().items() if k not in ("sort", "page", "per_page")}

    @property
    def uses_status(self) -> bool:
        return self.status is not None


@dataclass(frozen=True)
class SampleRow:
    """One training sample as the all-samples page shows it."""

    sample_id: str
    label: int
    source: str
    status: str
    new_label: int | None
    suspicion: float
    score: float
    rank: int | None
    flagged_by: tuple[str, ...]


@dataclass
class SamplePage:
    rows: list[SampleRow]
    total: int
    query: SampleQuery
    sources: list[str]
    counts: dict[str, int]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


class StatusOverlay:
    """Each training sample's quarantine status as int8 codes (:data:`CODES`), in the verdict's
    order, re-read from the catalog when the audit head moved since the last read."""

    def __init__(self, ws: Workspace, data: RunData):
        self.ws, self.data = ws, data
        self.head: int | None = -1
        self.codes = np.zeros(len(data.sample_ids), dtype=np.int8)
        self.new_labels: dict[int, int] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def current(self) -> StatusOverlay:
        with self.ws.catalog.session() as s:
            head = s.scalar(select(func.max(AuditRecord.id)))
            if head == self.head:
                return self
            rows = s.execute(
                select(QuarantineEntry.sample_id, QuarantineEntry.status, QuarantineEntry.new_label).where(
                    QuarantineEntry.run_id == self.data.run_id
                )
            ).all()
        codes = np.zeros(len(self.data.sample_ids), dtype=np.int8)
        new_labels: dict[int, int] = {}
        row_of = self.data.row_of
        for sid, status, new_label in rows:
            i = row_of.get(sid)
            if i is None:
                continue
            codes[i] = CODES.get(status, 0)
            if new_label is not None:
                new_labels[i] = int(new_label)
        counts = dict(zip(NAMES.tolist(), np.bincount(codes, minlength=len(NAMES)).tolist(), strict=True))
        with self._lock:
            self.codes, self.new_labels, self.counts, self.head = codes, new_labels, counts, head
        return self


class RunIndex:
    """A run's training samples as arrays, with sort orders computed once per (column, direction)."""

    def __init__(self, ws: Workspace, data: RunData):
        self.data = data
        self.statuses = StatusOverlay(ws, data)
        self.source_codes, self.source_names = _sources(ws, data)
        self._orders: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def check(self, q: SampleQuery) -> SampleQuery:
        """``q`` itself once its class, source and detector are the run's (else ValueError)."""
        if q.label is not None and q.label not in self.data.class_sizes:
            classes = ", ".join(map(str, sorted(self.data.class_sizes)))
            raise ValueError(f"label {q.label} is not a class of this run ({classes})")
        if q.source is not None and q.source not in self.source_names:
            raise ValueError(f"unknown source {q.source!r}; this run's are {', '.join(self.source_names)}")
        if q.detector != SUSPICION and q.detector not in self.data.detectors:
            raise ValueError(
                f"unknown detector {q.detector!r}; this run ran {', '.join(self.data.detectors)} (or use suspicion)"
            )
        return q

    def column(self, detector: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, ranks or None) of ``detector``, one per training sample."""
        if detector == SUSPICION:
            return self.data.suspicion, None
        d = self.data.detectors[detector]
        return d.scores, d.ranks

    def order(self, detector: str, sort: str) -> np.ndarray:
        """Rows in ``sort`` order of ``detector``'s column, ties by row; NaN scores last."""
        key = (detector, sort)
        with self._lock:
            found = self._orders.get(key)
        if found is not None:
            return found
        scores, ranks = self.column(detector)
        values = np.asarray(scores if sort.startswith("score") else ranks, dtype=np.float64)
        descending = sort.endswith("desc")
        order = np.argsort(-values if descending else values, kind="stable").astype(np.int64)
        with self._lock:
            return self._orders.setdefault(key, order)

    def mask(self, q: SampleQuery, codes: np.ndarray) -> np.ndarray | None:
        """Which rows ``q``'s filters keep, or None when it has none."""
        d = self.data
        conds: list[np.ndarray] = []
        if q.label is not None:
            conds.append(d.labels == q.label)
        if q.source is not None:
            conds.append(self.source_codes == self.source_names.index(q.source))
        if q.status == QUARANTINED:
            conds.append(codes > 0)
        elif q.status is not None:
            conds.append(codes == CODES[q.status])
        if q.verdict is not None:
            conds.append(d.quarantined if q.verdict == "quarantine" else ~d.quarantined)
        scores, ranks = self.column(q.detector)
        if q.min_score is not None:
            conds.append(scores >= q.min_score)
        if q.max_score is not None:
            conds.append(scores <= q.max_score)
        if q.max_rank is not None and ranks is not None:
            conds.append(ranks <= q.max_rank)
        if q.flagged is not None:
            flags = d.detectors[q.detector].flags
            conds.append(flags if q.flagged == "yes" else ~flags)
        if q.x0 is not None and q.x1 is not None and q.y0 is not None and q.y1 is not None:
            xy = d.projection()
            lo_x, hi_x = sorted((q.x0, q.x1))
            lo_y, hi_y = sorted((q.y0, q.y1))
            conds.append((xy[:, 0] >= lo_x) & (xy[:, 0] <= hi_x) & (xy[:, 1] >= lo_y) & (xy[:, 1] <= hi_y))
        if not conds:
            return None
        out = conds[0].copy()
        for c in conds[1:]:
            out &= c
        return out

    def rows_of(self, q: SampleQuery) -> np.ndarray:
        """Every row ``q`` selects, in its order (no paging)."""
        overlay = self.statuses.current()
        order = self.order(q.detector, q.sort)
        mask = self.mask(q, overlay.codes)
        return order if mask is None else order[mask[order]]

    def page(self, q: SampleQuery) -> SamplePage:
        """One page of the samples ``q`` selects, with the run's status counts."""
        self.check(q)
        overlay = self.statuses.current()
        order = self.order(q.detector, q.sort)
        mask = self.mask(q, overlay.codes)
        start = (q.page - 1) * q.per_page
        if mask is None:
            total, chosen = len(order), order[start : start + q.per_page]
        else:
            selected = order[mask[order]]
            total, chosen = len(selected), selected[start : start + q.per_page]
        if q.page > 1 and start >= total:
            pages = max(1, -(-total // q.per_page))
            raise NotFoundError(f"page {q.page} is past the last page ({pages}) of this selection")
        return SamplePage(
            [self.row(int(i), q.detector, overlay) for i in chosen], total, q, self.source_names, overlay.counts
        )

    def row(self, i: int, detector: str, overlay: StatusOverlay | None = None) -> SampleRow:
        d = self.data
        overlay = overlay or self.statuses.current()
        scores, ranks = self.column(detector)
        return SampleRow(
            d.sample_ids[i],
            int(d.labels[i]),
            self.source_names[int(self.source_codes[i])],
            str(NAMES[int(overlay.codes[i])]),
            overlay.new_labels.get(i),
            float(d.suspicion[i]),
            float(scores[i]),
            None if ranks is None else int(ranks[i]),
            tuple(name for name, det in d.detectors.items() if det.flags[i]),
        )


def _sources(ws: Workspace, data: RunData) -> tuple[np.ndarray, list[str]]:
    """Each training sample's source as a code into the sorted list of the run's sources."""
    if data.version_id is None:
        raise NotFoundError(f"run {data.run_id} has no dataset version to read its samples' sources from")
    table = ws.store.read_column_table(
        ws.store.manifest(data.dataset, data.version_id), ["sample_id", "source"], split="train"
    )
    encoded = pc.dictionary_encode(table.column("source")).combine_chunks()
    names = [str(s) for s in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    ids = table.column("sample_id").to_pylist()
    if ids != data.sample_ids:
        at = {sid: i for i, sid in enumerate(ids)}
        missing = next((s for s in data.sample_ids if s not in at), None)
        if missing is not None:
            raise NotFoundError(f"run {data.run_id}: sample {missing} of its verdict is not in its version")
        codes = codes[[at[s] for s in data.sample_ids]]
    # Sorted names, so a filter's list reads alphabetically and codes do not depend on file order.
    rank = np.argsort(np.argsort(names))
    return rank[codes].astype(np.int32), sorted(names)


def run_index(ws: Workspace, data: RunData) -> RunIndex:
    """The run's index, built once and kept with its :class:`RunData`."""
    return data.memo("index", lambda: RunIndex(ws, data))
