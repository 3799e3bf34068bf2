"""The sample batch every source format yields, and the checks the formats share: one image shape per
source, integer labels, uint8 pixels, decoding only the image formats allowed."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sanitize.errors import InputError

SPLITS = ("train", "test")
"""Split names a sample can carry."""


# Only these decoders may run on supplier files: Pillow otherwise identifies files by content, and a
# ".png" that is really an EPS would be handed to Ghostscript.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG also opens MPO (camera) files
MAX_LABEL = 99_999
"""The largest label ingest accepts. A label is a class index: the reference model has one output per
index up to the largest, and the detectors keep statistics per class, so a label of 1e9 would ask for
a 512 GB output layer. 100,000 classes covers every public image benchmark (ImageNet-21k has 21,841)."""


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
    class_names : tuple of str, optional
        The source's own class names, when it has them (class folders, string labels, an ``.npz``
        ``class_names`` array): ``labels`` then index into it, and ingest maps each name to the
        dataset's label (:mod:`sanitize.ingest.labelmap`). None: ``labels`` are class indices.
    """

    images: list[np.ndarray]
    labels: np.ndarray
    splits: list[str]
    locators: list[str]
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        size = len(self.images)
        if self.labels.shape != (size,) or self.labels.dtype != np.int64:
            raise ValueError(f"labels must be int64 of shape ({size},), got {self.labels.dtype} {self.labels.shape}")
        if self.class_names is not None and size and int(self.labels.max()) >= len(self.class_names):
            raise ValueError(f"label {int(self.labels.max())} has no name among {len(self.class_names)} class names")
        if len(self.splits) != size or len(self.locators) != size:
            raise ValueError(
                f"{size} images but {len(self.splits)} splits and {len(self.locators)} locators; lengths must match"
            )

    def __len__(self) -> int:
        return len(self.images)


# --- batching and whole-source checks -------------------------------------------------------------


def rebatch(chunks: Iterator[RawBatch], source: Path, batch_size: int) -> Iterator[RawBatch]:
    """Check one image shape across the source and regroup chunks into batches of ``batch_size``."""
    first_shape: tuple[int, ...] | None = None
    first_where = ""
    pending: list[RawBatch] = []
    pending_size = 0
    total = 0
    for chunk in chunks:
        for image, split, locator in zip(chunk.images, chunk.splits, chunk.locators, strict=True):
            if first_shape is None:
                first_shape, first_where = image.shape, where(split, locator)
            elif image.shape != first_shape:
                raise shape_error(source, where(split, locator), image.shape, first_where, first_shape)
        total += len(chunk)
        pending.append(chunk)
        pending_size += len(chunk)
        while pending_size >= batch_size:
            merged = concat(pending)
            yield slice_batch(merged, 0, batch_size)
            rest = slice_batch(merged, batch_size, len(merged))
            pending, pending_size = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending_size:
        yield concat(pending)
    if total == 0:
        raise InputError(f"{source}: no samples found (empty dataset)")


def where(split: str, locator: str) -> str:
    return locator if locator.startswith(f"{split}:") else f"{locator} ({split})"


def shape_error(
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


def concat(parts: Sequence[RawBatch]) -> RawBatch:
    if len(parts) == 1:
        return parts[0]
    return RawBatch(
        images=[image for part in parts for image in part.images],
        labels=np.concatenate([part.labels for part in parts]),
        splits=[split for part in parts for split in part.splits],
        locators=[locator for part in parts for locator in part.locators],
        class_names=parts[0].class_names,
    )


def slice_batch(batch: RawBatch, start: int, stop: int) -> RawBatch:
    if start == 0 and stop == len(batch):
        return batch
    return RawBatch(
        images=batch.images[start:stop],
        labels=batch.labels[start:stop],
        splits=batch.splits[start:stop],
        locators=batch.locators[start:stop],
        class_names=batch.class_names,
    )


def read_exact(stream: Any, size: int, path: Path) -> bytes:
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


def label_error(source: Path, where: str, value: object, reason: str) -> InputError:
    return InputError(
        f"{source}: {where}: label {value!r} {reason}; labels must be class indices, integers from 0 to {MAX_LABEL}"
    )


def parse_label(value: object) -> int:
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
    if number > MAX_LABEL:
        raise ValueError("is too large for a class index")
    return number


def labels_from_values(values: np.ndarray, where: Callable[[int], str], source: Path) -> np.ndarray:
    """Validate labels and return them as int64 of shape (N,); ``where(i)`` names sample ``i`` in errors."""
    kind = values.dtype.kind
    if kind == "b":
        return values.astype(np.int64)
    if kind in "iuf":
        with np.errstate(invalid="ignore"):
            if kind == "f":
                not_integer = ~np.isfinite(values) | (values != np.floor(values))
            else:
                not_integer = np.zeros(values.shape, dtype=bool)
            too_big = ~not_integer & (values > MAX_LABEL)
            negative = values < 0
        bad = not_integer | negative | too_big
        if bad.any():
            i = int(np.argmax(bad))
            reason = (
                "is not an integer"
                if not_integer[i]
                else "is negative"
                if negative[i]
                else "is too large for a class index"
            )
            raise label_error(source, where(i), values[i].item(), reason)
        return values.astype(np.int64)
    if kind in "OUS":
        out = np.empty(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            try:
                out[i] = parse_label(value)
            except ValueError as exc:
                raise label_error(source, where(i), value, str(exc)) from None
        return out
    raise InputError(f"{source}: labels have dtype {values.dtype}; labels must be non-negative integers")


# --- class names -----------------------------------------------------------------------------------

CLASS_NAME_MAX = 100
"""The longest class name ingest accepts (as for dataset and source names)."""

_INDEX_NAME = re.compile(r"-?[0-9]+")


def is_index_name(name: str) -> bool:
    """Whether a class name is a class index written out (``"3"``): such names are labels, not names."""
    return _INDEX_NAME.fullmatch(name) is not None


def check_class_name(name: str, what: str) -> str:
    """``name`` if it can name a class (and an image-export folder), else an InputError naming ``what``."""
    if not name:
        raise InputError(f"{what}: empty class name")
    if len(name) > CLASS_NAME_MAX:
        raise InputError(
            f"{what}: class name of {len(name)} characters ({name[:40]!r}...); the limit is {CLASS_NAME_MAX}"
        )
    bad = [c for c in name if c in "/\\" or not c.isprintable()]
    if bad or name in (".", "..") or name.startswith("."):
        why = f"holds {bad[0]!r}" if bad else "starts with '.'"
        raise InputError(
            f"{what}: class name {name!r} {why}; a class name becomes a folder name in an image-folder export"
        )
    return name


# --- images ----------------------------------------------------------------------------------------


def decode_image(data: Path | bytes, what: str) -> np.ndarray:
    """Decode one encoded image to a read-only (H, W, C) uint8 array, C in {1, 3}."""
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data), formats=PIL_FORMATS) as image:
            image.load()
            pixels = pixels_uint8(image, what)
    except InputError:
        raise
    except UnidentifiedImageError:  # its message names the file again, or a BytesIO object's address
        raise InputError(
            f"{what}: unreadable or corrupt image (not one of the formats ingest reads: {', '.join(PIL_FORMATS)})"
        ) from None
    except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError, struct.error, ...
        raise InputError(f"{what}: unreadable or corrupt image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    pixels.flags.writeable = False
    return pixels


def pixels_uint8(image: Image.Image, what: str) -> np.ndarray:
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
