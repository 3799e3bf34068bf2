"""A NumPy ``.npz``: ``x``/``y`` arrays, or ``x_train``/``y_train`` with ``x_test``/``y_test``, read in
blocks without loading the arrays whole; an optional ``class_names`` array names the labels."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sanitize.errors import InputError
from sanitize.ingest.batch import (
    MAX_LABEL,
    SPLITS,
    RawBatch,
    check_class_name,
    is_index_name,
    labels_from_values,
    read_exact,
)

# --- npz -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpzPart:
    split: str
    key: str
    count: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    labels: np.ndarray


def _npy_header(stream: Any, path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of an ``.npy`` stream, leaving it at the first data byte."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)
    except ValueError as exc:
        raise InputError(f"{path}: array {key!r} has an unreadable .npy header ({exc})") from exc
    raise InputError(f"{path}: array {key!r} uses .npy format version {version}; expected 1.0 or 2.0")


def _npz_layout(keys: list[str], path: Path, split: str) -> list[tuple[str, str, str]]:
    """``[(split, x_key, y_key)]`` from the archive's array names."""
    found = sorted(keys)
    if "x" in keys and "x_train" in keys:
        raise InputError(f"{path}: both 'x' and 'x_train' present, which one to read is ambiguous; arrays: {found}")
    if "x" in keys or "y" in keys:
        if "x" not in keys or "y" not in keys:
            raise InputError(f"{path}: needs both 'x' and 'y'; arrays found: {found}")
        return [(split, "x", "y")]
    layout = []
    for name in SPLITS:
        x_key, y_key = f"x_{name}", f"y_{name}"
        if (x_key in keys) != (y_key in keys):
            raise InputError(f"{path}: needs both {x_key!r} and {y_key!r}; arrays found: {found}")
        if x_key in keys:
            layout.append((name, x_key, y_key))
    if not layout or layout[0][0] != "train":
        raise InputError(f"{path}: expected arrays 'x' and 'y', or 'x_train' and 'y_train'; arrays found: {found}")
    return layout


def _npz_part(npz: Any, path: Path, split: str, x_key: str, y_key: str) -> _NpzPart:
    with npz.zip.open(f"{x_key}.npy") as stream:
        shape, fortran_order, dtype = _npy_header(stream, path, x_key)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise InputError(f"{path}: {x_key!r} has shape {shape}; expected (N, H, W) or (N, H, W, C) with C = 1 or 3")
    if dtype.kind not in "biuf":
        raise InputError(f"{path}: {x_key!r} has dtype {dtype}; expected uint8 pixels")
    try:
        y = np.asarray(npz[y_key])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read {y_key!r} ({exc})") from exc
    if y.ndim == 2 and y.shape[1] == 1:  # Keras ships some labels as (N, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{path}: {y_key!r} has shape {y.shape}; expected (N,) labels")
    if len(y) != shape[0]:
        raise InputError(
            f"{path}: {x_key!r} has {shape[0]} samples but {y_key!r} has {len(y)} labels; the lengths must match"
        )
    labels = labels_from_values(y, lambda i: f"{split}:{i}", path)
    return _NpzPart(split, x_key, shape[0], tuple(shape[1:]), dtype, fortran_order, labels)


def _open_npz(path: Path) -> Any:
    try:
        loaded = np.load(path, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds a single array, not an .npz archive with 'x' and 'y'")
    return loaded


CLASS_NAMES_KEY = "class_names"
"""The optional ``.npz`` array naming each label: ``class_names[y]`` is the class of a sample labelled y."""


def read_npz(path: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    with _open_npz(path) as npz:
        layout = _npz_layout(list(npz.files), path, split)
        parts = [_npz_part(npz, path, *entry) for entry in layout]
        names = _class_names(npz, path) if CLASS_NAMES_KEY in npz.files else None
    if sum(part.count for part in parts) == 0:
        raise InputError(f"{path}: no samples found (empty dataset)")
    if names is not None:
        for part in parts:
            if part.count and int(part.labels.max()) >= len(names):
                i = int(np.argmax(part.labels >= len(names)))
                raise InputError(
                    f"{path}: {part.split}:{i}: label {int(part.labels[i])} has no name; "
                    f"{CLASS_NAMES_KEY!r} names {len(names)} classes (labels 0 to {len(names) - 1})"
                )
        if all(is_index_name(name) for name in names):
            # Names that are indices ("0", "1", ... as an export of an unnamed dataset writes) are labels.
            as_index = np.array([int(name) for name in names], dtype=np.int64)
            if (as_index < 0).any() or (as_index > MAX_LABEL).any():
                raise InputError(f"{path}: {CLASS_NAMES_KEY!r} holds {names!r}, not class indices 0 to {MAX_LABEL}")
            parts = [replace(part, labels=as_index[part.labels]) for part in parts]
            names = None
    return _stream_npz(path, parts, batch_size, names)


def _class_names(npz: Any, path: Path) -> tuple[str, ...]:
    """The archive's ``class_names``: distinct, well-formed names, one per label."""
    try:
        values = np.asarray(npz[CLASS_NAMES_KEY])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # an object array needs pickle, which is refused
        raise InputError(f"{path}: cannot read {CLASS_NAMES_KEY!r} ({exc}); store it as an array of strings") from exc
    if values.ndim != 1 or values.dtype.kind not in "US":
        raise InputError(
            f"{path}: {CLASS_NAMES_KEY!r} has dtype {values.dtype} and shape {values.shape}; expected (K,) strings"
        )
    names = tuple(
        check_class_name(
            (v.decode(errors="replace") if isinstance(v, bytes) else str(v)).strip(), f"{path}: {CLASS_NAMES_KEY}[{i}]"
        )
        for i, v in enumerate(values.tolist())
    )
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"{path}: {CLASS_NAMES_KEY}[{seen[name]}] and [{i}] are both {name!r}; names must differ")
        seen[name] = i
    return names


def _stream_npz(
    path: Path, parts: list[_NpzPart], batch_size: int, names: tuple[str, ...] | None = None
) -> Iterator[RawBatch]:
    # np.load's NpzFile loads a whole array on access; the member is streamed instead so that only one
    # batch of pixels is in memory. Fortran-ordered arrays cannot be read by rows and are loaded whole.
    with _open_npz(path) as npz:
        for part in parts:
            if part.fortran_order:
                whole = np.asarray(npz[part.key])
                for start in range(0, part.count, batch_size):
                    yield _npz_chunk(path, part, start, whole[start : start + batch_size], names)
                continue
            row_bytes = math.prod(part.sample_shape) * part.dtype.itemsize
            with npz.zip.open(f"{part.key}.npy") as stream:
                _npy_header(stream, path, part.key)
                for start in range(0, part.count, batch_size):
                    size = min(batch_size, part.count - start)
                    raw = read_exact(stream, size * row_bytes, path)
                    if len(raw) < size * row_bytes:
                        raise InputError(
                            f"{path}: array {part.key!r} is truncated inside sample {start + len(raw) // row_bytes}"
                        )
                    block = np.frombuffer(raw, dtype=part.dtype).reshape(size, *part.sample_shape)
                    yield _npz_chunk(path, part, start, block, names)


def _npz_chunk(path: Path, part: _NpzPart, start: int, block: np.ndarray, names: tuple[str, ...] | None) -> RawBatch:
    if block.dtype != np.uint8:
        block = _pixels_to_uint8(block, path, part.key, start)
    if block.ndim == 3:
        block = block[..., None]
    block = block.view()  # a read-only view; the array it views stays as it was
    block.flags.writeable = False
    size = len(block)
    return RawBatch(
        images=list(block),
        labels=part.labels[start : start + size],
        splits=[part.split] * size,
        locators=[f"{part.split}:{i}" for i in range(start, start + size)],
        class_names=names,
    )


def _pixels_to_uint8(block: np.ndarray, path: Path, key: str, start: int) -> np.ndarray:
    """Cast integer-valued pixels in 0..255 to uint8; anything else names the first bad sample."""
    with np.errstate(invalid="ignore"):
        bad = (block < 0) | (block > 255)
        if block.dtype.kind == "f":
            bad |= ~np.isfinite(block) | (block != np.floor(block))
    if bad.any():
        position = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise InputError(
            f"{path}: {key}[{start + int(position[0])}] has pixel value {block[position].item()!r} ({block.dtype}); "
            "x must be uint8, or integer-valued within 0..255"
        )
    return block.astype(np.uint8)
