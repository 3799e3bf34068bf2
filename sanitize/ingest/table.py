"""A Parquet or CSV table: an image column (encoded bytes, a path, or a struct of both), a label column,
and optionally a ``split`` column."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sanitize.errors import InputError
from sanitize.ingest.batch import SPLITS, RawBatch, decode_image, labels_from_values

IMAGE_COLUMNS = ("image", "img", "path", "file", "filename")
"""Default image column names of a table, first present wins."""

LABEL_COLUMNS = ("label", "labels", "target", "class", "y")
"""Default label column names of a table, first present wins."""

SPLIT_COLUMN = "split"
"""Optional table column holding ``train``/``test`` per row."""

_PARQUET_MAGIC = b"PAR1"


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


def read_table(
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
    labels = labels_from_values(label_values.to_numpy(zero_copy_only=False), rows.__getitem__, path)

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
            images.append(decode_image(bytes(value), f"{path}: {rows[i]}"))
            locators.append(rows[i])
        elif isinstance(value, str) and value:
            file = Path(value) if Path(value).is_absolute() else path.parent / value
            if not file.is_file():
                raise InputError(f"{path}: {rows[i]}: image file {file} does not exist")
            images.append(decode_image(file, f"{path}: {rows[i]}: {file}"))
            locators.append(value)
        else:
            raise InputError(f"{path}: {rows[i]}: image is missing (column {image_name!r} holds {value!r})")
    return RawBatch(images=images, labels=labels, splits=splits, locators=locators)
