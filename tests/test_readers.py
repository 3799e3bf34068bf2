"""Tests for :mod:`sanitize.ingest.readers` on tiny synthetic sources written per test."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sanitize.errors import InputError
from sanitize.ingest.readers import FORMATS, RawBatch, detect_format, read_source

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)  # 7 images of 5x4
GREY_LABELS = np.array([3, 0, 1, 3, 2, 0, 9], dtype=np.uint8)
TEST_GREY = RNG.integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
TEST_LABELS = np.array([1, 1, 0], dtype=np.uint8)


# --- helpers -----------------------------------------------------------------------------------


def read_all(path: Path | str, **options: object) -> RawBatch:
    """Every batch of a source joined into one."""
    batches = list(read_source(path, **options))  # type: ignore[arg-type]
    return RawBatch(
        images=[image for batch in batches for image in batch.images],
        labels=np.concatenate([batch.labels for batch in batches]),
        splits=[split for batch in batches for split in batch.splits],
        locators=[locator for batch in batches for locator in batch.locators],
    )


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x00000800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ending = ".gz" if gz else ""
    image_file = directory / f"{prefix}-images-idx3-ubyte{ending}"
    for file, array in ((image_file, images), (directory / f"{prefix}-labels-idx1-ubyte{ending}", labels)):
        data = idx_bytes(array)
        file.write_bytes(gzip.compress(data) if gz else data)
    return image_file


def encode(array: np.ndarray, image_format: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(array))


def assert_images_equal(images: list[np.ndarray], expected: np.ndarray) -> None:
    assert len(images) == len(expected)
    for image, want in zip(images, expected, strict=True):
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, want)


def raises_naming(*fragments: str) -> pytest.RaisesExc[InputError]:
    """``pytest.raises(InputError)`` whose message must contain every fragment."""
    return pytest.raises(InputError, match=".*".join(re.escape(fragment) for fragment in fragments))


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_reads_both_splits_exactly(tmp_path: Path, gz: bool) -> None:
    write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=gz)
    write_idx(tmp_path, "t10k", TEST_GREY, TEST_LABELS, gz=gz)
    assert detect_format(tmp_path) == "idx"

    batches = list(read_source(tmp_path, batch_size=4))

    assert [len(batch) for batch in batches] == [4, 4, 2]  # a batch may span train and test
    data = read_all(tmp_path, batch_size=4)
    assert_images_equal(data.images, np.concatenate([GREY, TEST_GREY])[..., None])
    np.testing.assert_array_equal(data.labels, np.concatenate([GREY_LABELS, TEST_LABELS]))
    assert data.labels.dtype == np.int64
    assert data.splits == ["train"] * 7 + ["test"] * 3
    assert data.locators == [f"train:{i}" for i in range(7)] + [f"test:{i}" for i in range(3)]
    assert not data.images[0].flags.writeable


def test_idx_gzip_is_detected_by_magic_bytes_not_name(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(gzip.compress(idx_bytes(GREY)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(GREY_LABELS))  # plain despite .gz

    data = read_all(tmp_path)

    assert_images_equal(data.images, GREY[..., None])
    np.testing.assert_array_equal(data.labels, GREY_LABELS)


def test_idx_single_images_file_finds_labels_and_split(tmp_path: Path) -> None:
    train = write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=True)
    test = write_idx(tmp_path, "t10k", TEST_GREY, TEST_LABELS, gz=False)
    assert detect_format(train) == "idx"

    as_test = read_all(train, split="test")
    t10k = read_all(test)  # the t10k- prefix means test whatever ``split`` says

    assert as_test.splits == ["test"] * 7
    assert as_test.locators[:2] == ["test:0", "test:1"]
    assert_images_equal(t10k.images, TEST_GREY[..., None])
    assert t10k.splits == ["test"] * 3


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x02" + images.read_bytes()[4:])
    with raises_naming("train-images-idx3-ubyte", "magic", "0x00000802"):
        read_source(tmp_path)


def test_idx_truncated_plain_file_fails_at_call(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-3])
    with raises_naming("train-images-idx3-ubyte", "truncated"):
        read_source(tmp_path)


def test_idx_truncated_gzip_file_fails_while_reading(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(idx_bytes(GREY)[:-30]))
    batches = read_source(tmp_path, batch_size=2)
    with raises_naming("train-images-idx3-ubyte.gz", "truncated"):
        list(batches)


def test_idx_count_mismatch_names_both_lengths(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", GREY, GREY_LABELS[:5], gz=False)
    with raises_naming("train-images-idx3-ubyte", "7 images", "5 labels"):
        read_source(tmp_path)


def test_idx_missing_labels_file(tmp_path: Path) -> None:
    images = write_idx(tmp_path, "train", GREY, GREY_LABELS, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with raises_naming("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        read_source(tmp_path)
    with raises_naming("train-images-idx3-ubyte", "no labels file"):
        read_source(images)


def test_idx_empty_dataset(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", np.zeros((0, 5, 4), np.uint8), np.zeros(0, np.uint8), gz=False)
    with raises_naming(str(tmp_path), "no samples"):
        read_source(tmp_path)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_first_batch() -> None:
    batch = next(read_source(FASHION_MNIST))
    assert len(batch) == 4096
    assert batch.images[0].shape == (28, 28, 1)
    assert batch.labels[0] == 9  # the first training image is an ankle boot
    assert set(batch.labels.tolist()) == set(range(10))
    assert batch.locators[:2] == ["train:0", "train:1"]


# --- image folder ------------------------------------------------------------------------------


def test_imagefolder_classes_by_sorted_name(tmp_path: Path) -> None:
    colour = RNG.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
    write_image(tmp_path / "dog" / "b.png", colour[0])
    write_image(tmp_path / "dog" / "a.PNG", colour[1])  # extension case does not matter
    write_image(tmp_path / "cat" / "sub" / "x.bmp", colour[2])  # nested folders belong to their class
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    assert detect_format(tmp_path) == "imagefolder"

    data = read_all(tmp_path, batch_size=2, split="test")

    assert data.locators == ["cat/sub/x.bmp", "dog/a.PNG", "dog/b.png"]
    assert data.labels.tolist() == [0, 1, 1]
    assert data.splits == ["test"] * 3
    assert_images_equal(data.images, colour[[2, 1, 0]])


def test_imagefolder_integer_names_are_labels_and_splits(tmp_path: Path) -> None:
    for split, labels in (("train", ("10", "2")), ("test", ("2",))):
        for label in labels:
            write_image(tmp_path / split / label / "img.png", GREY[int(label) % 7][..., None])

    data = read_all(tmp_path)

    assert data.splits == ["train", "train", "test"]
    assert data.locators == ["2/img.png", "10/img.png", "2/img.png"]
    assert data.labels.tolist() == [2, 10, 2]
    assert_images_equal(data.images, GREY[[2, 3, 2]][..., None])


def test_imagefolder_test_split_keeps_train_label_mapping(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "ant" / "1.png", GREY[0][..., None])
    write_image(tmp_path / "train" / "bee" / "1.png", GREY[1][..., None])
    write_image(tmp_path / "test" / "bee" / "1.png", GREY[2][..., None])
    assert read_all(tmp_path).labels.tolist() == [0, 1, 1]


def test_imagefolder_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, size=(4, 4, 4), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "rgba.png")
    np.testing.assert_array_equal(read_all(tmp_path).images[0], rgba[..., :3])


def test_imagefolder_16_bit_grey_is_scaled_to_8_bit(tmp_path: Path) -> None:
    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).astype(np.uint16)
    (tmp_path / "a").mkdir()
    Image.fromarray(deep).save(tmp_path / "a" / "deep.png")
    expected = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(read_all(tmp_path).images[0], expected)


def test_imagefolder_mixed_channel_counts_name_both_samples(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "grey.png", GREY[0, :4][..., None])
    write_image(tmp_path / "b" / "rgb.png", RNG.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
    with raises_naming("b/rgb.png", "(4, 4, 3)", "a/grey.png", "(4, 4, 1)", "mixed channel counts"):
        read_all(tmp_path)


def test_imagefolder_palette_image_becomes_rgb(tmp_path: Path) -> None:
    colour = RNG.integers(0, 4, size=(4, 4, 3), dtype=np.uint8) * 80
    (tmp_path / "k").mkdir()
    Image.fromarray(colour).quantize(colors=16).save(tmp_path / "k" / "p.gif")  # at most 16 colours: lossless
    image = read_all(tmp_path).images[0]
    assert image.shape == (4, 4, 3)
    np.testing.assert_array_equal(image, colour)


def test_imagefolder_corrupt_image_names_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "good.png", GREY[0][..., None])
    (tmp_path / "a" / "zbad.png").write_bytes(encode(GREY[1][..., None])[:30])
    with raises_naming("zbad.png", "corrupt"):
        read_all(tmp_path)


def test_imagefolder_disguised_non_image_is_not_decoded(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")
    with raises_naming("x.png", "unreadable"):
        read_all(tmp_path)


def test_imagefolder_different_shapes_names_both(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "1.png", GREY[0][..., None])
    write_image(tmp_path / "b" / "2.png", GREY[0, :3][..., None])
    with raises_naming("b/2.png", "(3, 4, 1)", "a/1.png", "(5, 4, 1)", "different shapes"):
        read_all(tmp_path)


def test_imagefolder_empty_and_negative_class(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with raises_naming(str(tmp_path), "no samples"):
        read_source(tmp_path)
    write_image(tmp_path / "-1" / "a.png", GREY[0][..., None])
    write_image(tmp_path / "3" / "a.png", GREY[0][..., None])
    (tmp_path / "cat").rmdir()
    with raises_naming("-1", "negative"):
        read_source(tmp_path)
    (tmp_path / "-1" / "a.png").rename(tmp_path / "3" / "b.png")
    (tmp_path / "-1").rmdir()
    write_image(tmp_path / "1000000000" / "a.png", GREY[0][..., None])
    with raises_naming("1000000000", "too large for a class index"):
        read_source(tmp_path)


# --- npz ---------------------------------------------------------------------------------------


def test_npz_single_split(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, x=GREY, y=GREY_LABELS.astype(np.float64))  # float labels 3.0 are fine
    assert detect_format(file) == "npz"

    data = read_all(file, batch_size=3, split="test")

    assert_images_equal(data.images, GREY[..., None])
    np.testing.assert_array_equal(data.labels, GREY_LABELS)
    assert data.splits == ["test"] * 7
    assert data.locators == [f"test:{i}" for i in range(7)]


def test_npz_train_test_colour_and_compressed(tmp_path: Path) -> None:
    colour = RNG.integers(0, 256, size=(4, 3, 2, 3), dtype=np.uint8)
    file = tmp_path / "data.npz"
    np.savez_compressed(
        file, x_train=colour[:3], y_train=np.array([[0], [1], [2]]), x_test=colour[3:], y_test=np.array([5])
    )

    data = read_all(file, batch_size=2)

    assert_images_equal(data.images, colour)
    assert data.labels.tolist() == [0, 1, 2, 5]
    assert data.locators == ["train:0", "train:1", "train:2", "test:0"]


def test_npz_integer_valued_non_uint8_is_cast(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, x=GREY.astype(np.float32), y=GREY_LABELS)
    assert_images_equal(read_all(file).images, GREY[..., None])
    np.savez(file, x=np.asfortranarray(GREY.astype(np.int64)), y=GREY_LABELS)
    assert_images_equal(read_all(file, batch_size=3).images, GREY[..., None])


def test_npz_non_integer_pixels_name_sample(tmp_path: Path) -> None:
    x = GREY.astype(np.float64)
    x[4, 1, 1] = 0.5
    file = tmp_path / "data.npz"
    np.savez(file, x=x, y=GREY_LABELS)
    with raises_naming("data.npz", "x[4]", "0.5"):
        read_all(file, batch_size=2)
    x[4, 1, 1] = 300
    np.savez(file, x=x, y=GREY_LABELS)
    with raises_naming("data.npz", "x[4]", "300"):
        read_all(file)


def test_npz_length_mismatch_names_both_lengths(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, x=GREY, y=GREY_LABELS[:6])
    with raises_naming("data.npz", "7", "6"):
        read_source(file)


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        (np.array([0, 1, 2, 3.5, 0, 0, 0]), ("train:3", "3.5", "not an integer")),
        (np.array([0, 1, 2, 3, 0, -2, 0]), ("train:5", "-2", "negative")),
        (np.array(["0", "1", "cat", "3", "0", "0", "0"]), ("train:2", "cat", "not an integer")),
        # A label is a class index: 1e9 once passed ingest and the run then asked for 512 GB.
        (np.array([0, 1, 2, 3, 0, 0, 10**9]), ("train:6", "1000000000", "too large for a class index", "99999")),
        (np.array([0, 1, 2, 1e9, 0, 0, 0]), ("train:3", "1000000000.0", "too large for a class index")),
        (np.array([0, 1, 2, 3, 0, 0, 2**64 - 1], dtype=np.uint64), ("train:6", "too large for a class index")),
    ],
)
def test_npz_bad_labels_name_index_and_value(tmp_path: Path, labels: np.ndarray, fragments: tuple[str, ...]) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, x=GREY, y=labels)
    with raises_naming("data.npz", *fragments):
        read_source(file)


def test_npz_missing_arrays_and_empty(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, images=GREY, y=GREY_LABELS)
    with raises_naming("data.npz", "images"):
        read_source(file)
    np.savez(file, x=GREY[:0], y=GREY_LABELS[:0])
    with raises_naming("data.npz", "no samples"):
        read_source(file)


# --- tables ------------------------------------------------------------------------------------


def test_parquet_with_image_bytes_and_split_column(tmp_path: Path) -> None:
    file = tmp_path / "data.parquet"
    table = pa.table(
        {
            "img": [encode(image[..., None]) for image in GREY],
            "target": GREY_LABELS.astype(np.int32),
            "split": ["train", "test"] * 3 + ["train"],
        }
    )
    pq.write_table(table, file, row_group_size=3)
    assert detect_format(file) == "table"

    data = read_all(file, batch_size=2)

    assert_images_equal(data.images, GREY[..., None])
    np.testing.assert_array_equal(data.labels, GREY_LABELS)
    assert data.splits == ["train", "test"] * 3 + ["train"]
    assert data.locators == [f"row:{i}" for i in range(7)]


def test_parquet_hugging_face_struct_column(tmp_path: Path) -> None:
    write_image(tmp_path / "pics" / "on_disk.png", GREY[1][..., None])
    file = tmp_path / "data.parquet"
    images = [{"bytes": encode(GREY[0][..., None]), "path": "ignored.png"}, {"bytes": None, "path": "pics/on_disk.png"}]
    pq.write_table(pa.table({"image": images, "label": [4, 5]}), file)

    data = read_all(file)

    assert_images_equal(data.images, GREY[:2][..., None])
    assert data.labels.tolist() == [4, 5]
    assert data.locators == ["row:0", "pics/on_disk.png"]


def test_csv_with_relative_paths_and_custom_columns(tmp_path: Path) -> None:
    colour = RNG.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    for i, image in enumerate(colour):
        write_image(tmp_path / "imgs" / f"{i}.png", image)
    file = tmp_path / "list.csv"
    file.write_text("picture,cls\nimgs/0.png,1\nimgs/1.png,0.0\nimgs/2.png,7\n")

    data = read_all(file, image_column="picture", label_column="cls", split="test")

    assert_images_equal(data.images, colour)
    assert data.labels.tolist() == [1, 0, 7]
    assert data.splits == ["test"] * 3
    assert data.locators == ["imgs/0.png", "imgs/1.png", "imgs/2.png"]


@pytest.mark.parametrize(
    ("label", "fragments"),
    [
        # Names among indices: a stray word in a column of class indices is refused, naming both rows.
        ("cat", ("row:2", "'cat'", "is a class name", "row:0", "all class indices or all class names")),
        ("3.5", ("row:2", "3.5")),
        ("-1", ("row:2", "negative")),
        ("1e9", ("row:2", "'1e9'", "too large for a class index")),
        ("100000", ("row:2", "too large for a class index")),
    ],
)
def test_csv_bad_label_names_row_and_value(tmp_path: Path, label: str, fragments: tuple[str, ...]) -> None:
    write_image(tmp_path / "a.png", GREY[0][..., None])
    file = tmp_path / "list.csv"
    file.write_text(f"path,label\na.png,1\na.png,2\na.png,{label}\n")
    with raises_naming("list.csv", *fragments):
        read_all(file)


def test_table_missing_columns_are_listed(tmp_path: Path) -> None:
    file = tmp_path / "list.csv"
    file.write_text("path,kind\na.png,1\n")
    with raises_naming("list.csv", "label", "'path', 'kind'"):
        read_source(file)
    with raises_naming("list.csv", "picture", "'path', 'kind'"):
        read_source(file, image_column="picture")


def test_table_bad_images_name_row(tmp_path: Path) -> None:
    file = tmp_path / "data.parquet"
    pq.write_table(pa.table({"image": [encode(GREY[0][..., None]), b"garbage"], "label": [0, 1]}), file)
    with raises_naming("data.parquet", "row:1", "corrupt"):
        read_all(file)
    csv = tmp_path / "list.csv"
    csv.write_text("file,y\nmissing.png,0\n")
    with raises_naming("list.csv", "row:0", "missing.png", "does not exist"):
        read_all(csv)


def test_table_bad_split_and_empty(tmp_path: Path) -> None:
    file = tmp_path / "data.parquet"
    pq.write_table(pa.table({"image": [encode(GREY[0][..., None])], "label": [0], "split": ["val"]}), file)
    with raises_naming("data.parquet", "row:0", "'val'"):
        read_all(file)
    csv = tmp_path / "list.csv"
    csv.write_text("image,label\n")
    with raises_naming("list.csv", "no samples"):
        read_all(csv)


# --- paths and formats -------------------------------------------------------------------------


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with raises_naming("nowhere", "no such file"):
        read_source(tmp_path / "nowhere")
    odd = tmp_path / "data.h5"
    odd.write_bytes(b"")
    with raises_naming("data.h5", "format"):
        read_source(odd)
    with raises_naming("data.h5", "'hdf5'"):
        read_source(odd, format="hdf5")
    assert set(FORMATS) == {"idx", "imagefolder", "npz", "table"}


def test_table_options_rejected_for_other_formats(tmp_path: Path) -> None:
    file = tmp_path / "data.npz"
    np.savez(file, x=GREY, y=GREY_LABELS)
    with raises_naming("data.npz", "image_column"):
        read_source(file, image_column="image")


# --- properties --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("sources")
    write_idx(root / "idx", "train", GREY, GREY_LABELS, gz=True)
    write_idx(root / "idx", "t10k", TEST_GREY, TEST_LABELS, gz=False)
    np.savez(root / "data.npz", x_train=GREY, y_train=GREY_LABELS, x_test=TEST_GREY, y_test=TEST_LABELS)
    pq.write_table(
        pa.table({"image": [encode(image[..., None]) for image in GREY], "label": GREY_LABELS}), root / "t.parquet"
    )
    return [root / "idx", root / "data.npz", root / "t.parquet"]


@settings(max_examples=25, deadline=None)
@given(batch_size=st.integers(min_value=1, max_value=12), which=st.integers(min_value=0, max_value=2))
def test_batch_size_does_not_change_output(mixed_sources: list[Path], batch_size: int, which: int) -> None:
    source = mixed_sources[which]
    reference = read_all(source, batch_size=1000)
    batches = list(read_source(source, batch_size=batch_size))
    data = read_all(source, batch_size=batch_size)

    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert data.locators == reference.locators
    assert data.splits == reference.splits
    np.testing.assert_array_equal(data.labels, reference.labels)
    np.testing.assert_array_equal(np.stack(data.images), np.stack(reference.images))
