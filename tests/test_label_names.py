"""Labels have names: class folders, string labels and npz ``class_names`` are mapped through one
recorded, versioned label map per dataset, shared by its sources; every export carries the names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import select

from sanitize.catalog import AuditRecord, Ingest, LabelMap
from sanitize.data import CleanDataset
from sanitize.errors import InputError
from sanitize.export import copy_out, export_clean_version
from sanitize.ingest.core import IngestReport, ingest_path
from sanitize.ingest.readers import read_source
from sanitize.store import Manifest
from sanitize.versions import publish_version
from sanitize.workspace import Workspace

SIZE = 8


def image(seed: int, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, channels), dtype=np.uint8)


def png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)
    return path


def folder(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """An image folder with ``classes[name]`` distinct images per class folder."""
    for c, (name, n) in enumerate(sorted(classes.items())):
        for i in range(n):
            png(root / name / f"{i}.png", image(seed * 1000 + c * 100 + i))
    return root


def ingest(ws: Workspace, path: Path, source: str, dataset: str = "pets", **kw: object) -> IngestReport:
    return ingest_path(ws.catalog, ws.store, dataset=dataset, path=path, source=source, **kw)  # type: ignore[arg-type]


def labels_by_folder(ws: Workspace, report: IngestReport) -> dict[str, set[int]]:
    """Class folder (a locator's first part) -> the labels its samples were stored with."""
    with ws.catalog.session() as s:
        file = s.get(Ingest, report.ingest_id).file  # type: ignore[union-attr]
    t = pq.read_table(ws.store.home / file, columns=["label", "locator"]).to_pydict()
    out: dict[str, set[int]] = {}
    for label, locator in zip(t["label"], t["locator"], strict=True):
        out.setdefault(locator.split("/")[0], set()).add(label)
    return out


def manifest(ws: Workspace, report: IngestReport) -> Manifest:
    return ws.store.manifest(report.dataset, report.version_id)


# --- readers ---------------------------------------------------------------------------------------


def test_imagefolder_batches_carry_sorted_folder_names(tmp_path: Path) -> None:
    root = folder(tmp_path / "src", {"dog": 1, "cat": 2})
    batches = list(read_source(root))
    assert batches[0].class_names == ("cat", "dog")
    assert batches[0].labels.tolist() == [0, 0, 1]


def test_integer_folders_stay_class_indices(tmp_path: Path) -> None:
    root = folder(tmp_path / "src", {"3": 1, "7": 1})
    (batch,) = read_source(root)
    assert batch.class_names is None and batch.labels.tolist() == [3, 7]


def test_table_string_labels_are_names_numbered_by_sorted_name(tmp_path: Path) -> None:
    paths = [png(tmp_path / f"{i}.png", image(i)).name for i in range(3)]
    pd.DataFrame({"image": paths, "label": [" dog", "cat", "dog"]}).to_csv(tmp_path / "t.csv", index=False)
    (batch,) = read_source(tmp_path / "t.csv")
    assert batch.class_names == ("cat", "dog")
    assert batch.labels.tolist() == [1, 0, 1]  # names are trimmed; row order does not decide the index


def test_parquet_integer_strings_stay_indices(tmp_path: Path) -> None:
    paths = [png(tmp_path / f"{i}.png", image(i)).name for i in range(2)]
    pd.DataFrame({"image": paths, "label": ["4", "2"]}).to_parquet(tmp_path / "t.parquet")
    (batch,) = read_source(tmp_path / "t.parquet")
    assert batch.class_names is None and batch.labels.tolist() == [4, 2]


def test_npz_class_names(tmp_path: Path) -> None:
    x = np.stack([image(i)[..., 0] for i in range(3)])
    np.savez(tmp_path / "a.npz", x=x, y=np.array([1, 0, 1]), class_names=np.array(["zebra", "ant"]))
    (batch,) = read_source(tmp_path / "a.npz")
    assert batch.class_names == ("zebra", "ant") and batch.labels.tolist() == [1, 0, 1]
    # Names that are indices (an unnamed dataset's export) are indices.
    np.savez(tmp_path / "b.npz", x=x, y=np.array([1, 0, 1]), class_names=np.array(["5", "2"]))
    (batch,) = read_source(tmp_path / "b.npz")
    assert batch.class_names is None and batch.labels.tolist() == [2, 5, 2]


@pytest.mark.parametrize(
    ("names", "y", "fragments"),
    [
        (["cat", "cat"], [0, 1, 1], ("class_names[0] and [1]", "'cat'")),
        (["cat"], [0, 1, 0], ("train:1", "label 1 has no name")),
        (["cat", ".hidden"], [0, 1, 0], ("class_names[1]", "starts with '.'")),
        (["cat", "x" * 101], [0, 1, 0], ("class_names[1]", "101 characters")),
    ],
)
def test_npz_bad_class_names_are_refused(tmp_path: Path, names: list[str], y: list[int], fragments: tuple) -> None:
    x = np.stack([image(i)[..., 0] for i in range(3)])
    np.savez(tmp_path / "a.npz", x=x, y=np.array(y), class_names=np.array(names))
    with pytest.raises(InputError) as info:
        list(read_source(tmp_path / "a.npz"))
    for fragment in ("a.npz", *fragments):
        assert fragment in str(info.value)


# --- the label map ---------------------------------------------------------------------------------


def test_sources_share_one_map_by_name(workspace: Workspace, tmp_path: Path) -> None:
    a = ingest(workspace, folder(tmp_path / "a", {"bird": 2, "cat": 2, "dog": 2}), "vendor-a")
    assert a.class_names == ("bird", "cat", "dog") and a.label_map_version == 1
    assert a.new_classes == ["bird", "cat", "dog"]  # the first source makes the map
    # vendor-b has only two of the classes: sorted within itself they would be 0 and 1.
    b = ingest(workspace, folder(tmp_path / "b", {"cat": 2, "dog": 2}, seed=1), "vendor-b")
    assert labels_by_folder(workspace, b) == {"cat": {1}, "dog": {2}}
    assert b.class_names == ("bird", "cat", "dog") and b.label_map_version == 1 and b.new_classes == []
    m = manifest(workspace, b)
    assert m.class_names == ("bird", "cat", "dog") and m.label_map_version == 1
    assert m.classes == (0, 1, 2)
    with workspace.catalog.session() as s:
        assert [row.version for row in s.scalars(select(LabelMap))] == [1]


def test_a_new_name_is_appended_as_a_new_label_and_map_version(workspace: Workspace, tmp_path: Path) -> None:
    ingest(workspace, folder(tmp_path / "a", {"cat": 2, "dog": 2}), "vendor-a")
    # "ant" sorts first, but takes the next index: no earlier label changes meaning.
    c = ingest(workspace, folder(tmp_path / "c", {"ant": 2, "dog": 2}, seed=2), "vendor-c")
    assert c.new_classes == ["ant"] and c.label_map_version == 2
    assert c.class_names == ("cat", "dog", "ant")
    assert labels_by_folder(workspace, c) == {"ant": {2}, "dog": {1}}
    with workspace.catalog.session() as s:
        maps = [(row.version, row.names, row.source) for row in s.scalars(select(LabelMap).order_by(LabelMap.version))]
        audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "labels.map")).all()
    assert maps == [(1, ["cat", "dog"], "vendor-a"), (2, ["cat", "dog", "ant"], "vendor-c")]
    assert [r.detail["added"] for r in audit] == [{"0": "cat", "1": "dog"}, {"2": "ant"}]


def test_table_and_npz_sources_join_a_folder_dataset_by_name(workspace: Workspace, tmp_path: Path) -> None:
    ingest(workspace, folder(tmp_path / "a", {"cat": 2, "dog": 2}), "vendor-a")
    paths = [png(tmp_path / "t" / f"{i}.png", image(500 + i)).name for i in range(2)]
    pd.DataFrame({"image": paths, "label": ["dog", "dog"]}).to_csv(tmp_path / "t" / "t.csv", index=False)
    table = ingest(workspace, tmp_path / "t" / "t.csv", "vendor-t")
    assert sorted(table.class_counts) == [1]
    x = np.stack([image(600 + i)[..., 0] for i in range(2)])
    np.savez(tmp_path / "n.npz", x=x, y=np.array([0, 1]), class_names=np.array(["dog", "cat"]))
    arrays = ingest(workspace, tmp_path / "n.npz", "vendor-n")
    assert arrays.class_counts == {0: 1, 1: 1} and arrays.label_map_version == 1


def test_a_source_sharing_no_name_is_refused_unless_new_classes(workspace: Workspace, tmp_path: Path) -> None:
    first = ingest(workspace, folder(tmp_path / "a", {"cat": 2, "dog": 2}), "vendor-a")
    other = folder(tmp_path / "w", {"n02084071": 2, "n02121808": 2}, seed=3)
    with pytest.raises(InputError) as info:
        ingest(workspace, other, "vendor-w")
    message = str(info.value)
    for fragment in (str(other), "n02084071, n02121808", "0=cat, 1=dog", "--new-classes"):
        assert fragment in message
    with workspace.catalog.session() as s:
        assert s.scalars(select(Ingest.source).where(Ingest.source == "vendor-w")).all() == []
        assert workspace.catalog.dataset(s, "pets").current_version == first.version_id
    assert not list((workspace.store.dataset_dir("pets") / "ingests").glob(".*"))  # no temporary left
    added = ingest(workspace, other, "vendor-w", new_classes=True)
    assert added.new_classes == ["n02084071", "n02121808"] and added.label_map_version == 2


def test_a_name_differing_only_in_case_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    ingest(workspace, folder(tmp_path / "a", {"cat": 2, "dog": 2}), "vendor-a")
    with pytest.raises(InputError, match="class 'Cat' differs only in case or spacing from class 'cat'"):
        ingest(workspace, folder(tmp_path / "b", {"Cat": 2, "dog": 2}, seed=4), "vendor-b")


def test_indices_and_names_do_not_mix_in_one_dataset(workspace: Workspace, tmp_path: Path) -> None:
    ingest(workspace, folder(tmp_path / "a", {"cat": 2, "dog": 2}), "vendor-a")
    x = np.stack([image(700 + i)[..., 0] for i in range(2)])
    np.savez(tmp_path / "plain.npz", x=x, y=np.array([0, 1]))
    # Indices into a named dataset are its map's indices (a table beside image folders, as README says).
    ingest(workspace, tmp_path / "plain.npz", "vendor-n")
    np.savez(tmp_path / "beyond.npz", x=x, y=np.array([0, 2]))
    with pytest.raises(InputError, match=r"label 2 is not a class of dataset 'pets', which names 2 classes"):
        ingest(workspace, tmp_path / "beyond.npz", "vendor-m")
    ingest(workspace, tmp_path / "plain.npz", "vendor-n", dataset="digits")
    with pytest.raises(InputError, match=r"dataset 'digits' has class indices without names \(sources vendor-n: npz"):
        ingest(workspace, folder(tmp_path / "b", {"cat": 2, "dog": 2}, seed=5), "vendor-b", dataset="digits")


def test_unnamed_sources_record_no_map(workspace: Workspace, tmp_path: Path) -> None:
    report = ingest(workspace, folder(tmp_path / "a", {"0": 2, "1": 2}), "vendor-a")
    assert report.class_names is None and report.label_map_version is None
    m = manifest(workspace, report)
    assert m.class_names is None and "class_names" not in m.to_json()
    assert workspace.store.class_names(m) == ("0", "1")


def test_a_dataset_from_before_names_keeps_its_labels(workspace: Workspace, tmp_path: Path) -> None:
    """A home whose image folders were ingested before maps were recorded: no map, labels by sorted
    name. A named source joining it takes the names the old labels meant."""
    old = ingest(workspace, folder(tmp_path / "a", {"bird": 2, "cat": 2, "dog": 2}), "vendor-a")
    with workspace.catalog.session() as s:  # what an older release left: no map, no names in manifests
        for row in s.scalars(select(LabelMap)):
            s.delete(row)
    path = workspace.store.manifest_path("pets", old.version_id)
    legacy = json.loads(path.read_text())
    legacy.pop("class_names"), legacy.pop("label_map_version")
    path.write_text(json.dumps(legacy))
    assert workspace.store.class_names(workspace.store.manifest("pets", old.version_id)) == ("0", "1", "2")

    b = ingest(workspace, folder(tmp_path / "b", {"dog": 2}, seed=6), "vendor-b")
    assert labels_by_folder(workspace, b) == {"dog": {2}}
    assert b.class_names == ("bird", "cat", "dog") and b.label_map_version == 1


# --- exports and readers of versions ---------------------------------------------------------------


@pytest.fixture
def pets(workspace: Workspace, tmp_path: Path) -> str:
    """A named dataset of two sources, the second with a subset of the classes; its version id."""
    ingest(workspace, folder(tmp_path / "a", {"bird": 2, "cat": 2, "dog": 2}), "vendor-a")
    return ingest(workspace, folder(tmp_path / "b", {"dog": 2}, seed=1), "vendor-b").version_id


def test_parquet_export_carries_label_name_and_the_manifest_the_names(
    workspace: Workspace, pets: str, tmp_path: Path
) -> None:
    copy_out(workspace, pets, tmp_path / "out", "parquet")
    t = pq.read_table(tmp_path / "out" / "train.parquet").to_pydict()
    names = {"bird": 0, "cat": 1, "dog": 2}
    assert all(names[name] == label for name, label in zip(t["label_name"], t["label"], strict=True))
    assert sorted(set(t["label_name"])) == ["bird", "cat", "dog"]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["class_names"] == ["bird", "cat", "dog"] and m["label_map_version"] == 1


def test_npz_and_image_folder_exports_use_the_names_and_ingest_back(
    workspace: Workspace, pets: str, tmp_path: Path
) -> None:
    (npz_file, _) = copy_out(workspace, pets, tmp_path / "npz", "npz")
    with np.load(npz_file) as z:
        assert z["class_names"].tolist() == ["bird", "cat", "dog"]
        assert sorted(set(z["y_train"].tolist())) == [0, 1, 2]
    copy_out(workspace, pets, tmp_path / "folders", "imagefolder")
    assert sorted(p.name for p in (tmp_path / "folders" / "train").iterdir()) == ["bird", "cat", "dog"]
    assert len(list((tmp_path / "folders" / "train" / "dog").iterdir())) == 4
    # Read back, the same images keep the same class names, in a new dataset and in this one.
    again = ingest(workspace, tmp_path / "folders", "export", dataset="pets-again")
    assert again.class_names == ("bird", "cat", "dog") and again.class_counts == {0: 2, 1: 2, 2: 4}
    back = ingest(workspace, npz_file, "vendor-npz")
    assert back.new_classes == [] and back.class_counts == {0: 2, 1: 2, 2: 4}


def test_unnamed_exports_write_integer_names(workspace: Workspace, tmp_path: Path) -> None:
    report = ingest(workspace, folder(tmp_path / "a", {"0": 2, "2": 2}), "vendor-a", dataset="digits")
    (npz_file, manifest_file) = copy_out(workspace, report.version_id, tmp_path / "npz", "npz")
    with np.load(npz_file) as z:
        assert z["class_names"].tolist() == ["0", "1", "2"]
    assert json.loads(manifest_file.read_text())["class_names"] == ["0", "1", "2"]
    copy_out(workspace, report.version_id, tmp_path / "folders", "imagefolder")
    assert sorted(p.name for p in (tmp_path / "folders" / "train").iterdir()) == ["0", "2"]
    # The npz's integer names are indices again: it joins its own dataset.
    assert ingest(workspace, npz_file, "again", dataset="digits").class_names is None


def test_clean_version_of_a_red_team_copy_takes_the_names_and_clean_dataset_shows_them(
    workspace: Workspace, pets: str
) -> None:
    parent = workspace.store.manifest("pets", pets)
    # A red-team copy records no names (sanitize.evaluate.redteam does not): they come from its parent.
    redteam = Manifest(
        version_id="vredteamcopy0001",
        dataset="pets",
        kind="redteam",
        files=parent.files,
        n_train=parent.n_train,
        n_test=parent.n_test,
        height=parent.height,
        width=parent.width,
        channels=parent.channels,
        classes=parent.classes,
        parent_id=pets,
    )
    with workspace.catalog.session() as s:
        publish_version(s, workspace.store, redteam)
    assert workspace.store.class_names(redteam) == ("bird", "cat", "dog")
    vid = export_clean_version(workspace, "pets", redteam.version_id, "run-x", set(), {})
    clean = workspace.store.manifest("pets", vid)
    assert clean.class_names == ("bird", "cat", "dog") and clean.label_map_version == 1
    ds = CleanDataset(vid)
    assert ds.classes == ["bird", "cat", "dog"] and ds.class_to_idx["dog"] == 2
    assert ds.classes[ds[len(ds) - 1][1]] == "dog"


# --- pages and CLI tables show the names -----------------------------------------------------------

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def named_run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The shared red-team demo run, its digits given names as a label map would have recorded them
    (on the ingested version; the red-team copy the run cleaned records none, as in a real run)."""
    from web_support import copy_of, demo_run

    home, run_id = demo_run(tmp_path_factory)
    ws = copy_of(home, tmp_path / "home")
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        dataset, version = run.dataset, run.version_id
    redteam = ws.store.manifest(dataset, version)
    assert redteam.class_names is None and redteam.parent_id
    path = ws.store.manifest_path(dataset, redteam.parent_id)
    record = json.loads(path.read_text())
    record["class_names"], record["label_map_version"] = DIGIT_NAMES, 1
    path.write_text(json.dumps(record))
    monkeypatch.setenv("SANITIZE_HOME", str(ws.store.home))
    monkeypatch.delenv("SANITIZE_CATALOG_URL", raising=False)
    return ws, run_id


def test_review_pages_show_class_names(named_run: tuple[Workspace, str]) -> None:
    from fastapi.testclient import TestClient

    from sanitize.web.app import create_app

    ws, run_id = named_run
    client = TestClient(create_app(ws), base_url=LOCAL)
    run_page = client.get(f"/runs/{run_id}").text
    assert "zero (0)" in run_page and "nine (9)" in run_page
    assert "target class zero (0)" in run_page
    quarantine = client.get(f"/runs/{run_id}/quarantine").text
    assert "class zero (0)" in quarantine and '<option value="3">three (3)</option>' in quarantine
    samples = client.get(f"/runs/{run_id}/samples").text
    assert '<b class="label" title="label' in samples and ">zero</b>" in samples
    sample_id = re.findall(r'data-sample="([0-9a-f]{20})"', quarantine)[0]
    sample = client.get(f"/runs/{run_id}/samples/{sample_id}").text
    assert 'given label <b id="given-label">zero (0)</b>' in sample
    assert "class zero (0): " in client.get(f"/runs/{run_id}/trigger").text
    assert "class zero (0): " in client.get(f"/runs/{run_id}/pictures").text


def test_cli_quarantine_list_and_relabel_take_and_show_names(
    named_run: tuple[Workspace, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from sanitize.cli import app

    ws, run_id = named_run
    runner = CliRunner()
    listed = runner.invoke(app, ["quarantine", "list", "--run", run_id, "--format", "json", "--label", "zero"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert rows and {(r["label"], r["label_name"]) for r in rows} == {(0, "zero")}
    table = runner.invoke(app, ["quarantine", "list", "--run", run_id], env={"COLUMNS": "150"})
    assert "zero (0)" in table.output
    sid = rows[0]["sample_id"]
    relabel = runner.invoke(app, ["quarantine", "relabel", sid, "--run", run_id, "--label", "seven"])
    assert relabel.exit_code == 0, relabel.output
    with ws.catalog.session() as s:
        from sanitize.catalog import QuarantineEntry

        entry = s.scalars(select(QuarantineEntry).where(QuarantineEntry.sample_id == sid)).one()
        assert (entry.status, entry.new_label) == ("relabelled", 7)
    wrong = runner.invoke(app, ["quarantine", "relabel", rows[1]["sample_id"], "--run", run_id, "--label", "wolf"])
    assert wrong.exit_code == 2 and "no class named 'wolf'" in wrong.output and "seven (7)" in wrong.output
    shown = runner.invoke(app, ["show", run_id], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "target class zero (0)" in shown.output, shown.output
    versions = runner.invoke(app, ["versions", "digits-demo"], env={"COLUMNS": "250"})
    assert "10: zero, one, two" in versions.output, versions.output
