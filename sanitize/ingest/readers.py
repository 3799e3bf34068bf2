"""Read a supplier's dataset in batches: IDX (MNIST style), an image folder, a NumPy ``.npz`` or a table.

:func:`read_source` yields :class:`RawBatch` objects of at most ``batch_size`` samples, so a source of
any size is read with bounded memory. Every format gives the same sample representation: an
(H, W, C) uint8 image with C in {1, 3}, a non-negative int64 label, a split (``"train"`` or ``"test"``)
and a locator that says where the sample sits inside the source.

Checks are made as early as the format allows: a missing path, an unknown format, missing columns or
keys, bad IDX headers and mismatched lengths raise :class:`~sanitize.errors.InputError` when
:func:`read_source` is called; problems that need the pixels or labels themselves (a corrupt image, a
label ``"cat"``, a second image shape) raise while iterating, at the batch holding the bad sample.
A caller that must be all-or-nothing should therefore stage the batches before committing them.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from PIL import Image

from sanitize.errors import InputError

logger = logging.getLogger(__name__)

FORMATS = ("idx", "imagefolder", "npz", "table")
"""Source formats :func:`read_source` understands."""

SPLITS = ("train", "test")
"""Split names a sample can carry."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File name endings (compared case-insensitively) that an image folder reads."""

IMAGE_COLUMNS = ("image", "img", "path", "file", "filename")
"""Default image column names of a table, first present wins."""

LABEL_COLUMNS = ("label", "labels", "target", "class", "y")
"""Default label column names of a table, first present wins."""

SPLIT_COLUMN = "split"
"""Optional table column holding ``train``/``test`` per row."""

# Only these decoders may run on supplier files: Pillow otherwise identifies files by content, and a
# ".png" that is really an EPS would be handed to Ghostscript.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG also opens MPO (camera) files

_IDX_FILE = re.compile(r"[-.]idx\d-ubyte(\.gz)?$", re.IGNORECASE)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class RawBatch:
    """Consecutive samples of a source, in the source's deterministic order.

    Attributes
    ----------
    images : list of numpy.ndarray
        One read-only array per sample, shape (H, W, C), dtype uint8, C = 1 for grey and 3 for colour.
        All images of one source share one shape.
    labels : numpy.ndarray
        Shape (B,), dtype int64, non-negative class labels.
    splits : list of str
        ``"train"`` or ``"test"`` per sample.
    locators : list of str
        Where each sample sits inside the source: ``"train:123"`` (split and index) for IDX and
        ``.npz`` arrays; the POSIX path relative to the split root (``"cat/img001.png"``) for image
        folders; ``"row:17"`` (0-based data row) for tables, or the image path as written in the
        table when the image column holds paths.
    """

    images: list[np.ndarray]
    labels: np.ndarray
    splits: list[str]
    locators: list[str]

    def __post_init__(self) -> None:
        size = len(self.images)
        if self.labels.shape != (size,) or self.labels.dtype != np.int64:
            raise ValueError(f"labels must be int64 of shape ({size},), got {self.labels.dtype} {self.labels.shape}")
        if len(self.splits) != size or len(self.locators) != size:
            raise ValueError(
                f"{size} images but {len(self.splits)} splits and {len(self.locators)} locators; lengths must match"
            )

    def __len__(self) -> int:
        return len(self.images)


def detect_format(path: Path) -> str:
    """Guess a source's format from its path.

    Parameters
    ----------
    path : Path
        A directory (``idx`` when it holds ``*-idx?-ubyte[.gz]`` files, else ``imagefolder``), an
        ``.npz`` file (``npz``), a ``.parquet``/``.pq``/``.csv`` file (``table``) or an IDX file (``idx``).

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    InputError
        The path does not exist or its name matches no format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        if any(_IDX_FILE.search(entry.name) and entry.is_file() for entry in path.iterdir()):
            return "idx"
        return "imagefolder"
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".parquet", ".pq", ".csv")):
        return "table"
    if _IDX_FILE.search(name):
        return "idx"
    raise InputError(
        f"{path}: cannot tell the format from the name; expected a directory, an .npz, .parquet or .csv file "
        f"or an IDX file (*-idx3-ubyte[.gz]), or pass format= one of {', '.join(FORMATS)}"
    )


def read_source(
    path: str | Path,
    *,
    format: str | None = None,
    batch_size: int = 4096,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str = "train",
) -> Iterator[RawBatch]:
    """Read a dataset in batches of at most ``batch_size`` samples.

    Parameters
    ----------
    path : str or Path
        The source: a directory (IDX files or an image folder), an IDX images file, an ``.npz``
        file or a Parquet/CSV table.
    format : str, optional
        One of :data:`FORMATS`; guessed by :func:`detect_format` when omitted.
    batch_size : int
        Samples per batch. Every batch but the last holds exactly ``batch_size`` samples; a batch may
        hold samples of both splits.
    image_column, label_column : str, optional
        Table columns holding the image (encoded bytes, a path relative to the table's directory, or
        a ``{"bytes", "path"}`` struct) and the integer label. Defaults: the first present of
        :data:`IMAGE_COLUMNS` and :data:`LABEL_COLUMNS` (exact name first, then ignoring case).
        Only valid for tables.
    split : {"train", "test"}
        Split of every sample when the source does not say: an image folder without ``train/`` and
        ``test/``, an ``.npz`` with ``x``/``y``, a single IDX file not named ``t10k-*``, a table without
        a ``split`` column.

    Returns
    -------
    Iterator[RawBatch]
        The samples in a deterministic order: train before test, then index, sorted path or row.

    Raises
    ------
    InputError
        At the call for problems visible without decoding samples (missing path, unknown format,
        missing columns or arrays, bad IDX header, x and y of different lengths, an empty source);
        while iterating for problems in a sample (corrupt image, non-integer or negative label,
        non-uint8 pixel value, an image shape or channel count different from the first sample's).
    ValueError
        ``batch_size`` < 1 or ``split`` not in :data:`SPLITS`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    fmt = detect_format(source) if format is None else format
    if fmt not in FORMATS:
        raise InputError(f"{source}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "imagefolder" and not source.is_dir():
        raise InputError(f"{source}: format 'imagefolder' needs a directory of class folders, this is a file")
    if fmt in ("npz", "table") and not source.is_file():
        raise InputError(f"{source}: format {fmt!r} needs a file, this is a directory")
    if fmt != "table" and (image_column is not None or label_column is not None):
        raise InputError(f"{source}: image_column and label_column apply only to tables, not to format {fmt!r}")
    if fmt == "idx":
        chunks = _read_idx(source, batch_size, split)
    elif fmt == "imagefolder":
        chunks = _read_imagefolder(source, batch_size, split)
    elif fmt == "npz":
        chunks = _read_npz(source, batch_size, split)
    else:
        chunks = _read_table(source, batch_size, split, image_column, label_column)
    return _rebatch(chunks, source, batch_size)


# --- batching and whole-source checks -------------------------------------------------------------


def _rebatch(chunks: Iterator[RawBatch], source: Path, batch_size: int) -> Iterator[RawBatch]:
    """Check one image shape across the source and regroup chunks into batches of ``batch_size``."""
    first_shape: tuple[int, ...] | None = None
    first_where = ""
    pending: list[RawBatch] = []
    pending_size = 0
    total = 0
    for chunk in chunks:
        for image, split, locator in zip(chunk.images, chunk.splits, chunk.locators, strict=True):
            if first_shape is None:
                first_shape, first_where = image.shape, _where(split, locator)
            elif image.shape != first_shape:
                raise _shape_error(source, _where(split, locator), image.shape, first_where, first_shape)
        total += len(chunk)
        pending.append(chunk)
        pending_size += len(chunk)
        while pending_size >= batch_size:
            merged = _concat(pending)
            yield _slice(merged, 0, batch_size)
            rest = _slice(merged, batch_size, len(merged))
            pending, pending_size = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending_size:
        yield _concat(pending)
    if total == 0:
        raise InputError(f"{source}: no samples found (empty dataset)")


def _where(split: str, locator: str) -> str:
    return locator if locator.startswith(f"{split}:") else f"{locator} ({split})"


def _shape_error(
    source: Path, where: str, shape: tuple[int, ...], first_where: str, first_shape: tuple[int, ...]
) -> InputError:
    if shape[:2] == first_shape[:2]:
        problem = f"mixed channel counts: {first_shape[2]} then {shape[2]}"
    else:
        problem = "images of different shapes"
    return InputError(
        f"{source}: sample {where} has shape {shape} but the first sample {first_where} has shape {first_shape} "
        f"({problem}); all images of a source must share one shape"
    )


def _concat(parts: Sequence[RawBatch]) -> RawBatch:
    if len(parts) == 1:
        return parts[0]
    return RawBatch(
        images=[image for part in parts for image in part.images],
        labels=np.concatenate([part.labels for part in parts]),
        splits=[split for part in parts for split in part.splits],
        locators=[locator for part in parts for locator in part.locators],
    )


def _slice(batch: RawBatch, start: int, stop: int) -> RawBatch:
    if start == 0 and stop == len(batch):
        return batch
    return RawBatch(
        images=batch.images[start:stop],
        labels=batch.labels[start:stop],
        splits=batch.splits[start:stop],
        locators=batch.locators[start:stop],
    )


def _read_exact(stream: Any, size: int, path: Path) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream; a corrupt compressed stream is an InputError."""
    parts: list[bytes] = []
    remaining = size
    try:
        while remaining > 0:
            data = stream.read(remaining)
            if not data:
                break
            parts.append(data)
            remaining -= len(data)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # gzip/zlib/zip report corruption so
        raise InputError(f"{path}: truncated or corrupt compressed data ({exc})") from exc
    return b"".join(parts)


# --- labels ----------------------------------------------------------------------------------------


def _label_error(source: Path, where: str, value: object, reason: str) -> InputError:
    return InputError(f"{source}: {where}: label {value!r} {reason}; labels must be non-negative integers")


def _parse_label(value: object) -> int:
    """One label as an int; raises ValueError with the reason it is not a non-negative integer."""
    number: int
    if value is None:
        raise ValueError("is missing")
    if isinstance(value, bool | np.bool_ | int | np.integer):
        number = int(value)
    elif isinstance(value, float | np.floating | Decimal):
        real = float(value)
        if not real.is_integer():
            raise ValueError("is not an integer")
        number = int(real)
    elif isinstance(value, str | bytes):
        text = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                real = float(text)
            except ValueError:
                raise ValueError("is not an integer") from None
            if not real.is_integer():
                raise ValueError("is not an integer") from None
            number = int(real)
    else:
        raise ValueError("is not an integer")
    if number < 0:
        raise ValueError("is negative")
    if number > _INT64_MAX:
        raise ValueError("does not fit in int64")
    return number


def _labels_from_values(values: np.ndarray, where: Callable[[int], str], source: Path) -> np.ndarray:
    """Validate labels and return them as int64 of shape (N,); ``where(i)`` names sample ``i`` in errors."""
    kind = values.dtype.kind
    if kind == "b":
        return values.astype(np.int64)
    if kind in "iuf":
        with np.errstate(invalid="ignore"):
            if kind == "f":
                not_integer = ~np.isfinite(values) | (values != np.floor(values))
                too_big = values >= 2.0**63
            else:
                not_integer = np.zeros(values.shape, dtype=bool)
                too_big = values > _INT64_MAX if kind == "u" else not_integer
            negative = values < 0
        bad = not_integer | negative | too_big
        if bad.any():
            i = int(np.argmax(bad))
            reason = (
                "is not an integer" if not_integer[i] else "is negative" if negative[i] else "does not fit in int64"
            )
            raise _label_error(source, where(i), values[i].item(), reason)
        return values.astype(np.int64)
    if kind in "OUS":
        out = np.empty(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            try:
                out[i] = _parse_label(value)
            except ValueError as exc:
                raise _label_error(source, where(i), value, str(exc)) from None
        return out
    raise InputError(f"{source}: labels have dtype {values.dtype}; labels must be non-negative integers")


# --- images ----------------------------------------------------------------------------------------


def _decode_image(data: Path | bytes, what: str) -> np.ndarray:
    """Decode one encoded image to a read-only (H, W, C) uint8 array, C in {1, 3}."""
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data), formats=_PIL_FORMATS) as image:
            image.load()
            pixels = _pixels_uint8(image, what)
    except InputError:
        raise
    except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError, struct.error, ...
        raise InputError(f"{what}: unreadable or corrupt image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    pixels.flags.writeable = False
    return pixels


def _pixels_uint8(image: Image.Image, what: str) -> np.ndarray:
    """Pixels as uint8: grey modes become (H, W), everything else (H, W, 3); alpha is dropped."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"))
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit grey (Pillow opens some 16-bit files as 32-bit "I"): scale 0..65535 to 0..255, rounding.
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        raise InputError(f"{what}: 32-bit float image has no known value range; convert it to 8-bit")
    # RGBA, RGBX, P, PA, CMYK, YCbCr, LAB, HSV: palette images become RGB even when the palette is grey,
    # so that the channel count depends on the file's mode and never on its pixel values.
    return np.asarray(image.convert("RGB"))


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
        head = _read_exact(stream, size, path)
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


def _read_idx(path: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
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
            found = sorted(entry.name for entry in path.iterdir() if _IDX_FILE.search(entry.name))
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
            _read_exact(images, 16, part.images)
            _read_exact(labels, 8, part.labels)
            for start in range(0, part.count, batch_size):
                size = min(batch_size, part.count - start)
                raw = _read_exact(images, size * pixels, part.images)
                if len(raw) < size * pixels:
                    raise InputError(
                        f"{part.images}: truncated IDX data: header says {part.count} images, "
                        f"data ends inside image {start + len(raw) // pixels}"
                    )
                raw_labels = _read_exact(labels, size, part.labels)
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
                if _read_exact(stream, 1, file):
                    raise InputError(f"{file}: data continues after the {part.count} samples its IDX header declares")


# --- image folder ----------------------------------------------------------------------------------


def _visible_dirs(directory: Path) -> list[Path]:
    return sorted(entry for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _split_roots(root: Path, split: str) -> list[tuple[str, Path]]:
    """``[(split, directory)]``: ``train/`` and ``test/`` holding class folders, else the root itself."""
    subdirs = _visible_dirs(root)
    names = {entry.name for entry in subdirs}
    if names and names <= set(SPLITS) and all(_visible_dirs(entry) for entry in subdirs):
        return [(name, root / name) for name in SPLITS if name in names]
    return [(split, root)]


def _class_labels(names: list[str], root: Path) -> dict[str, int]:
    """Label per class folder: ``int(name)`` when every name is an integer, else the sorted position."""
    if names and all(re.fullmatch(r"-?[0-9]+", name) for name in names):
        labels = {name: int(name) for name in names}
        negative = [name for name in names if labels[name] < 0]
        if negative:
            raise InputError(f"{root / negative[0]}: class folder gives negative label {labels[negative[0]]}")
        by_label: dict[int, str] = {}
        for name in names:
            if labels[name] in by_label:
                raise InputError(
                    f"{root}: class folders {by_label[labels[name]]!r} and {name!r} both mean label {labels[name]}"
                )
            by_label[labels[name]] = name
        return labels
    return {name: index for index, name in enumerate(sorted(names))}


def _image_files(directory: Path) -> list[Path]:
    """Image files under ``directory``, recursively, hidden entries skipped, sorted by path components.

    Directory symlinks are not followed, so a link loop cannot make the walk endless.
    """
    found: list[Path] = []
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not entry.is_symlink():
                found.extend(_image_files(entry))
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            found.append(entry)
    return found


def _read_imagefolder(root: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    split_roots = _split_roots(root, split)
    classes = {name: _visible_dirs(split_root) for name, split_root in split_roots}
    # One mapping over both splits, so a class missing from test keeps its train label.
    label_of = _class_labels(sorted({folder.name for folders in classes.values() for folder in folders}), root)
    files: list[tuple[str, Path, str, int]] = []
    for split_name, split_root in split_roots:
        loose = [
            entry.name
            for entry in split_root.iterdir()
            if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")
        ]
        if loose:
            logger.warning(
                "%s: %d image(s) outside any class folder skipped, e.g. %s", split_root, len(loose), loose[0]
            )
        for folder in sorted(classes[split_name], key=lambda item: label_of[item.name]):
            for file in _image_files(folder):
                files.append((split_name, file, file.relative_to(split_root).as_posix(), label_of[folder.name]))
    if not files:
        raise InputError(f"{root}: no samples found (empty dataset; expected class sub-folders holding images)")
    return _stream_files(files, batch_size)


def _stream_files(files: list[tuple[str, Path, str, int]], batch_size: int) -> Iterator[RawBatch]:
    for start in range(0, len(files), batch_size):
        block = files[start : start + batch_size]
        yield RawBatch(
            images=[_decode_image(file, str(file)) for _, file, _, _ in block],
            labels=np.array([label for *_, label in block], dtype=np.int64),
            splits=[split for split, *_ in block],
            locators=[locator for _, _, locator, _ in block],
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
    labels = _labels_from_values(y, lambda i: f"{split}:{i}", path)
    return _NpzPart(split, x_key, shape[0], tuple(shape[1:]), dtype, fortran_order, labels)


def _open_npz(path: Path) -> Any:
    try:
        loaded = np.load(path, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds a single array, not an .npz archive with 'x' and 'y'")
    return loaded


def _read_npz(path: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    with _open_npz(path) as npz:
        layout = _npz_layout(list(npz.files), path, split)
        parts = [_npz_part(npz, path, *entry) for entry in layout]
    if sum(part.count for part in parts) == 0:
        raise InputError(f"{path}: no samples found (empty dataset)")
    return _stream_npz(path, parts, batch_size)


def _stream_npz(path: Path, parts: list[_NpzPart], batch_size: int) -> Iterator[RawBatch]:
    # np.load's NpzFile loads a whole array on access; the member is streamed instead so that only one
    # batch of pixels is in memory. Fortran-ordered arrays cannot be read by rows and are loaded whole.
    with _open_npz(path) as npz:
        for part in parts:
            if part.fortran_order:
                whole = np.asarray(npz[part.key])
                for start in range(0, part.count, batch_size):
                    yield _npz_chunk(path, part, start, whole[start : start + batch_size])
                continue
            row_bytes = math.prod(part.sample_shape) * part.dtype.itemsize
            with npz.zip.open(f"{part.key}.npy") as stream:
                _npy_header(stream, path, part.key)
                for start in range(0, part.count, batch_size):
                    size = min(batch_size, part.count - start)
                    raw = _read_exact(stream, size * row_bytes, path)
                    if len(raw) < size * row_bytes:
                        raise InputError(
                            f"{path}: array {part.key!r} is truncated inside sample {start + len(raw) // row_bytes}"
                        )
                    block = np.frombuffer(raw, dtype=part.dtype).reshape(size, *part.sample_shape)
                    yield _npz_chunk(path, part, start, block)


def _npz_chunk(path: Path, part: _NpzPart, start: int, block: np.ndarray) -> RawBatch:
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


# --- tables ----------------------------------------------------------------------------------------


def _pick_column(names: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            raise InputError(f"{path}: no {what} column {wanted!r}; columns found: {names}")
        return wanted
    for candidate in defaults:
        if candidate in names:
            return candidate
    for candidate in defaults:
        for name in names:
            if name.lower() == candidate:
                return name
    raise InputError(
        f"{path}: no {what} column (looked for {', '.join(defaults)}; name it with {what}_column=); "
        f"columns found: {names}"
    )


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    if path.suffix.lower() == ".csv":
        return False
    with path.open("rb") as stream:
        return stream.read(4) == _PARQUET_MAGIC


def _image_kind(arrow_type: Any) -> str | None:
    """``"bytes"``, ``"path"`` or ``"struct"`` for an image column's Arrow type; None when unusable."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    types = pa.types
    # View types appeared in pyarrow 16; the project allows pyarrow 15.
    is_binary_view = getattr(types, "is_binary_view", lambda _: False)
    is_string_view = getattr(types, "is_string_view", lambda _: False)
    if types.is_binary(arrow_type) or types.is_large_binary(arrow_type) or types.is_fixed_size_binary(arrow_type):
        return "bytes"
    if is_binary_view(arrow_type):
        return "bytes"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type) or is_string_view(arrow_type):
        return "path"
    if types.is_struct(arrow_type):
        fields = {arrow_type.field(i).name for i in range(arrow_type.num_fields)}
        if fields & {"bytes", "path"}:
            return "struct"
    return None


def _read_table(
    path: Path, batch_size: int, split: str, image_column: str | None, label_column: str | None
) -> Iterator[RawBatch]:
    parquet = _is_parquet(path)
    try:
        if parquet:
            parquet_file = pq.ParquetFile(path)
            schema = parquet_file.schema_arrow
            rows: int | None = parquet_file.metadata.num_rows
        else:
            with pa_csv.open_csv(path) as reader:
                schema = reader.schema
            rows = None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: unreadable {'Parquet' if parquet else 'CSV'} table ({exc})") from exc
    names = list(schema.names)
    image_name = _pick_column(names, image_column, IMAGE_COLUMNS, "image", path)
    label_name = _pick_column(names, label_column, LABEL_COLUMNS, "label", path)
    split_name = SPLIT_COLUMN if SPLIT_COLUMN in names else None
    if image_name == label_name:
        raise InputError(f"{path}: column {image_name!r} cannot be both the image and the label column")
    if parquet:
        kind = _image_kind(schema.field(image_name).type)
        if kind is None:
            raise InputError(
                f"{path}: image column {image_name!r} has type {schema.field(image_name).type}; "
                "expected encoded image bytes, a path string or a struct {bytes, path}"
            )
    if rows == 0:
        raise InputError(f"{path}: no samples found (empty table)")
    columns = [name for name in (image_name, label_name, split_name) if name is not None]
    return _stream_table(path, parquet, batch_size, split, columns, image_name, label_name, split_name)


def _stream_table(
    path: Path,
    parquet: bool,
    batch_size: int,
    split: str,
    columns: list[str],
    image_name: str,
    label_name: str,
    split_name: str | None,
) -> Iterator[RawBatch]:
    if parquet:
        record_batches = pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
    else:
        # Read every used column as text: a streaming reader infers types from the first block only, and
        # a label "cat" in a later block must become an InputError naming its row, not an Arrow error.
        options = pa_csv.ConvertOptions(column_types={name: pa.string() for name in columns}, include_columns=columns)
        record_batches = pa_csv.open_csv(path, convert_options=options)
    row = 0
    try:
        for record_batch in record_batches:
            for offset in range(0, record_batch.num_rows, batch_size):
                piece = record_batch.slice(offset, batch_size)
                yield _table_chunk(path, piece, row, split, image_name, label_name, split_name)
                row += piece.num_rows
    except pa.ArrowException as exc:
        raise InputError(f"{path}: unreadable table after row {row} ({exc})") from exc


def _table_chunk(
    path: Path, batch: Any, first_row: int, split: str, image_name: str, label_name: str, split_name: str | None
) -> RawBatch:
    rows = [f"row:{first_row + i}" for i in range(batch.num_rows)]
    label_values = batch.column(label_name)
    if pa.types.is_dictionary(label_values.type):
        label_values = label_values.dictionary_decode()
    if label_values.null_count:
        i = int(np.argmax(label_values.is_null().to_numpy(zero_copy_only=False)))
        raise InputError(f"{path}: {rows[i]}: label is missing; labels must be non-negative integers")
    labels = _labels_from_values(label_values.to_numpy(zero_copy_only=False), rows.__getitem__, path)

    if split_name is None:
        splits = [split] * batch.num_rows
    else:
        splits = []
        for i, value in enumerate(batch.column(split_name).to_pylist()):
            name = value.strip().lower() if isinstance(value, str) else value
            if name not in SPLITS:
                raise InputError(f"{path}: {rows[i]}: split {value!r} is not one of {', '.join(SPLITS)}")
            splits.append(name)

    images: list[np.ndarray] = []
    locators: list[str] = []
    image_values = batch.column(image_name)
    if pa.types.is_dictionary(image_values.type):
        image_values = image_values.dictionary_decode()
    for i, value in enumerate(image_values.to_pylist()):
        if isinstance(value, dict):  # Hugging Face datasets: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes | bytearray) and value:
            images.append(_decode_image(bytes(value), f"{path}: {rows[i]}"))
            locators.append(rows[i])
        elif isinstance(value, str) and value:
            file = Path(value) if Path(value).is_absolute() else path.parent / value
            if not file.is_file():
                raise InputError(f"{path}: {rows[i]}: image file {file} does not exist")
            images.append(_decode_image(file, f"{path}: {rows[i]}: {file}"))
            locators.append(value)
        else:
            raise InputError(f"{path}: {rows[i]}: image is missing (column {image_name!r} holds {value!r})")
    return RawBatch(images=images, labels=labels, splits=splits, locators=locators)
