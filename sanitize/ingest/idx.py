"""IDX files (MNIST style): images and labels side by side, gzipped or not, train and ``t10k`` test."""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sanitize.errors import InputError
from sanitize.ingest.batch import RawBatch, read_exact

IDX_FILE = re.compile(r"[-.]idx\d-ubyte(\.gz)?$", re.IGNORECASE)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


# --- IDX -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IdxPart:
    split: str
    images: Path
    labels: Path
    count: int
    height: int
    width: int


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(2) == _GZIP_MAGIC


def _open_idx(path: Path) -> io.BufferedIOBase:
    """Open an IDX file, decompressing when its first bytes are the gzip magic (whatever its name)."""
    return gzip.open(path, "rb") if _is_gzip(path) else path.open("rb")


def _read_idx_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    kind = "uint8 3-D images" if magic == _IDX_IMAGES_MAGIC else "uint8 labels"
    size = 4 + 4 * ndim
    with _open_idx(path) as stream:
        head = read_exact(stream, size, path)
    if len(head) < size:
        raise InputError(f"{path}: truncated IDX header ({len(head)} of {size} bytes)")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise InputError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x} ({kind})")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if not _is_gzip(path):
        # Plain files can be checked for truncation now; gzip ones only while streaming.
        expected = size + math.prod(dims)
        actual = path.stat().st_size
        if actual < expected:
            raise InputError(f"{path}: truncated IDX data: header {dims} needs {expected} bytes, file has {actual}")
        if actual > expected:
            raise InputError(f"{path}: {actual - expected} bytes after the IDX data that header {dims} describes")
    return dims


def _find_idx(directory: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    """The ``{prefix}-{kind}-idx{ndim}-ubyte`` file in ``directory``, plain before ``.gz``, ``-idx`` or ``.idx``."""
    for separator in ("-", "."):
        for ending in ("", ".gz"):
            candidate = directory / f"{prefix}-{kind}{separator}idx{ndim}-ubyte{ending}"
            if candidate.is_file():
                return candidate
    return None


def _idx_labels_beside(images: Path) -> Path:
    name = images.name
    if "images" not in name or "idx3" not in name:
        raise InputError(
            f"{images}: not an IDX images file name (expected *-images-idx3-ubyte[.gz]); pass the images file, "
            "its labels file is found beside it"
        )
    stem = name.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    for candidate in (images.with_name(stem), images.with_name(stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise InputError(f"{images}: no labels file beside it (expected {stem}[.gz] in {images.parent})")


def _idx_part(split: str, images: Path, labels: Path) -> _IdxPart:
    count, height, width = _read_idx_header(images, _IDX_IMAGES_MAGIC, 3)
    (label_count,) = _read_idx_header(labels, _IDX_LABELS_MAGIC, 1)
    if count != label_count:
        raise InputError(f"{images}: {count} images but {labels.name} has {label_count} labels; the lengths must match")
    if count and (height == 0 or width == 0):
        raise InputError(f"{images}: images of size {height}x{width}; expected non-empty images")
    return _IdxPart(split, images, labels, count, height, width)


def read_idx(path: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    parts: list[_IdxPart] = []
    if path.is_dir():
        for prefix, split_name in (("train", "train"), ("t10k", "test")):
            images = _find_idx(path, prefix, "images", 3)
            labels = _find_idx(path, prefix, "labels", 1)
            if images is None and labels is None:
                continue
            if images is None or labels is None:
                present = images or labels
                missing = f"{prefix}-labels-idx1-ubyte[.gz]" if labels is None else f"{prefix}-images-idx3-ubyte[.gz]"
                raise InputError(f"{present}: {missing} is missing from {path}")
            parts.append(_idx_part(split_name, images, labels))
        if not parts:
            found = sorted(entry.name for entry in path.iterdir() if IDX_FILE.search(entry.name))
            raise InputError(
                f"{path}: no train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz]; IDX files found: {found}"
            )
    else:
        split_name = "test" if path.name.startswith("t10k") else split
        parts.append(_idx_part(split_name, path, _idx_labels_beside(path)))
    if sum(part.count for part in parts) == 0:
        raise InputError(f"{path}: no samples found (empty dataset)")
    return _stream_idx(parts, batch_size)


def _stream_idx(parts: list[_IdxPart], batch_size: int) -> Iterator[RawBatch]:
    for part in parts:
        pixels = part.height * part.width
        with _open_idx(part.images) as images, _open_idx(part.labels) as labels:
            read_exact(images, 16, part.images)
            read_exact(labels, 8, part.labels)
            for start in range(0, part.count, batch_size):
                size = min(batch_size, part.count - start)
                raw = read_exact(images, size * pixels, part.images)
                if len(raw) < size * pixels:
                    raise InputError(
                        f"{part.images}: truncated IDX data: header says {part.count} images, "
                        f"data ends inside image {start + len(raw) // pixels}"
                    )
                raw_labels = read_exact(labels, size, part.labels)
                if len(raw_labels) < size:
                    raise InputError(
                        f"{part.labels}: truncated IDX data: header says {part.count} labels, "
                        f"data ends at label {start + len(raw_labels)}"
                    )
                block = np.frombuffer(raw, dtype=np.uint8).reshape(size, part.height, part.width, 1)
                yield RawBatch(
                    images=list(block),
                    labels=np.frombuffer(raw_labels, dtype=np.uint8).astype(np.int64),
                    splits=[part.split] * size,
                    locators=[f"{part.split}:{i}" for i in range(start, start + size)],
                )
            for stream, file in ((images, part.images), (labels, part.labels)):
                if read_exact(stream, 1, file):
                    raise InputError(f"{file}: data continues after the {part.count} samples its IDX header declares")
