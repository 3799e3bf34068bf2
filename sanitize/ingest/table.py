"""A Parquet or CSV table: an image column (encoded bytes, a path, or a struct of both), a label column
(class indices, or class names), and optionally a ``split`` column."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sanitize.errors import InputError
from sanitize.ingest.batch import SPLITS, RawBatch, check_class_name, decode_image, labels_from_values

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
    class_names = _label_names(path, parquet, schema.field(label_name).type, label_name)
    return _stream_table(path, parquet, batch_size, split, columns, image_name, label_name, split_name, class_names)


def _label_names(path: Path, parquet: bool, arrow_type: Any, label_name: str) -> tuple[str, ...] | None:
    """The table's class names when its labels are names (sorted), None when they are class indices.

    A text label column is read once on its own (one column: cheap beside the images) to tell: labels
    that all look like numbers are indices, as before; labels none of which do are names, numbered by
    sorted name so that the rows' order cannot change a label. A column of both is refused with one row
    of each: a stray word in a column of indices is more often a typo than a class named ``"3"``.
    """
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
        return None
    try:
        if parquet:
            column = pq.read_table(path, columns=[label_name]).column(label_name)
        else:
            options = pa_csv.ConvertOptions(column_types={label_name: pa.string()}, include_columns=[label_name])
            column = pa_csv.read_csv(path, convert_options=options).column(label_name)
    except pa.ArrowException as exc:
        raise InputError(f"{path}: unreadable label column {label_name!r} ({exc})") from exc
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    column = pc.utf8_trim_whitespace(column)
    values = [value for value in pc.unique(column).to_pylist() if value is not None and value != ""]
    numeric = [value for value in values if _looks_numeric(value)]
    if not values or len(numeric) == len(values):
        return None
    if numeric:
        name = next(value for value in values if not _looks_numeric(value))
        rows = {value: int(pc.index(column, value).as_py()) for value in (numeric[0], name)}
        raise InputError(
            f"{path}: row:{rows[name]}: label {name!r} is a class name but row:{rows[numeric[0]]}: label "
            f"{numeric[0]!r} is a class index; a table's labels must be all class indices or all class names"
        )
    for value in values:
        check_class_name(value, f"{path}: row:{int(pc.index(column, value).as_py())}")
    return tuple(sorted(values))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _stream_table(
    path: Path,
    parquet: bool,
    batch_size: int,
    split: str,
    columns: list[str],
    image_name: str,
    label_name: str,
    split_name: str | None,
    names: tuple[str, ...] | None,
) -> Iterator[RawBatch]:
    index = None if names is None else {name: i for i, name in enumerate(names)}
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
                yield _table_chunk(path, piece, row, split, image_name, label_name, split_name, names, index)
                row += piece.num_rows
    except pa.ArrowException as exc:
        raise InputError(f"{path}: unreadable table after row {row} ({exc})") from exc


def _table_chunk(
    path: Path,
    batch: Any,
    first_row: int,
    split: str,
    image_name: str,
    label_name: str,
    split_name: str | None,
    names: tuple[str, ...] | None,
    index: dict[str, int] | None,
) -> RawBatch:
    rows = [f"row:{first_row + i}" for i in range(batch.num_rows)]
    label_values = batch.column(label_name)
    if pa.types.is_dictionary(label_values.type):
        label_values = label_values.dictionary_decode()
    if label_values.null_count:
        i = int(np.argmax(label_values.is_null().to_numpy(zero_copy_only=False)))
        what = "class names" if index is not None else "non-negative integers"
        raise InputError(f"{path}: {rows[i]}: label is missing; labels must be {what}")
    if index is None:
        labels = labels_from_values(label_values.to_numpy(zero_copy_only=False), rows.__getitem__, path)
    else:
        labels = np.empty(batch.num_rows, dtype=np.int64)
        for i, value in enumerate(label_values.to_pylist()):
            if not value.strip():
                raise InputError(f"{path}: {rows[i]}: label is missing; labels must be class names")
            found = index.get(value.strip())
            if found is None:  # the file changed since its label column was read
                raise InputError(f"{path}: {rows[i]}: label {value!r} was not in the table when its labels were read")
            labels[i] = found

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
    return RawBatch(images=images, labels=labels, splits=splits, locators=locators, class_names=names)
