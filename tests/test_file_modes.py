"""What sanitize writes is readable by the training job's user: files and folders get the process's
umask (written atomically all the same), and ``umask 077`` keeps them private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sanitize.demo import digits_arrays
from sanitize.export import copy_out, export_clean_version
from sanitize.ingest.core import ingest_path
from sanitize.store import atomic_write_json, current_umask
from sanitize.workspace import Workspace


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def published(ws: Workspace, tmp_path: Path) -> str:
    """A small dataset and a clean version of it (no run: the export alone)."""
    x_tr, y_tr, x_te, y_te = digits_arrays()
    npz = tmp_path / "vendor-a.npz"
    np.savez(npz, x_train=x_tr[:80], y_train=y_tr[:80], x_test=x_te[:20], y_test=y_te[:20])
    version = ingest_path(ws.catalog, ws.store, dataset="shop", path=npz, source="vendor-a").version_id
    return export_clean_version(ws, "shop", version, "run-modes", set(), {})


@pytest.mark.usefixtures("umask")
def test_the_umask_is_read_without_being_changed() -> None:
    os.umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # reading it did not change it


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_exports_and_manifests_follow_the_umask(
    workspace: Workspace, tmp_path: Path, mask: int, file_mode: int, dir_mode: int
) -> None:
    os.umask(mask)
    clean = published(workspace, tmp_path)
    store_files = [
        *(workspace.store.home / f for f in workspace.store.manifest("shop", clean).files),
        workspace.store.manifest_path("shop", clean),
        workspace.store.export_dir("shop", clean) / "manifest.json",
    ]
    assert {p: mode(p) for p in store_files} == {p: file_mode for p in store_files}

    written = copy_out(workspace, clean, tmp_path / "parquet", "parquet")
    written += copy_out(workspace, clean, tmp_path / "npz", "npz")
    assert {p: mode(p) for p in written} == {p: file_mode for p in written}

    folder = tmp_path / "images"
    copy_out(workspace, clean, folder, "imagefolder")
    pngs = sorted(folder.rglob("*.png"))
    assert pngs and {mode(p) for p in pngs} == {file_mode}
    assert mode(folder / "manifest.json") == file_mode
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    assert {p: mode(p) for p in folders} == {p: dir_mode for p in folders}


@pytest.mark.usefixtures("umask")
def test_an_atomic_write_that_fails_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sanitize.store

    def disk_full(src: str, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    os.umask(0o022)
    target = tmp_path / "out" / "manifest.json"
    atomic_write_json(target, {"v": 1})
    monkeypatch.setattr(sanitize.store.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"v": 2})
    assert list(target.parent.iterdir()) == [target] and target.read_text().strip().endswith("}")
    assert '"v": 1' in target.read_text() and mode(target) == 0o644
