"""An image folder: one folder per class (ImageFolder's layout), optionally under ``train/`` and ``test/``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sanitize.errors import InputError
from sanitize.ingest.batch import MAX_LABEL, SPLITS, RawBatch, check_class_name, decode_image, is_index_name

logger = logging.getLogger(__name__)


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File name endings (compared case-insensitively) that an image folder reads."""


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


def _class_labels(names: list[str], root: Path) -> tuple[dict[str, int], tuple[str, ...] | None]:
    """Label per class folder, and the source's class names.

    When every folder name is an integer, it is the class index and the source has no names (None).
    Otherwise the folder names are the class names, each labelled by its sorted position; ingest maps
    them to the dataset's labels by name.
    """
    if names and all(is_index_name(name) for name in names):
        labels = {name: int(name) for name in names}
        negative = [name for name in names if labels[name] < 0]
        if negative:
            raise InputError(f"{root / negative[0]}: class folder gives negative label {labels[negative[0]]}")
        too_big = [name for name in names if labels[name] > MAX_LABEL]
        if too_big:
            raise InputError(
                f"{root / too_big[0]}: class folder gives label {labels[too_big[0]]}, too large for a class index "
                f"(0 to {MAX_LABEL}); name the folders by class, or number them from 0"
            )
        by_label: dict[int, str] = {}
        for name in names:
            if labels[name] in by_label:
                raise InputError(
                    f"{root}: class folders {by_label[labels[name]]!r} and {name!r} both mean label {labels[name]}"
                )
            by_label[labels[name]] = name
        return labels, None
    ordered = sorted(names)
    for name in ordered:
        check_class_name(name, str(root / name))
    return {name: index for index, name in enumerate(ordered)}, tuple(ordered)


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


def read_imagefolder(root: Path, batch_size: int, split: str) -> Iterator[RawBatch]:
    split_roots = _split_roots(root, split)
    classes = {name: _visible_dirs(split_root) for name, split_root in split_roots}
    # One mapping over both splits, so a class missing from test keeps its train label.
    label_of, class_names = _class_labels(
        sorted({folder.name for folders in classes.values() for folder in folders}), root
    )
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
    return _stream_files(files, batch_size, class_names)


def _stream_files(
    files: list[tuple[str, Path, str, int]], batch_size: int, class_names: tuple[str, ...] | None
) -> Iterator[RawBatch]:
    for start in range(0, len(files), batch_size):
        block = files[start : start + batch_size]
        yield RawBatch(
            images=[decode_image(file, str(file)) for _, file, _, _ in block],
            labels=np.array([label for *_, label in block], dtype=np.int64),
            splits=[split for split, *_ in block],
            locators=[locator for _, _, locator, _ in block],
            class_names=class_names,
        )
