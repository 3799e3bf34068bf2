"""A dataset's label map: which class name each label means, one recorded map for all its sources.

A source that names its classes (class folders, string labels in a table, an ``.npz``
``class_names`` array) has its names mapped to the dataset's labels here:

- The first named source of a dataset numbers its names as it gives them (sorted, for folders and
  tables) and records them as version 1 of the dataset's label map (the catalog's ``label_maps``).
- A later source's names are looked up by name, so a supplier that has only some of the classes, or
  its folders in another order, keeps every label's meaning. A name the map does not have yet is
  appended (a new label, a new map version): indices never change meaning, they are only added.
- Refused, naming the names: a source that shares no name with the dataset's map (it most likely
  names the classes differently: ``n02084071`` beside ``dog``), unless the ingest allows new classes;
  a name that differs from a known one only in case or spacing (``Cat`` beside ``cat``); a source
  with class indices (IDX, unnamed arrays, integer labels) in a dataset whose labels have names,
  and the other way round, since what its indices mean is unknown.
- A dataset ingested before names were recorded has no map. When its other sources are image
  folders, their names are read back from where each sample sat (its locator's class folder) as
  that release numbered them, so a named source joining it keeps their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from sanitize.catalog import Catalog, Ingest, LabelMap
from sanitize.errors import InputError
from sanitize.ingest.batch import RawBatch, is_index_name
from sanitize.store import Store


def preview(names: tuple[str, ...] | list[str], limit: int = 8) -> str:
    """``0=cat, 1=dog, ...`` for a message, at most ``limit`` names and how many in all."""
    shown = ", ".join(f"{i}={name}" for i, name in enumerate(names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


@dataclass
class LabelPlan:
    """How one ingest turns its source's labels into the dataset's, and what it adds to the map."""

    catalog: Catalog
    store: Store
    dataset: str
    source: str
    uri: str
    allow_new: bool
    known: tuple[str, ...] | None
    """The recorded map when the ingest started (None: the dataset has none)."""
    version: int
    """Its version; 0 when none is recorded."""
    others: dict[str, Ingest]
    """The other sources' current ingests, for a dataset ingested before names were recorded."""
    names: tuple[str, ...] | None = None
    """The map after this source: ``known`` plus ``added`` (None: the labels are class indices)."""
    added: list[str] = field(default_factory=list)
    _remap: np.ndarray | None = None
    _named: bool | None = None

    @classmethod
    def load(
        cls, catalog: Catalog, store: Store, dataset: str, source: str, uri: str, *, allow_new: bool = False
    ) -> LabelPlan:
        with catalog.session() as session:
            current = catalog.label_map(session, dataset)
            rows = session.scalars(select(Ingest).where(Ingest.dataset == dataset).order_by(Ingest.created_at))
            others = {row.source: row for row in rows}
        others.pop(source, None)
        known = tuple(current.names) if current is not None else None
        version = current.version if current is not None else 0
        return cls(catalog, store, dataset, source, uri, allow_new, known, version, others, names=known)

    @property
    def changed(self) -> bool:
        """Whether this ingest makes a new version of the map."""
        return self.names is not None and self.names != self.known

    @property
    def map_version(self) -> int | None:
        """The version of the map the ingested version's labels are in; None without names."""
        if self.names is None:
            return None
        return self.version + 1 if self.changed else self.version

    def labels(self, batch: RawBatch) -> np.ndarray:
        """The dataset's labels of ``batch``'s samples: int64 of shape (B,)."""
        named = batch.class_names is not None
        if self._named is None:
            self._named = named
            if named:
                self._plan(batch.class_names or ())
        if not named and self.known is not None and len(batch.labels):
            # Class indices into a named dataset are its map's indices (a CSV beside image folders,
            # whose labels are the folders' sorted positions, as README says): only an index the map
            # does not have is refused.
            top = int(np.max(batch.labels))
            if top >= len(self.known):
                raise InputError(
                    f"{self.uri}: label {top} is not a class of dataset {self.dataset!r}, which names "
                    f"{len(self.known)} classes ({preview(self.known)}); its class indices run 0 to "
                    f"{len(self.known) - 1}, or give the source its names (class folders, string labels in "
                    "the table, or a class_names array in the .npz)"
                )
        if self._remap is None:
            return batch.labels
        return self._remap[batch.labels]

    def _plan(self, local: tuple[str, ...]) -> None:
        base = self.known if self.known is not None else self._legacy_names(local)
        index = {name: i for i, name in enumerate(base)}
        keys = {_key(name): name for name in base}
        if base and not self.allow_new and not any(name in index for name in local):
            raise InputError(
                f"{self.uri}: none of this source's class names ({', '.join(local[:8])}"
                f"{', ...' if len(local) > 8 else ''}) is a class of dataset {self.dataset!r} ({preview(base)}); "
                "if they are the same classes, name them the same; if they are new classes, ingest with "
                "--new-classes (new_classes=True)"
            )
        remap: list[int] = []
        added: list[str] = []
        for name in local:
            if name not in index:
                if _key(name) in keys:
                    raise InputError(
                        f"{self.uri}: class {name!r} differs only in case or spacing from class "
                        f"{keys[_key(name)]!r} of dataset {self.dataset!r}; name it the same, or tell them apart"
                    )
                index[name] = len(base) + len(added)
                keys[_key(name)] = name
                added.append(name)
            remap.append(index[name])
        self.names = tuple(base) + tuple(added)
        self.added = added
        self._remap = np.asarray(remap, dtype=np.int64)

    def _legacy_names(self, local: tuple[str, ...]) -> tuple[str, ...]:
        """The names of a dataset ingested before maps were recorded (empty when it has no other source)."""
        if not self.others:
            return ()
        # The image folders' names; sources of class indices beside them (a table) use their indices.
        folders = {k: v for k, v in self.others.items() if v.format == "imagefolder"}
        if folders:
            by_label: dict[int, str] = {}
            for source, ingest in sorted(folders.items()):
                table = pq.read_table(self.store.home / ingest.file, columns=["label", "locator"])
                for label, locator in zip(
                    table.column("label").to_pylist(), table.column("locator").to_pylist(), strict=True
                ):
                    folder = locator.split("/", 1)[0]
                    if by_label.setdefault(label, folder) != folder:
                        raise InputError(
                            f"{self.uri}: dataset {self.dataset!r} was ingested before class names were "
                            f"recorded, and its source {source!r} gives label {label} to folders "
                            f"{by_label[label]!r} and {folder!r}; ingest this source into a new dataset"
                        )
            if by_label and not all(is_index_name(name) for name in by_label.values()):
                return tuple(by_label.get(i, str(i)) for i in range(max(by_label) + 1))
        kinds = ", ".join(f"{name}: {ingest.format}" for name, ingest in sorted(self.others.items()))
        raise InputError(
            f"{self.uri}: this source names its classes ({preview(local)}) but dataset {self.dataset!r} has "
            f"class indices without names (sources {kinds}), so which index each name is cannot be told; "
            "ingest it into a new dataset, or give its labels as class indices"
        )

    def check_unchanged(self, session: Session) -> None:
        """Refuse when another ingest changed the map since this one read it (its new labels could clash)."""
        current = self.catalog.label_map(session, self.dataset)
        if (current.version if current is not None else 0) != self.version:
            raise InputError(
                f"{self.uri}: the label map of dataset {self.dataset!r} changed while this source was read "
                "(another ingest added classes); ingest it again"
            )

    def record(self, session: Session, ingest_id: str, actor: str) -> None:
        """Add the map's new version, in the ingest's transaction, when this source changed it."""
        if not self.changed or self.names is None:
            return
        version = self.version + 1
        session.add(
            LabelMap(
                dataset=self.dataset, version=version, names=list(self.names), source=self.source, ingest_id=ingest_id
            )
        )
        self.catalog.audit(
            session,
            actor,
            "labels.map",
            self.dataset,
            version=version,
            added={str(self.names.index(name)): name for name in self.added},
            source=self.source,
            ingest_id=ingest_id,
        )
