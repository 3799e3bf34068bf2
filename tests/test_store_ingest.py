"""Ingest and store: provenance, content-addressed versions, all-or-nothing writes, training batches."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

import sanitize.store
from sanitize.catalog import AuditRecord, Dataset, Ingest, Version
from sanitize.config import Settings
from sanitize.errors import InputError, NotFoundError
from sanitize.ingest.core import IngestReport, arrays_to_batches, ingest_batches, ingest_path
from sanitize.ingest.readers import RawBatch
from sanitize.store import SAMPLE_SCHEMA, Store, content_hash, decode_pixels, sample_id_for, version_id_for
from sanitize.workspace import Workspace

SHAPE = (4, 4)


@pytest.fixture
def workspace(catalog_workspace: Workspace) -> Workspace:
    """The catalog tests of this module run on SQLite and on PostgreSQL."""
    return catalog_workspace


def coded_images(codes: range | list[int], seed: int = 0) -> np.ndarray:
    """(N, 4, 4) uint8 random images whose first two pixels spell a unique ``code``, so a batch can
    be traced back to its samples."""
    codes = list(codes)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(len(codes), *SHAPE), dtype=np.uint8)
    for i, code in enumerate(codes):
        x[i, 0, 0], x[i, 0, 1] = divmod(code, 256)
    return x


def code_of(images: np.ndarray) -> np.ndarray:
    """The codes of (B, H, W, C) images made by :func:`coded_images`."""
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


def ingest(
    ws: Workspace,
    dataset: str,
    source: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> IngestReport:
    def batches() -> Iterator[RawBatch]:
        yield from arrays_to_batches(x, y, "train", batch_size=16)
        if x_test is not None and y_test is not None:
            yield from arrays_to_batches(x_test, y_test, "test", batch_size=16)

    return ingest_batches(
        ws.catalog, ws.store, dataset=dataset, batches=batches(), source=source, uri=f"mem://{source}", fmt="arrays"
    )


def files_under(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "catalog.db" and not p.name.startswith("catalog.db-")
    }


def catalog_state(ws: Workspace, dataset: str) -> tuple[str | None, int, int, int]:
    with ws.catalog.session() as s:
        ds = s.get(Dataset, dataset)
        return (
            ds.current_version if ds else None,
            s.scalar(select(func.count()).select_from(Ingest)) or 0,
            s.scalar(select(func.count()).select_from(Version)) or 0,
            s.scalar(select(func.count()).select_from(AuditRecord)) or 0,
        )


# --- provenance --------------------------------------------------------------------------------


def test_every_sample_gets_a_provenance_record(workspace: Workspace, tmp_path: Path) -> None:
    x_tr, y_tr = coded_images(range(20)), np.arange(20) % 4
    x_te, y_te = coded_images(range(100, 106), seed=1), np.array([0, 1, 2, 3, 0, 1])
    path = tmp_path / "vendor.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    before = datetime.now(UTC)

    rep = ingest_path(workspace.catalog, workspace.store, dataset="shop", path=path, source="vendor-a")

    after = datetime.now(UTC)
    assert (rep.n_samples, rep.n_train, rep.n_test, rep.stored) == (26, 20, 6, True)
    assert rep.class_counts == {0: 5, 1: 5, 2: 5, 3: 5}
    assert rep.previous_version_id is None and rep.changed
    stored = workspace.store.ingest_path("shop", rep.ingest_id)
    table = pq.read_table(stored)
    assert table.schema.equals(SAMPLE_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    images = [*x_tr, *x_te]
    expected_locators = [f"train:{i}" for i in range(20)] + [f"test:{i}" for i in range(6)]
    assert [r["locator"] for r in rows] == expected_locators
    assert [r["split"] for r in rows] == ["train"] * 20 + ["test"] * 6
    assert [r["label"] for r in rows] == [*y_tr.tolist(), *y_te.tolist()]
    for row, image, locator in zip(rows, images, expected_locators, strict=True):
        canonical = hashlib.sha256(b"4x4x1:" + image.tobytes()).hexdigest()
        assert row["content_sha256"] == canonical == content_hash(image[..., None])
        assert row["sample_id"] == sample_id_for("vendor-a", locator, canonical)
        assert row["source"] == "vendor-a"
        assert row["source_uri"] == str(path.resolve())
        assert row["ingest_id"] == rep.ingest_id
        assert before <= row["ingested_at"] <= after
        assert row["ingested_at"].tzinfo is not None
        assert (row["height"], row["width"], row["channels"]) == (4, 4, 1)
        assert row["pixels"] == image.tobytes()
    with workspace.catalog.session() as s:
        rec = s.get(Ingest, rep.ingest_id)
        assert rec is not None
        assert (rec.source, rec.uri, rec.format, rec.n_samples, rec.file) == (
            "vendor-a",
            str(path.resolve()),
            "npz",
            26,
            str(stored.relative_to(workspace.store.home)),
        )
        audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "ingest")).one()
        assert audit.subject == "shop/vendor-a"
        assert audit.detail is not None and audit.detail["version"] == rep.version_id


def test_the_version_id_hashes_content_label_and_split(workspace: Workspace) -> None:
    x, y = coded_images(range(12)), np.arange(12) % 3

    rep = ingest(workspace, "shop", "a", x, y)

    pairs = [(content_hash(img[..., None]), int(lab), "train") for img, lab in zip(x, y, strict=True)]
    assert rep.version_id == version_id_for(pairs, "shop")
    manifest = workspace.store.manifest("shop", rep.version_id)
    assert (manifest.kind, manifest.n_train, manifest.n_test, manifest.classes) == ("ingested", 12, 0, (0, 1, 2))
    assert (manifest.height, manifest.width, manifest.channels) == (4, 4, 1)


# --- idempotence and versions ---------------------------------------------------------------------


def test_reingesting_identical_data_gives_the_same_version_and_stores_nothing(workspace: Workspace) -> None:
    x, y = coded_images(range(30)), np.arange(30) % 3
    ingests = workspace.store.dataset_dir("shop") / "ingests"
    versions = workspace.store.dataset_dir("shop") / "versions"

    first = ingest(workspace, "shop", "a", x, y)
    files_after_first = sorted(p.name for p in ingests.iterdir())
    second = ingest(workspace, "shop", "a", x.copy(), y.copy())

    assert second.version_id == first.version_id
    assert second.ingest_id == first.ingest_id
    assert (second.stored, second.changed, second.previous_version_id) == (False, False, first.version_id)
    assert sorted(p.name for p in ingests.iterdir()) == files_after_first == [f"{first.ingest_id}.parquet"]
    assert len(list(versions.iterdir())) == 1
    with workspace.catalog.session() as s:
        assert s.scalar(select(func.count()).select_from(Ingest)) == 1
        assert s.scalar(select(func.count()).select_from(Version)) == 1


_orders = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_the_version_id_does_not_depend_on_sample_order(workspace: Workspace, seed: int, n: int) -> None:
    x, y = coded_images(range(n)), np.arange(n) % 3
    perm = np.random.default_rng(seed).permutation(n)
    k = next(_orders)

    original = ingest(workspace, f"ordered-{k}", "a", x, y)
    # The same source delivering the same samples in another order: same version.
    shuffled = ingest(workspace, f"ordered-{k}", "a", x[perm], y[perm])

    assert shuffled.version_id == original.version_id


def test_two_sources_make_one_version_holding_both(workspace: Workspace) -> None:
    a = ingest(workspace, "shop", "a", coded_images(range(20)), np.arange(20) % 2)
    b = ingest(
        workspace,
        "shop",
        "b",
        coded_images(range(200, 215), seed=1),
        np.arange(15) % 2,
        x_test=coded_images(range(300, 305), seed=2),
        y_test=np.array([0, 1, 0, 1, 0]),
    )

    assert b.previous_version_id == a.version_id != b.version_id
    store = workspace.store
    manifest = store.manifest("shop", b.version_id)
    assert (manifest.n_train, manifest.n_test, manifest.parent_id) == (35, 5, a.version_id)
    assert sorted(manifest.files) == sorted(
        str(store.ingest_path("shop", r.ingest_id).relative_to(store.home)) for r in (a, b)
    )
    sources = store.read_column_table(manifest, ["source", "split"]).to_pydict()
    assert sorted(zip(sources["source"], sources["split"], strict=True)) == sorted(
        [("a", "train")] * 20 + [("b", "train")] * 15 + [("b", "test")] * 5
    )
    assert store.manifest("shop", a.version_id).files == (
        str(store.ingest_path("shop", a.ingest_id).relative_to(store.home)),
    )
    with workspace.catalog.session() as s:
        assert workspace.catalog.dataset(s, "shop").current_version == b.version_id


def test_changed_data_makes_a_new_version_and_the_old_one_stays_readable(workspace: Workspace) -> None:
    x_a, y_a = coded_images(range(20)), np.arange(20) % 2
    ingest(workspace, "shop", "a", x_a, y_a)
    v2 = ingest(workspace, "shop", "b", coded_images(range(200, 210), seed=1), np.arange(10) % 2)
    y_changed = y_a.copy()
    y_changed[3] = 5  # a relabelled sample is changed data

    v3 = ingest(workspace, "shop", "a", x_a, y_changed)

    assert v3.stored and v3.version_id != v2.version_id and v3.previous_version_id == v2.version_id
    store = workspace.store
    old, new = store.manifest("shop", v2.version_id), store.manifest("shop", v3.version_id)
    assert all(p.is_file() for p in store.files(old))
    old_labels = store.read_column_table(old, ["source", "locator", "label"]).to_pylist()
    new_labels = store.read_column_table(new, ["source", "locator", "label"]).to_pylist()
    assert {"source": "a", "locator": "train:3", "label": 1} in old_labels
    assert {"source": "a", "locator": "train:3", "label": 5} in new_labels
    assert len(old_labels) == len(new_labels) == 30
    assert new.classes == (0, 1, 5) and old.classes == (0, 1)
    # Going back to the old content gives back the old version (content-addressed).
    back = ingest(workspace, "shop", "a", x_a, y_a)
    assert back.version_id == v2.version_id


def test_exact_duplicates_are_reported_within_and_across_sources(workspace: Workspace) -> None:
    x_a, y_a = coded_images(range(10)), np.arange(10) % 2
    x_a[4], x_a[7] = x_a[0], x_a[0]

    a = ingest(workspace, "shop", "a", x_a, y_a)

    assert a.duplicates_within == 2
    assert a.duplicate_examples == ["train:4 = train:0", "train:7 = train:0"]
    x_b, y_b = coded_images(range(500, 505), seed=3), np.zeros(5, np.int64)
    x_b[0], x_b[1], x_b[2] = x_a[1], x_a[2], x_a[3]
    y_b[:3] = [1, 0, 0]  # a's labels are 1, 0, 1: the third copy disagrees

    b = ingest(workspace, "shop", "b", x_b, y_b)

    assert (b.duplicates_within, b.duplicates_across, b.conflicting_labels) == (0, 3, 1)


# --- bad input: an error, and nothing changed -------------------------------------------------------


def _mixed_shapes() -> Iterator[RawBatch]:
    yield from arrays_to_batches(coded_images(range(16)), np.zeros(16, np.int64), "train")
    yield from arrays_to_batches(np.zeros((2, 5, 5), np.uint8), np.zeros(2, np.int64), "train", prefix="late")


def _corrupt_later() -> Iterator[RawBatch]:
    yield from arrays_to_batches(coded_images(range(16)), np.zeros(16, np.int64), "train")
    raise InputError("vendor.npz: x_train[16] has pixel value 300")


BAD_INPUTS = {
    "empty": ("b", lambda: arrays_to_batches(np.zeros((0, 4, 4), np.uint8), np.zeros(0), "train"), "no samples"),
    "shape of another source": (
        "b",
        lambda: arrays_to_batches(np.zeros((3, 5, 5), np.uint8), np.zeros(3, np.int64), "train"),
        r"shape \(5, 5, 1\) do not match the shape \(4, 4, 1\)",
    ),
    "mixed shapes in the source": ("b", _mixed_shapes, r"late:0 has shape \(5, 5, 1\)"),
    "corrupt sample after a good batch": ("b", _corrupt_later, "pixel value 300"),
    "invalid source name": (
        "bad name!",
        lambda: arrays_to_batches(coded_images(range(3)), np.zeros(3), "train"),
        "source name",
    ),
    "source name starting with a dash": (
        "-b",
        lambda: arrays_to_batches(coded_images(range(3)), np.zeros(3), "train"),
        "source name '-b'",
    ),
    "changed data of the same source, wrong shape mid-way": ("a", _mixed_shapes, "has shape"),
    # SQLite kept it whole in the String(200) column; PostgreSQL would refuse it mid-commit.
    "source name of 300 characters": (
        "s" * 300,
        lambda: arrays_to_batches(coded_images(range(3)), np.zeros(3), "train"),
        "source name is 300 characters long; the limit is 100",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_an_input_error_and_leaves_the_dataset_untouched(workspace: Workspace, case: str) -> None:
    source, batches, message = BAD_INPUTS[case]
    good = ingest(workspace, "shop", "a", coded_images(range(40, 60)), np.arange(20) % 2)
    home = workspace.store.home
    files_before = files_under(home)
    state_before = catalog_state(workspace, "shop")

    with pytest.raises(InputError, match=message):
        ingest_batches(
            workspace.catalog, workspace.store, dataset="shop", batches=batches(), source=source, uri="u", fmt="arrays"
        )

    assert files_under(home) == files_before
    assert catalog_state(workspace, "shop") == state_before
    assert state_before[0] == good.version_id
    assert list(home.rglob("*.tmp")) == []
    manifest = workspace.store.manifest("shop", good.version_id)
    assert workspace.store.read_column_table(manifest, ["sample_id"]).num_rows == 20


def test_an_invalid_dataset_name_is_an_input_error(workspace: Workspace) -> None:
    with pytest.raises(InputError, match="dataset name '../etc'"):
        ingest(workspace, "../etc", "a", coded_images(range(3)), np.zeros(3, np.int64))
    assert not (workspace.store.home / "datasets").exists()


@pytest.mark.parametrize("length", [101, 300, 5000])
def test_a_dataset_name_over_the_limit_is_an_input_error_not_an_os_error(workspace: Workspace, length: int) -> None:
    # 300 characters made a folder name the file system refused (OSError: File name too long).
    with pytest.raises(InputError, match=f"dataset name is {length} characters long; the limit is 100$"):
        ingest(workspace, "d" * length, "a", coded_images(range(3)), np.zeros(3, np.int64))
    assert not (workspace.store.home / "datasets").exists()


def test_a_dataset_name_at_the_limit_is_ingested(workspace: Workspace) -> None:
    report = ingest(workspace, "d" * 100, "s" * 100, coded_images(range(3)), np.zeros(3, np.int64))
    assert report.n_samples == 3


def test_an_unknown_version_is_not_found(workspace: Workspace) -> None:
    ingest(workspace, "shop", "a", coded_images(range(3)), np.zeros(3, np.int64))
    with pytest.raises(NotFoundError, match="dataset 'shop' has no version 'vnope'"):
        workspace.store.manifest("shop", "vnope")


def test_arrays_to_batches_rejects_mismatched_lengths() -> None:
    with pytest.raises(InputError, match="5 images but 4 labels"):
        list(arrays_to_batches(coded_images(range(5)), np.zeros(4), "train"))


# --- training batches ---------------------------------------------------------------------------


class TrainingData:
    """Two sources in many small row groups, with every sample traceable by the code in its pixels."""

    def __init__(self, home: Path):
        self.ws = Workspace(Settings(home=home, catalog_url=None))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sanitize.store, "ROW_GROUP", 7)  # many row groups from a few dozen samples
            ingest(self.ws, "shop", "a", coded_images(range(45)), np.arange(45) % 3)
            rep = ingest(
                self.ws,
                "shop",
                "b",
                coded_images(range(1000, 1032), seed=1),
                np.arange(32) % 3,
                x_test=coded_images(range(2000, 2010), seed=2),
                y_test=np.zeros(10, np.int64),
            )
        self.store: Store = self.ws.store
        self.manifest = self.store.manifest("shop", rep.version_id)
        self.id_of: dict[int, str] = {}
        self.label_of: dict[int, int] = {}
        for batch in self.store.iter_samples(self.manifest, split="train"):
            codes = code_of(decode_pixels(batch))
            for code, sid, lab in zip(
                codes, batch.column("sample_id").to_pylist(), batch.column("label").to_pylist(), strict=True
            ):
                self.id_of[int(code)] = sid
                self.label_of[int(code)] = lab

    def epoch(self, **options: object) -> tuple[list[int], list[int], list[int]]:
        """Codes, labels and batch sizes of one pass of ``iter_training_batches``."""
        codes: list[int] = []
        labels: list[int] = []
        sizes: list[int] = []
        for x, y in self.store.iter_training_batches(self.manifest, split="train", **options):  # type: ignore[arg-type]
            assert x.dtype == np.uint8 and x.shape[1:] == (4, 4, 1) and y.dtype == np.int64
            codes.extend(code_of(x).tolist())
            labels.extend(y.tolist())
            sizes.append(len(y))
        return codes, labels, sizes


@pytest.fixture(scope="module")
def training_data(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return TrainingData(tmp_path_factory.mktemp("training-batches"))


def test_the_training_data_is_split_into_many_row_groups(training_data: TrainingData) -> None:
    groups = [pq.ParquetFile(p).num_row_groups for p in training_data.store.files(training_data.manifest)]
    assert min(groups) >= 6


@settings(max_examples=25, deadline=None)
@given(batch_size=st.integers(1, 20), buffer_batches=st.integers(1, 5), seed=st.integers(0, 1000))
def test_an_epoch_yields_every_train_sample_once(
    training_data: TrainingData, batch_size: int, buffer_batches: int, seed: int
) -> None:
    codes, labels, sizes = training_data.epoch(batch_size=batch_size, seed=seed, buffer_batches=buffer_batches)

    assert sorted(codes) == sorted(training_data.id_of)  # 77 train samples, no test sample
    assert len(codes) == 77
    assert labels == [training_data.label_of[c] for c in codes]
    assert all(s <= batch_size for s in sizes) and all(s > 0 for s in sizes)


def test_epochs_are_shuffled_by_the_seed(training_data: TrainingData) -> None:
    first, _, _ = training_data.epoch(batch_size=8, seed=0)
    again, _, _ = training_data.epoch(batch_size=8, seed=0)
    other, _, _ = training_data.epoch(batch_size=8, seed=1)

    assert first == again
    assert first != other and sorted(first) == sorted(other)


def test_training_batches_honour_exclude_and_relabel(training_data: TrainingData) -> None:
    excluded_codes = {0, 17, 1005}
    relabelled_codes = {3: 2, 1020: 0}
    exclude = {training_data.id_of[c] for c in excluded_codes}
    relabel = {training_data.id_of[c]: new for c, new in relabelled_codes.items()}

    codes, labels, _ = training_data.epoch(batch_size=10, seed=3, exclude=exclude, relabel=relabel)

    assert sorted(codes) == sorted(set(training_data.id_of) - excluded_codes)
    got = dict(zip(codes, labels, strict=True))
    assert got[3] == 2 and got[1020] == 0
    assert training_data.label_of[3] == 0 and training_data.label_of[1020] == 2
    assert all(got[c] == training_data.label_of[c] for c in got if c not in relabelled_codes)


def test_iter_samples_excludes_by_sample_id(training_data: TrainingData) -> None:
    exclude = {training_data.id_of[c] for c in (1, 2, 1031)}

    ids = [
        sid
        for batch in training_data.store.iter_samples(training_data.manifest, split="train", exclude=exclude)
        for sid in batch.column("sample_id").to_pylist()
    ]

    assert sorted(ids) == sorted(set(training_data.id_of.values()) - exclude)


def test_identical_content_in_two_datasets_gives_each_a_readable_version(workspace: Workspace) -> None:
    x, y = coded_images(range(10)), np.arange(10) % 2

    one = ingest(workspace, "one", "a", x, y)
    two = ingest(workspace, "two", "a", x, y)

    with workspace.catalog.session() as s:
        assert workspace.catalog.version(s, two.version_id).dataset == "two"
        assert workspace.catalog.version(s, one.version_id).dataset == "one"
    assert workspace.store.manifest("two", two.version_id).dataset == "two"


def test_a_test_only_source_joins_a_dataset_but_cannot_make_one(workspace: Workspace) -> None:
    ingest(workspace, "shop", "a", coded_images(range(8)), np.arange(8) % 2)
    holdout = ingest_batches(
        workspace.catalog,
        workspace.store,
        dataset="shop",
        source="holdout",
        uri="mem",
        fmt="test",
        batches=arrays_to_batches(coded_images(range(8, 12)), np.arange(4) % 2, "test"),
    )
    assert (holdout.n_train, holdout.n_test) == (0, 4)
    assert workspace.store.manifest("shop", holdout.version_id).n_test == 4

    with pytest.raises(InputError, match="would have no training sample"):
        ingest_batches(
            workspace.catalog,
            workspace.store,
            dataset="only-test",
            source="holdout",
            uri="mem",
            fmt="test",
            batches=arrays_to_batches(coded_images(range(3)), np.zeros(3, np.int64), "test"),
        )
    assert not list(workspace.store.dataset_dir("only-test").glob("ingests/*"))


def test_raw_inputs_come_back_in_the_asked_order_and_large_images_are_pooled(
    workspace: Workspace, tmp_path: Path
) -> None:
    """What input-space detectors read: train pixels in [0, 1], in the features' sample order, and
    images over ``max_dims`` values averaged over square blocks."""
    from sanitize.features import load_inputs

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 10, 10, 3), dtype=np.uint8)  # 300 values each
    y = np.arange(12) % 3
    path = tmp_path / "colour.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    rep = ingest_path(workspace.catalog, workspace.store, dataset="colour", path=path, source="vendor-a")
    manifest = workspace.store.manifest("colour", rep.version_id)
    ids = workspace.store.read_column_table(manifest, ["sample_id"], split="train").column("sample_id").to_pylist()
    order = rng.permutation(len(ids))
    wanted = [ids[i] for i in order]

    full = load_inputs(workspace.store, manifest, wanted)
    pooled = load_inputs(workspace.store, manifest, wanted, max_dims=100)  # 5 x 5 x 3 = 75 after 2 x 2 blocks

    np.testing.assert_allclose(full, x[order].reshape(12, -1) / 255.0, rtol=1e-6)
    blocks = x[order].astype(np.float64).reshape(12, 5, 2, 5, 2, 3).mean(axis=(2, 4)) / 255.0
    assert pooled.shape == (12, 75)
    np.testing.assert_allclose(pooled, blocks.reshape(12, -1), rtol=1e-5)
    with pytest.raises(InputError, match="has features but is not in version"):
        load_inputs(workspace.store, manifest, [*wanted, "0" * 20])
