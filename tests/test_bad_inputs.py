"""Bad input through the command line, as a user types it: exit status 2, one message naming the file,
row, sample or field, and a store exactly as it was (issue 14: "a bad-input table in tests").

One module-scoped data folder holds the digits demo, one completed run with one sample confirmed, one
failed run (a killed run, as the next command marks it) and a dataset of 1x1 images; each case runs
on its own copy of it, so a case that wrongly changes the store cannot spoil the next. The store is
compared as the checksum of every file under the home (SQLite's -wal and -shm files aside) with the
catalog compared by its tables' contents, which a checkpoint may move between the two files. The
commands run in this process through :func:`sanitize.cli.main` (its error mapping included), about
0.1 s each where a fresh process takes 1 s.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import sqlite3
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import select

from sanitize import cli
from sanitize.catalog import QuarantineEntry, Run
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.demo import ingest_demo
from sanitize.ingest.core import arrays_to_batches, ingest_batches
from sanitize.models import build_model, save_torchscript
from sanitize.pipeline import run_cleaning
from sanitize.review import decide
from sanitize.workspace import Workspace

FAILED_RUN = "run-20260101-000000-failed"


@dataclass(frozen=True)
class Demo:
    home: Path
    inputs: Path
    names: dict[str, str]  # what a case's arguments and expected message may name: {run}, {sample}...


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def idx(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


def write_inputs(root: Path) -> None:
    """One malformed file or folder of every format, each named for what is wrong with it."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1])

    def npz(name: str, **arrays: object) -> None:
        np.savez(root / name, **arrays)  # type: ignore[arg-type]

    npz("labels-float.npz", x=images, y=np.array([0.5, 1.0, 0.0, 1.0]))
    npz("labels-negative.npz", x=images, y=np.array([0, -1, 0, 1]))
    npz("labels-1e9.npz", x=images, y=np.array([0, 10**9, 0, 1]))
    npz("pixels-float.npz", x=images.astype(np.float64) * 2, y=labels)
    npz("pixels-two-channels.npz", x=np.zeros((4, 8, 8, 2), np.uint8), y=labels)
    npz("only-x.npz", x=images)
    npz("lengths-differ.npz", x=images, y=labels[:3])
    npz("labels-objects.npz", x=images, y=np.array([0, "cat", 1, None], dtype=object))
    npz("empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    npz("five-by-five.npz", x=np.zeros((4, 5, 5), np.uint8), y=labels)
    (root / "not-a-zip.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (root / "x[").mkdir()
    (root / "x[" / "red].npz").write_bytes(b"PK\x03\x04 this is not a zip archive either")
    npz("x-and-x-train.npz", x=images, y=labels, x_train=images, y_train=labels)
    (root / "notes.txt").write_text("not a dataset\n")

    header = {"magic": 0x00000803, "labels": 0x00000801}
    for name, image_magic, count, data_bytes, label_count in (
        ("idx-bad-magic", 0x00000999, 4, 4 * 64, 4),
        ("idx-truncated", header["magic"], 10, 100, 10),
        ("idx-label-count", header["magic"], 4, 4 * 64, 3),
    ):
        (root / name).mkdir()
        images_file = root / name / "train-images-idx3-ubyte"
        images_file.write_bytes(idx(image_magic, (count, 8, 8), bytes(data_bytes)))
        (root / name / "train-labels-idx1-ubyte").write_bytes(idx(header["labels"], (label_count,), bytes(label_count)))

    def folder(name: str, files: dict[str, bytes]) -> None:
        for rel, data in files.items():
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / name / rel).write_bytes(data)

    (root / "idx-gz-truncated").mkdir()
    whole = gzip.compress(idx(header["magic"], (4, 8, 8), bytes(4 * 64)))
    (root / "idx-gz-truncated" / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    (root / "idx-gz-truncated" / "train-labels-idx1-ubyte").write_bytes(idx(header["labels"], (4,), bytes(4)))

    ppm = io.BytesIO()
    Image.fromarray(images[1]).save(ppm, format="PPM")
    folder("if-corrupt", {"0/a.png": png(images[0]), "1/b.png": b"\x89PNG\r\n\x1a\n but then nothing"})
    folder("if-disguised", {"0/a.png": png(images[0]), "1/b.png": ppm.getvalue()})
    folder("if-mixed-shapes", {"0/a.png": png(images[0]), "1/b.png": png(np.zeros((9, 9), np.uint8))})
    folder("if-empty", {"0/readme.txt": b"no images here"})
    folder("if-negative-class", {"0/a.png": png(images[0]), "-3/b.png": png(images[1])})
    folder("if-markup", {"0/a.png": png(images[0]), "1/[bold]b[/red].png": b"not an image"})

    (root / "ok.png").write_bytes(png(images[0]))
    ok = str(root / "ok.png")
    pd.DataFrame({"image": [ok, ok], "label": ["cat", "dog"]}).to_csv(root / "labels-text.csv", index=False)
    pd.DataFrame({"image": [ok, ok], "label": ["3", "cat"]}).to_csv(root / "labels-mixed.csv", index=False)
    pd.DataFrame({"image": [ok, ok], "label": ["cat", "big/cat"]}).to_csv(root / "labels-slash.csv", index=False)
    pd.DataFrame({"image": [ok, ok]}).to_csv(root / "no-label-column.csv", index=False)
    pd.DataFrame({"image": [ok, str(root / "gone.png")], "label": [0, 1]}).to_csv(
        root / "image-path-gone.csv", index=False
    )
    pd.DataFrame({"image": [ok, ok], "label": [0, 10**9]}).to_csv(root / "labels-1e9.csv", index=False)
    pd.DataFrame({"image": [ok, ok], "label": [0, 1], "split": ["train", "valid"]}).to_csv(
        root / "split-valid.csv", index=False
    )
    pd.DataFrame({"image": [ok, ok], "label": [0, 1]}).to_csv(root / "good.csv", index=False)
    (root / "header-only.csv").write_text("image,label\n")
    pd.DataFrame({"label": [0, 1]}).to_parquet(root / "no-image-column.parquet")
    pd.DataFrame({"image": [b"not an image", png(images[1])], "label": [0, 1]}).to_parquet(
        root / "image-bytes-garbage.parquet"
    )
    pd.DataFrame({"image": [png(images[0]), png(images[1])], "label": [0, -3]}).to_parquet(
        root / "labels-negative.parquet"
    )
    (root / "not-parquet.parquet").write_bytes(b"PAR1 but nothing after")

    # A user's TorchScript model of the package's CNN with 3 outputs, for the 10 digit classes.
    save_torchscript(build_model("cnn", in_channels=1, n_classes=3), root / "three-outputs.pt", images[..., None])
    (root / "export-here").mkdir()
    (root / "export-here" / "keep.txt").write_text("someone's file\n")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The digits demo ingested, one completed run (red team, no retraining) with one sample confirmed,
    one failed run, and a dataset of 1x1 images."""
    home = tmp_path_factory.mktemp("bad-inputs-home")
    inputs = tmp_path_factory.mktemp("bad-inputs")
    write_inputs(inputs)
    ws = Workspace(Settings(home=home, catalog_url=None))
    ingest_demo(ws, "digits-demo")
    result = run_cleaning(RunConfig(redteam=RedTeamConfig(), retrain=False), ws, progress=False)
    tiny = np.arange(12, dtype=np.uint8).reshape(12, 1, 1) * 20
    ingest_batches(
        ws.catalog,
        ws.store,
        dataset="tiny",
        batches=arrays_to_batches(tiny, np.arange(12) % 2, "train"),
        source="s",
        uri="arrays",
        fmt="arrays",
    )
    with ws.catalog.session() as s:
        completed = ws.catalog.run(s, result.run_id)
        s.add(
            Run(
                id=FAILED_RUN,
                dataset=completed.dataset,
                version_id=completed.version_id,
                status="failed",
                config=completed.config,
                config_fingerprint=completed.config_fingerprint,
                error="interrupted: its process is gone",
            )
        )
        confirmed, sample = s.scalars(
            select(QuarantineEntry.sample_id)
            .where(QuarantineEntry.run_id == result.run_id)
            .order_by(QuarantineEntry.sample_id)
            .limit(2)
        ).all()
        clean = completed.clean_version_id
    decide(ws, result.run_id, [confirmed], "confirm", reviewer="ana", note="a patch")
    ws.catalog.dispose()
    assert clean is not None
    names = {
        "inputs": str(inputs),
        "run": result.run_id,
        "failed": FAILED_RUN,
        "sample": sample,
        "confirmed": confirmed,
        "clean": clean,
        "long300": "d" * 300,
        "long5000": "d" * 5000,
    }
    return Demo(home, inputs, names)


def store_state(home: Path) -> dict[str, str]:
    """Every file's checksum under ``home``; the catalog as the contents of its tables.

    Folders are left out: a refused ingest into a new dataset leaves its empty ``datasets/NAME/ingests``
    (the store makes it before the first sample is read), which holds no data.
    """
    state: dict[str, str] = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.name.startswith("catalog.db"):
            state[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(home / "catalog.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
            state[f"catalog:{table}"] = hashlib.sha256(repr(rows).encode()).hexdigest()
    db.close()
    return state


def squeeze(text: str) -> str:
    """Terminal output without its wrapping and the boxes click's errors come in."""
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


def sanitize(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """``sanitize ARGS`` in this process, through :func:`sanitize.cli.main`: its exit status and output."""
    monkeypatch.setattr(sys, "argv", ["sanitize", *args])
    code: int | str | None
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    except Exception:  # what a user would see as a traceback and exit status 1
        code, trace = 1, traceback.format_exc()
        print(trace, file=sys.stderr)
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 1), captured.out + captured.err


def case(name: str, args: str | list[str], *names: str, marks: tuple[pytest.MarkDecorator, ...] = ()) -> object:
    """A row: what the user types (split on spaces unless given as a list) and what the message must name."""
    argv = args.split() if isinstance(args, str) else args
    return pytest.param(argv, names, id=name, marks=marks)


IN = "{inputs}"  # where the malformed files are; filled in with the rest of Demo.names
CASES = [
    # --- ingest: files of every format that are not what they claim -----------------------------------
    case("idx bad magic", f"ingest {IN}/idx-bad-magic --dataset shop --source s", "train-images-idx3-ubyte", "magic"),
    case("idx truncated", f"ingest {IN}/idx-truncated --dataset shop --source s", "idx-truncated", "truncated"),
    case("idx label count", f"ingest {IN}/idx-label-count --dataset shop --source s", "4 images", "3 labels"),
    case("image corrupt", f"ingest {IN}/if-corrupt --dataset shop --source s", "if-corrupt/1/b.png", "corrupt"),
    case("image disguised", f"ingest {IN}/if-disguised --dataset shop --source s", "if-disguised/1/b.png", "PNG"),
    case("image mixed shapes", f"ingest {IN}/if-mixed-shapes --dataset shop --source s", "b.png", "shape"),
    case("idx gz truncated", f"ingest {IN}/idx-gz-truncated --dataset shop --source s", "train-images-idx3-ubyte.gz"),
    case("image negative class", f"ingest {IN}/if-negative-class --dataset shop --source s", "-3", "negative"),
    case("image markup name", f"ingest {IN}/if-markup --dataset shop --source s", "1/[bold]b[/red].png"),
    case("image folder empty", f"ingest {IN}/if-empty --dataset shop --source s", "if-empty", "no samples"),
    case("npz float labels", f"ingest {IN}/labels-float.npz --dataset shop --source s", "labels-float.npz", "label"),
    case("npz negative label", f"ingest {IN}/labels-negative.npz --dataset shop --source s", "labels-negative.npz"),
    case("npz label 1e9", f"ingest {IN}/labels-1e9.npz --dataset shop --source s", "labels-1e9.npz", "1000000000"),
    case("npz float pixels", f"ingest {IN}/pixels-float.npz --dataset shop --source s", "pixels-float.npz", "uint8"),
    case("npz two channels", f"ingest {IN}/pixels-two-channels.npz --dataset shop --source s", "(4, 8, 8, 2)"),
    case("npz missing y", f"ingest {IN}/only-x.npz --dataset shop --source s", "only-x.npz", "'y'"),
    case("npz lengths differ", f"ingest {IN}/lengths-differ.npz --dataset shop --source s", "lengths-differ.npz"),
    case("npz object labels", f"ingest {IN}/labels-objects.npz --dataset shop --source s", "labels-objects.npz"),
    case("npz ambiguous", f"ingest {IN}/x-and-x-train.npz --dataset shop --source s", "'x_train'", "ambiguous"),
    case("npz empty", f"ingest {IN}/empty.npz --dataset shop --source s", "empty.npz", "no samples"),
    case("npz not a zip", f"ingest {IN}/not-a-zip.npz --dataset shop --source s", "not-a-zip.npz", ".npz"),
    case(
        "shape of the dataset",
        f"ingest {IN}/five-by-five.npz --dataset digits-demo --source other",
        "five-by-five.npz",
        "(8, 8, 1)",
    ),
    case(
        "csv names and indices",
        f"ingest {IN}/labels-mixed.csv --dataset shop --source s",
        "labels-mixed.csv",
        "row:1",
        "'cat'",
        "row:0",
        "all class indices or all class names",
    ),
    case(
        "csv names into an unnamed dataset",
        f"ingest {IN}/labels-text.csv --dataset digits-demo --source s",
        "labels-text.csv",
        "0=cat, 1=dog",
        "class indices without names",
    ),
    case("csv class name with a slash", f"ingest {IN}/labels-slash.csv --dataset shop --source s", "'big/cat'"),
    case("csv no label column", f"ingest {IN}/no-label-column.csv --dataset shop --source s", "no label column"),
    case("csv image gone", f"ingest {IN}/image-path-gone.csv --dataset shop --source s", "gone.png", "does not exist"),
    case("csv label 1e9", f"ingest {IN}/labels-1e9.csv --dataset shop --source s", "labels-1e9.csv", "1000000000"),
    case("csv split valid", f"ingest {IN}/split-valid.csv --dataset shop --source s", "split-valid.csv", "'valid'"),
    case("csv header only", f"ingest {IN}/header-only.csv --dataset shop --source s", "header-only.csv", "no samples"),
    case(
        "csv image column named wrong",
        f"ingest {IN}/good.csv --dataset shop --source s --image-column picture",
        "good.csv",
        "'picture'",
    ),
    case("parquet no image column", f"ingest {IN}/no-image-column.parquet --dataset shop --source s", "image column"),
    case(
        "parquet image bytes garbage",
        f"ingest {IN}/image-bytes-garbage.parquet --dataset shop --source s",
        "image-bytes-garbage.parquet",
        "row:0",
    ),
    case(
        "parquet negative label",
        f"ingest {IN}/labels-negative.parquet --dataset shop --source s",
        "labels-negative.parquet",
        "row:1",
    ),
    case("parquet not parquet", f"ingest {IN}/not-parquet.parquet --dataset shop --source s", "not-parquet.parquet"),
    case("unknown suffix", f"ingest {IN}/notes.txt --dataset shop --source s", "notes.txt", "format"),
    case("unknown format option", f"ingest {IN}/good.csv --dataset shop --source s --format xls", "'xls'"),
    case("table options on npz", f"ingest {IN}/empty.npz --dataset shop --source s --label-column y", "tables"),
    case("split option", f"ingest {IN}/good.csv --dataset shop --source s --split valid", "split", "valid"),
    case("missing path", f"ingest {IN}/gone.npz --dataset shop --source s", "gone.npz", "no such file"),
    case("markup in a missing path", ["ingest", "gone[/red].npz", "--dataset", "shop", "--source", "s"], "gone[/red]"),
    case("markup in a corrupt path", f"ingest {IN}/x[/red].npz --dataset shop --source s", "x[/red].npz"),
    case("dataset name 300", f"ingest {IN}/good.csv --dataset {{long300}} --source s", "dataset name", "limit is 100"),
    case("dataset name 5000", f"ingest {IN}/good.csv --dataset {{long5000}} --source s", "dataset name", "100"),
    case("dataset name path", f"ingest {IN}/good.csv --dataset ../etc --source s", "dataset name '../etc'"),
    case("source name 300", f"ingest {IN}/good.csv --dataset shop --source {{long300}}", "source name", "limit is 100"),
    case("source name characters", [*f"ingest {IN}/good.csv --dataset shop".split(), "--source", "a b!"], "'a b!'"),
    # --- run: options out of range, things that do not exist, a model that does not fit -------------------
    case("run unknown dataset", "run --dataset nosuch", "unknown dataset 'nosuch'"),
    case("run unknown version", "run --dataset digits-demo --version vnope", "vnope"),
    case("run dataset name 300", "run --dataset {long300}", "--dataset", "at most 100 characters"),
    case("run rate", "run --dataset digits-demo --poison badnets --rate 0.9", "--rate", "less than 0.5"),
    case("run attack", "run --dataset digits-demo --poison nosuch", "--poison", "'badnets'"),
    case("run epochs", "run --dataset digits-demo --epochs 0", "--epochs", "greater than or equal to 1"),
    case("run contamination", "run --dataset digits-demo --contamination 0.7", "--contamination"),
    case("run device", "run --dataset digits-demo --device tpu", "--device", "'tpu'"),
    case("run arch", "run --dataset digits-demo --arch vgg", "--arch", "'vgg'"),
    case("run augmentation", "run --dataset digits-demo --retrain-augment blur", "retrain_augment", "'warp'"),
    case("run unknown option", "run --dataset digits-demo --epoch 3", "--epoch"),
    case(
        "run model gone",
        f"run --dataset digits-demo --model {IN}/gone.pt --feature-layer embed",
        "gone.pt",
    ),
    case(
        "run model without layer",
        f"run --dataset digits-demo --model {IN}/three-outputs.pt",
        "model: a TorchScript model needs feature_layer",
    ),
    case(
        "run model wrong outputs",
        f"run --dataset digits-demo --model {IN}/three-outputs.pt --feature-layer embed",
        "gives 3 outputs per image",
        "has 10 classes",
    ),
    case(
        "run model unknown layer",
        f"run --dataset digits-demo --model {IN}/three-outputs.pt --feature-layer nosuch",
        "three-outputs.pt has no layer 'nosuch'",
    ),
    case("run images too small", "run --dataset tiny", "1x1"),
    case("run red-team target no class", "run --dataset digits-demo --poison badnets --target 10", "target", "10"),
    # --- quarantine decisions ---------------------------------------------------------------------
    case("list unknown run", "quarantine list --run run-nope", "unknown run 'run-nope'"),
    case("list unknown status", "quarantine list --status bogus", "'bogus'"),
    case("list unknown format", "quarantine list --format xml", "--format", "'xml'"),
    case("confirm unknown sample", "quarantine confirm s-nope --run {run}", "sample s-nope", "{run}"),
    case("confirm unknown run", "quarantine confirm {sample} --run run-nope", "unknown run 'run-nope'"),
    case("relabel to 99", "quarantine relabel {sample} --run {run} --label 99", "99"),
    case("relabel to -5", "quarantine relabel {sample} --run {run} --label -5", "-5"),
    case("decide on a failed run", "quarantine confirm {sample} --run {failed}", "{failed}", "not completed"),
    case("conflicting decision", "quarantine release {confirmed} --run {run}", "{confirmed}", "already confirmed"),
    case("reviewer name 300", "quarantine release {sample} --run {run} --reviewer {long300}", "reviewer name"),
    case("release nothing", "quarantine release --run {run}", "Missing argument 'sample_ids'"),
    # --- export, lineage, show and the rest --------------------------------------------------------
    case("export unknown version", f"export cnope --out {IN}/out", "unknown dataset version 'cnope'"),
    case("export format", f"export {{clean}} --out {IN}/out --format tar", "--format", "'tar'"),
    case(
        "export into a non-empty folder",
        f"export {{clean}} --out {IN}/export-here --format imagefolder",
        "export-here",
    ),
    case("lineage unknown version", "lineage vnope", "'vnope'"),
    case("show unknown run", "show run-nope", "unknown run 'run-nope'"),
    case("show a failed run", "show {failed}", "{failed}", "did not complete"),
    case("versions unknown dataset", "versions nosuch", "unknown dataset 'nosuch'"),
    case("unschedule unknown", "unschedule nosuch", "'nosuch'"),
    case(
        "schedule bad cron",
        ["schedule", "--dataset", "digits-demo", "--cron", "61 * * * *", "--no-serve"],
        "minute 61 is outside 0-59",
    ),
    case("schedule no timing", "schedule --dataset digits-demo --no-serve", "one of a cron expression and an interval"),
    case("reviewer bad name", ["reviewer", "add", "bad name!"], "'bad name!'"),
    case("reviewer revoke unknown", "reviewer revoke nosuch", "nosuch"),
    case("gc negative age", "gc --older-than -1", "--older-than"),
]


@pytest.mark.parametrize(("argv", "named"), CASES)
def test_bad_input_exits_2_naming_it_and_changes_nothing(
    argv: list[str],
    named: tuple[str, ...],
    demo: Demo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo.home, home)
    monkeypatch.setenv("SANITIZE_HOME", str(home))
    monkeypatch.setenv("SANITIZE_REVIEWER", "ana")
    inputs_before = store_state_of_files(demo.inputs)
    before = store_state(home)

    code, output = sanitize([arg.format_map(demo.names) for arg in argv], capsys, monkeypatch)

    assert code == 2, output
    assert "Traceback" not in output, output
    assert "validation error" not in output and "errors.pydantic.dev" not in output, output  # one line, not a dump
    for name in named:
        assert squeeze(name.format_map(demo.names)) in squeeze(output), output
    assert changes(before, store_state(home)) == {}
    assert changes(inputs_before, store_state_of_files(demo.inputs)) == {}


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """What differs, by path: ``added``, ``removed`` or ``changed``."""
    return {
        path: "added" if path not in before else "removed" if path not in after else "changed"
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    }


def store_state_of_files(root: Path) -> dict[str, str]:
    """The inputs' checksums: a refused command leaves the user's files alone too."""
    return {
        str(p.relative_to(root)): "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def test_the_table_has_at_least_40_kinds() -> None:
    assert len(CASES) >= 40
