"""Reading a clean dataset version from a training job: ``CleanDataset(version)``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sqlalchemy import select
from torch.utils.data import Dataset

from sanitize.catalog import Version
from sanitize.config import Settings
from sanitize.errors import NotFoundError
from sanitize.store import Manifest, decode_pixels
from sanitize.workspace import Workspace


def resolve_version(ws: Workspace, name_or_version: str, version: str | None) -> str:
    """The version id that ``CleanDataset(name_or_version, version)`` names."""
    if version is None:
        return name_or_version
    with ws.catalog.session() as s:
        ws.catalog.dataset(s, name_or_version)
        query = select(Version).where(
            Version.dataset == name_or_version, Version.kind == "clean", Version.status != "failed"
        )
        if version == "approved":
            query = query.where(Version.status == "approved")
        elif version != "latest":
            v = s.get(Version, version)
            if v is None or v.dataset != name_or_version:
                raise NotFoundError(f"dataset {name_or_version!r} has no version {version!r}")
            return v.id
        found = s.scalars(query.order_by(Version.created_at.desc()).limit(1)).first()
        if found is None:
            what = "approved clean version (review its quarantine first)" if version == "approved" else "clean version"
            raise NotFoundError(f"dataset {name_or_version!r} has no {what}")
        return found.id


class CleanDataset(Dataset[tuple[torch.Tensor, int]]):
    """A clean (or any) dataset version as a map-style :class:`torch.utils.data.Dataset`.

    Items are ``(image, label)``: ``image`` a (C, H, W) float32 tensor in [0, 1] (or whatever
    ``transform`` makes of the (H, W, C) uint8 array), ``label`` an int. As torchvision's
    ``ImageFolder``, ``classes[label]`` is the label's class name (the dataset's label map, or
    ``"0"``, ``"1"``, ... for a dataset without names) and ``class_to_idx`` the other way round.

    ``CleanDataset("c0ca3016d9ebcfed")`` reads a version by id; ``CleanDataset("pets",
    version="approved")`` the dataset's latest approved clean version, ``version="latest"`` its
    latest clean version (approved or provisional), or ``version=ID`` a version of that dataset.

    Parameters
    ----------
    name_or_version : str
        A version id, or (with ``version``) a dataset name.
    version : str, optional
        ``approved``, ``latest`` or a version id of the dataset ``name_or_version``.
    split : {"train", "test"}
    transform : callable, optional
        Applied to the (H, W, C) uint8 array instead of the default conversion.
    in_memory : bool or None
        Load the split's pixels once (None: when under 1 GiB); otherwise rows are read by Parquet row
        group through a small cache, so a version larger than memory can still be indexed.
    settings : Settings, optional
        Where the catalog and data live (default: ``SANITIZE_HOME``).

    Raises
    ------
    sanitize.store.ChecksumError
        When a file of the version is not the bytes its manifest recorded at publication (one
        pixel changed is enough); the message names the file and the version. A version published
        before checksums were recorded cannot be checked and is read as it is.
    """

    def __init__(
        self,
        name_or_version: str,
        version: str | None = None,
        *,
        split: str = "train",
        transform: Callable[[np.ndarray], Any] | None = None,
        in_memory: bool | None = None,
        settings: Settings | None = None,
        cache_groups: int = 8,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        ws = Workspace(settings)
        version = resolve_version(ws, name_or_version, version)
        with ws.catalog.session() as s:
            v = s.get(Version, version)
            if v is None:
                raise NotFoundError(f"unknown dataset version {version!r}")
            if v.status == "failed":
                raise NotFoundError(
                    f"version {version} was exported by run {v.run_id}, which failed; it is no clean version"
                )
            dataset = v.dataset
        self.manifest: Manifest = ws.store.manifest(dataset, version)
        # A training job must not read bytes other than those published (a changed pixel included).
        ws.store.check_files(self.manifest)
        self.version = version
        self.dataset = dataset
        self.split = split
        self.classes: list[str] = list(ws.store.class_names(self.manifest))
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        self._files = [Path(f) for f in ws.store.files(self.manifest)]
        meta = [pq.read_table(f, columns=["sample_id", "split", "label"]) for f in self._files]
        self._rows: list[tuple[int, int]] = []  # (file index, row in file)
        labels: list[int] = []
        ids: list[str] = []
        for fi, t in enumerate(meta):
            mask = np.array(t.column("split").to_pylist()) == split
            rows = np.flatnonzero(mask)
            self._rows.extend((fi, int(r)) for r in rows)
            labels.extend(np.asarray(t.column("label").to_numpy())[rows].tolist())
            ids.extend(np.array(t.column("sample_id").to_pylist(), dtype=object)[rows].tolist())
        self.labels = np.asarray(labels, dtype=np.int64)
        self.sample_ids: list[str] = ids
        size = len(self._rows) * self.manifest.height * self.manifest.width * self.manifest.channels
        self._in_memory = size < 2**30 if in_memory is None else in_memory
        self._pixels: np.ndarray | None = None
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_groups = cache_groups
        # Start row of every row group per file, to find a row's group by bisection.
        self._group_starts = []
        for f in self._files:
            md = pq.ParquetFile(f).metadata
            self._group_starts.append(np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)]))
        if self._in_memory:
            parts = []
            for f in self._files:
                t = pq.read_table(f, columns=["split", "height", "width", "channels", "pixels"])
                t = t.filter(pa.compute.equal(t.column("split"), split))
                if t.num_rows:
                    parts.append(decode_pixels(t))
            shape = (0, self.manifest.height, self.manifest.width, self.manifest.channels)
            self._pixels = np.concatenate(parts) if parts else np.zeros(shape, np.uint8)

    def __len__(self) -> int:
        return len(self._rows)

    def image(self, index: int) -> np.ndarray:
        """The (H, W, C) uint8 pixels of item ``index``."""
        if self._pixels is not None:
            return self._pixels[index]
        fi, row = self._rows[index]
        starts = self._group_starts[fi]
        g = int(np.searchsorted(starts, row, side="right")) - 1
        key = (fi, g)
        if key not in self._cache:
            t = pq.ParquetFile(self._files[fi]).read_row_group(g, columns=["height", "width", "channels", "pixels"])
            self._cache[key] = decode_pixels(t)
            if len(self._cache) > self._cache_groups:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key][row - int(starts[g])]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        img = self.image(index)
        x = self.transform(img) if self.transform else torch.from_numpy(img.transpose(2, 0, 1).copy()).float() / 255
        return x, int(self.labels[index])

    def __repr__(self) -> str:
        return f"CleanDataset(version={self.version!r}, dataset={self.dataset!r}, split={self.split!r}, n={len(self)})"
