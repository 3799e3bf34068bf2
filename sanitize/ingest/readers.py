"""Read a supplier's dataset in batches: IDX (MNIST style), an image folder, a NumPy ``.npz`` or a table.

:func:`read_source` yields :class:`RawBatch` objects of at most ``batch_size`` samples, so a source of
any size is read with bounded memory. Every format gives the same sample representation: an
(H, W, C) uint8 image with C in {1, 3}, a non-negative int64 label (an index into the batch's
``class_names`` when the source names its classes: class folders, string labels, an ``.npz``
``class_names`` array), a split (``"train"`` or ``"test"``)
and a locator that says where the sample sits inside the source.

Checks are made as early as the format allows: a missing path, an unknown format, missing columns or
keys, bad IDX headers and mismatched lengths raise :class:`~sanitize.errors.InputError` when
:func:`read_source` is called; problems that need the pixels or labels themselves (a corrupt image, a
label ``"cat"``, a second image shape) raise while iterating, at the batch holding the bad sample.
A caller that must be all-or-nothing should therefore stage the batches before committing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sanitize.errors import InputError
from sanitize.ingest.batch import SPLITS, RawBatch, rebatch
from sanitize.ingest.idx import IDX_FILE, read_idx
from sanitize.ingest.imagefolder import IMAGE_SUFFIXES, read_imagefolder
from sanitize.ingest.npz import read_npz
from sanitize.ingest.table import IMAGE_COLUMNS, LABEL_COLUMNS, SPLIT_COLUMN, read_table

FORMATS = ("idx", "imagefolder", "npz", "table")
"""Source formats :func:`read_source` understands."""


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
        if any(IDX_FILE.search(entry.name) and entry.is_file() for entry in path.iterdir()):
            return "idx"
        return "imagefolder"
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".parquet", ".pq", ".csv")):
        return "table"
    if IDX_FILE.search(name):
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
        a ``{"bytes", "path"}`` struct) and the label: class indices, or class names (strings, none of
        which is a number), which the batches carry as ``class_names``. Defaults: the first present of
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
        chunks = read_idx(source, batch_size, split)
    elif fmt == "imagefolder":
        chunks = read_imagefolder(source, batch_size, split)
    elif fmt == "npz":
        chunks = read_npz(source, batch_size, split)
    else:
        chunks = read_table(source, batch_size, split, image_column, label_column)
    return rebatch(chunks, source, batch_size)


__all__ = [
    "FORMATS",
    "IMAGE_COLUMNS",
    "IMAGE_SUFFIXES",
    "LABEL_COLUMNS",
    "SPLITS",
    "SPLIT_COLUMN",
    "RawBatch",
    "detect_format",
    "read_source",
]
