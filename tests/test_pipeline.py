"""The library end to end on the digits demo: one red-team run, many checks; and runs that fail."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from sqlalchemy import select

from sanitize.catalog import AuditRecord, QuarantineEntry, Run, Version
from sanitize.config import DetectConfig, ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.data import CleanDataset
from sanitize.demo import ingest_demo
from sanitize.detect import KNNLabelDisagreement
from sanitize.errors import DetectionError, InputError, NotFoundError
from sanitize.ingest.core import ingest_path
from sanitize.models import build_model, save_torchscript
from sanitize.pipeline import RunResult, poison_stage, run_cleaning, start_run, train_reference_stage
from sanitize.runs import RunContext
from sanitize.store import ChecksumError
from sanitize.training import retrain_epochs
from sanitize.workspace import Workspace

N_TRAIN, N_TEST = 1437, 360  # scikit-learn's 1,797 digits split 80/20
N_POISON = round(0.05 * N_TRAIN)
DETECTORS = DetectConfig().detectors


@dataclass
class DemoRun:
    ws: Workspace
    settings: Settings
    result: RunResult

    @property
    def summary(self) -> dict:
        return self.result.summary

    def verdict(self) -> pq.Table:
        return pq.read_table(self.result.run_dir / "verdict.parquet")

    def quarantined_ids(self) -> set[str]:
        v = self.verdict()
        return set(v.filter(v.column("quarantine")).column("sample_id").to_pylist())

    def train_ids(self, version: str) -> list[str]:
        manifest = self.ws.store.manifest(self.result.dataset, version)
        return self.ws.store.read_column_table(manifest, ["sample_id"], split="train").column("sample_id").to_pylist()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The default red-team run (digits, BadNets on 5 %, target 0), once for the module (~30-60 s)."""
    settings = Settings(home=tmp_path_factory.mktemp("pipeline-home"), catalog_url=None)
    ws = Workspace(settings)
    result = run_cleaning(RunConfig(redteam=RedTeamConfig()), ws, progress=False)
    return DemoRun(ws, settings, result)


# --- what the run reports ----------------------------------------------------------------------


def test_the_run_finds_the_poisons_and_removes_the_backdoor(demo: DemoRun) -> None:
    s = demo.summary
    assert s["n_poison"] == N_POISON
    assert s["recall"] >= 0.95
    assert s["precision"] >= 0.8
    assert s["asr_before"] >= 0.8
    assert s["asr_after"] <= 0.05
    assert s["clean_acc_after"] >= 0.9
    assert s["auroc"] > 0.95


def test_the_clean_model_trains_longer_and_with_warps_the_reference_without(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=2))

    result = run_cleaning(config, workspace, progress=False)

    clean = json.loads((result.run_dir / "model_clean.json").read_text())
    reference = json.loads((result.run_dir / "model_reference.json").read_text())
    assert (clean["augment"], clean["epochs"]) == ("warp", 6)
    assert (reference["augment"], reference["epochs"]) == ("none", 2)
    assert result.summary["clean_acc_after"] >= 0.8  # six epochs on digits under the warps


def test_the_clean_models_recipe_can_be_set(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=2), retrain_epochs=3, retrain_augment="none")

    result = run_cleaning(config, workspace, progress=False)

    clean = json.loads((result.run_dir / "model_clean.json").read_text())
    assert (clean["augment"], clean["epochs"]) == ("none", 3)


@pytest.mark.parametrize(
    ("model_epochs", "retrain", "n_train", "expected"),
    [
        (None, None, 60_000, 12),  # the reference's 4 passes over Fashion-MNIST, three times
        (None, None, 1_437, 40),  # the digits' reference already takes 40
        (20, None, 1_000, 40),
        (60, None, 1_000, 60),  # never fewer than the reference
        (None, 7, 60_000, 7),
    ],
)
def test_retrain_epochs_rule(model_epochs: int | None, retrain: int | None, n_train: int, expected: int) -> None:
    config = RunConfig(model=ModelConfig(epochs=model_epochs), retrain_epochs=retrain)

    assert retrain_epochs(config, n_train) == expected


def test_the_demos_clean_model_trains_with_warps(demo: DemoRun) -> None:
    assert json.loads((demo.result.run_dir / "model_clean.json").read_text())["augment"] == "warp"


def test_a_run_recorded_before_the_recipe_options_loads_with_the_recipe_it_ran(demo: DemoRun, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo.settings.home, home)
    ws = Workspace(Settings(home=home, catalog_url=None))
    path = ws.store.run_dir(demo.result.run_id) / "context.json"
    obj = json.loads(path.read_text())
    del obj["config"]["retrain_augment"], obj["config"]["retrain_epochs"]
    path.write_text(json.dumps(obj))

    ctx = RunContext.load(ws, demo.result.run_id)

    assert ctx.config.retrain_augment == "none"
    assert ctx.config.retrain_epochs == json.loads((path.parent / "model_clean.json").read_text())["epochs"]
    assert RunConfig().retrain_augment == "warp" and RunConfig().retrain_epochs is None


def test_kept_plus_quarantined_is_what_was_ingested(demo: DemoRun) -> None:
    s = demo.summary
    quarantined = demo.quarantined_ids()
    assert s["ingested"] == N_TRAIN
    assert s["kept"] + s["quarantined"] == s["ingested"]
    assert s["quarantined"] == len(quarantined) > 0
    assert s["looks_clean"] is False
    assert s["estimated_poison_rate"] == pytest.approx(len(quarantined) / N_TRAIN)
    per_source = s["per_source"]
    assert list(per_source) == ["sklearn-digits"]
    assert per_source["sklearn-digits"]["samples"] == N_TRAIN
    assert per_source["sklearn-digits"]["quarantined"] == len(quarantined)
    assert per_source["sklearn-digits"]["share"] == pytest.approx(len(quarantined) / N_TRAIN)


def test_the_figures_agree_with_the_ground_truth_file(demo: DemoRun) -> None:
    truth = pq.read_table(demo.result.run_dir / "ground_truth.parquet").to_pydict()
    poisons = {sid for sid, p in zip(truth["sample_id"], truth["is_poison"], strict=True) if p}
    quarantined = demo.quarantined_ids()

    assert len(truth["sample_id"]) == N_TRAIN and len(poisons) == N_POISON
    assert demo.summary["recall"] == pytest.approx(len(poisons & quarantined) / len(poisons))
    assert demo.summary["precision"] == pytest.approx(len(poisons & quarantined) / len(quarantined))
    # Dirty-label poisons come from the other classes.
    originals = [lab for lab, p in zip(truth["original_label"], truth["is_poison"], strict=True) if p]
    assert 0 not in originals


# --- versions and lineage ----------------------------------------------------------------------


def test_the_red_team_version_derives_from_the_ingested_one(demo: DemoRun) -> None:
    store, r = demo.ws.store, demo.result
    redteam = store.manifest(r.dataset, r.version)
    assert redteam.kind == "redteam"
    assert redteam.parent_id == demo.summary["ingested_version"] != r.version
    assert (redteam.n_train, redteam.n_test) == (N_TRAIN, N_TEST)
    with demo.ws.catalog.session() as s:
        assert demo.ws.catalog.version(s, demo.summary["ingested_version"]).kind == "ingested"
        assert demo.ws.catalog.version(s, r.version).run_id == r.run_id
    labels = store.read_column_table(redteam, ["sample_id", "label"], split="train").to_pydict()
    truth = pq.read_table(r.run_dir / "ground_truth.parquet").to_pydict()
    label_of = dict(zip(labels["sample_id"], labels["label"], strict=True))
    assert all(label_of[sid] == 0 for sid, p in zip(truth["sample_id"], truth["is_poison"], strict=True) if p)


def test_the_verdict_has_one_row_per_train_sample(demo: DemoRun) -> None:
    verdict = demo.verdict()
    ids = verdict.column("sample_id").to_pylist()

    assert verdict.num_rows == N_TRAIN == len(set(ids))
    assert set(ids) == set(demo.train_ids(demo.result.version))
    for name in DETECTORS:
        for col in ("score", "flag", "threshold", "rank"):
            assert f"{name}_{col}" in verdict.column_names
    q = verdict.column("quarantine").to_numpy(zero_copy_only=False)
    voted = np.zeros(len(q), dtype=bool)
    for voter in DetectConfig().voters:
        voted |= verdict.column(f"{voter}_flag").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(q, voted)  # a sample is quarantined when any voter flags it
    reasons = verdict.column("reason").to_pylist()
    assert all(bool(reason) == flagged for reason, flagged in zip(reasons, q, strict=True))


def test_quarantine_entries_are_pending_with_a_reason(demo: DemoRun) -> None:
    with demo.ws.catalog.session() as s:
        entries = s.scalars(select(QuarantineEntry).where(QuarantineEntry.run_id == demo.result.run_id)).all()
        rows = [(e.sample_id, e.status, e.reason, e.detectors, e.source, e.label, e.dataset) for e in entries]

    assert len(rows) == demo.summary["quarantined"]
    assert {r[0] for r in rows} == demo.quarantined_ids()
    for _, status, reason, detectors, source, _, dataset in rows:
        assert status == "pending"
        voters = DetectConfig().voters
        assert any(f"{voter} flagged" in reason for voter in voters), reason
        assert detectors.split(",")[0] in voters  # the voters that flagged it come first
        assert source == "sklearn-digits"
        assert dataset == "digits-demo"


def test_the_clean_version_holds_exactly_the_kept_samples(demo: DemoRun) -> None:
    clean = demo.result.clean_version
    assert clean is not None and clean == demo.summary["clean_version"]

    data = CleanDataset(clean, settings=demo.settings)

    assert len(data) == demo.summary["kept"]
    assert not set(data.sample_ids) & demo.quarantined_ids()
    assert set(data.sample_ids) == set(demo.train_ids(demo.result.version)) - demo.quarantined_ids()
    for i in (0, len(data) // 2, -1):
        x, y = data[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape) == (1, 8, 8)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert type(y) is int and 0 <= y <= 9
    assert len(CleanDataset(clean, split="test", settings=demo.settings)) == N_TEST
    with pytest.raises(IndexError):
        data[len(data)]


def test_the_clean_version_reads_the_same_from_disk_and_memory(demo: DemoRun) -> None:
    clean = demo.result.clean_version
    assert clean is not None
    in_memory = CleanDataset(clean, settings=demo.settings, in_memory=True)
    streamed = CleanDataset(clean, settings=demo.settings, in_memory=False, cache_groups=1)

    for i in (0, 7, len(in_memory) - 1, 3):
        a, b = in_memory[i], streamed[i]
        assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_the_clean_manifest_records_its_lineage(demo: DemoRun) -> None:
    clean = demo.result.clean_version
    assert clean is not None
    manifest = demo.ws.store.manifest("digits-demo", clean)

    assert manifest.kind == "clean"
    assert manifest.parent_id == demo.result.version
    assert (manifest.n_train, manifest.n_test) == (demo.summary["kept"], N_TEST)
    assert manifest.extra is not None
    assert manifest.extra["excluded_sample_ids"] == sorted(demo.quarantined_ids())
    assert manifest.extra["run_id"] == demo.result.run_id
    assert manifest.extra["config"]["redteam"]["attack"] == "badnets"
    export_manifest = demo.ws.store.export_dir("digits-demo", clean) / "manifest.json"
    assert json.loads(export_manifest.read_text()) == manifest.to_json()
    with demo.ws.catalog.session() as s:
        v = demo.ws.catalog.version(s, clean)
        assert (v.kind, v.status, v.parent_id, v.run_id) == (
            "clean",
            "provisional",
            demo.result.version,
            demo.result.run_id,
        )


def test_the_run_is_recorded_as_completed(demo: DemoRun) -> None:
    r = demo.result
    with demo.ws.catalog.session() as s:
        run = demo.ws.catalog.run(s, r.run_id)
        assert (run.status, run.error, run.clean_version_id, run.version_id) == (
            "completed",
            None,
            r.clean_version,
            r.version,
        )
        assert run.finished_at is not None
        assert run.summary == json.loads(json.dumps(demo.summary, default=str))
        assert run.config == RunConfig(redteam=RedTeamConfig()).model_dump(mode="json")
        actions = s.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
    assert [a for a in actions if a.startswith("run.") or a == "export"] == [
        "run.start",
        "run.poison",
        "run.quarantine",
        "export",
        "run.complete",
    ]
    assert json.loads((r.run_dir / "summary.json").read_text())["run_id"] == r.run_id


# --- runs that fail ----------------------------------------------------------------------------


def test_an_unknown_dataset_is_not_found(workspace: Workspace) -> None:
    with pytest.raises(NotFoundError, match="unknown dataset 'nosuch'"):
        run_cleaning(RunConfig(dataset="nosuch"), workspace, progress=False)
    with workspace.catalog.session() as s:
        assert s.scalars(select(Run)).all() == []


def test_a_crashing_detector_fails_the_run_and_exports_nothing(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: KNNLabelDisagreement, features: np.ndarray, labels: np.ndarray) -> None:
        raise RuntimeError("faiss fell over")

    # Not even a voter: any crashed detector must stop the data from passing as clean.
    monkeypatch.setattr(KNNLabelDisagreement, "detect", crash)
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1))

    with pytest.raises(DetectionError, match="detector knn failed: faiss fell over"):
        run_cleaning(config, workspace, progress=False)

    with workspace.catalog.session() as s:
        run = s.scalars(select(Run)).one()
        assert run.status == "failed"
        assert run.error == "DetectionError: detector knn failed: faiss fell over"
        assert run.finished_at is not None
        assert run.clean_version_id is None and run.summary is None
        assert s.scalars(select(Version).where(Version.kind == "clean")).all() == []
        assert s.scalars(select(QuarantineEntry)).all() == []
        fail = s.scalars(select(AuditRecord).where(AuditRecord.action == "run.fail")).one()
        assert fail.detail is not None and "RuntimeError: faiss fell over" in fail.detail["traceback"]
    assert not (workspace.store.home / "exports").exists()
    assert not (workspace.store.run_dir(run.id) / "verdict.parquet").exists()


def _ingest_small(workspace: Workspace, labels: list[int]) -> None:
    from sanitize.ingest.core import arrays_to_batches, ingest_batches

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(len(labels), 8, 8), dtype=np.uint8)
    ingest_batches(
        workspace.catalog,
        workspace.store,
        dataset="small",
        batches=arrays_to_batches(x, np.array(labels), "train"),
        source="s",
        uri="mem://small",
        fmt="arrays",
    )


@pytest.mark.parametrize(
    ("labels", "redteam", "message"),
    [
        ([3] * 6, None, "the train split has 1 class; cleaning needs at least 2"),
        ([0, 0, 0, 1], None, r"class\(es\) \[1\] have fewer than 2 training samples"),
        (
            [0, 0, 1, 1],
            RedTeamConfig(target=7),
            r"red-team target class 7 is not a class of 'small' \(classes: \[0, 1\]\)",
        ),
    ],
    ids=["one class", "singleton class", "absent target"],
)
def test_a_dataset_that_cannot_be_cleaned_is_refused_before_the_run_starts(
    workspace: Workspace, labels: list[int], redteam: RedTeamConfig | None, message: str
) -> None:
    _ingest_small(workspace, labels)

    with pytest.raises(InputError, match=message):
        run_cleaning(RunConfig(dataset="small", redteam=redteam), workspace, progress=False)

    with workspace.catalog.session() as s:
        assert s.scalars(select(Run)).all() == []
    assert not (workspace.store.home / "runs").exists()


def test_a_version_of_another_dataset_is_refused(workspace: Workspace) -> None:
    _ingest_small(workspace, [0, 0, 1, 1])
    with workspace.catalog.session() as s:
        version = workspace.catalog.dataset(s, "small").current_version

    with pytest.raises(InputError, match=f"version {version} belongs to dataset 'small', not 'digits-demo'"):
        run_cleaning(RunConfig(version=version), workspace, progress=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"detect": {"voters": ("knn",), "detectors": ("spectral",)}},
            r"voters \['knn'\] are not among the detectors",
        ),
        (
            {
                "detect": {
                    "detectors": ("whitened_clustering",),
                    "voters": ("whitened_clustering",),
                    "fallback_voters": ("input_neighbours",),
                }
            },
            r"fallback voters \['input_neighbours'\] are not among the detectors",
        ),
        (
            {"detect": {"fallback_voters": ("whitened_clustering",)}},
            r"\['whitened_clustering'\] are both voters and fallback voters",
        ),
        ({"modle": {"epochs": 3}}, "Extra inputs are not permitted"),
        ({"redteam": {"rate": 0.6}}, "less than 0.5"),
        ({"model": {"torchscript": "m.pt"}}, "a TorchScript model needs feature_layer"),
        ({"dataset": "../etc"}, "String should match pattern"),
    ],
    ids=[
        "voter not run",
        "fallback not run",
        "voter and fallback",
        "misspelled option",
        "rate out of range",
        "torchscript without layer",
        "bad dataset name",
    ],
)
def test_a_wrong_run_config_is_rejected(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate(options)


def test_a_detector_list_without_the_fallback_voter_runs_without_it() -> None:
    # What every run recorded before the fallback voter existed looks like, and a user's own list.
    detect = DetectConfig.model_validate({"detectors": ["spectral", "whitened_clustering", "input_gap"]})
    assert detect.fallback_voters == ()
    assert DetectConfig().fallback_voters == ("input_neighbours",)
    assert RunConfig.model_validate({"detect": {"detectors": ["whitened_clustering", "input_gap"]}})


def test_the_config_fingerprint_ignores_only_the_version_and_the_approval_policy() -> None:
    base = RunConfig(redteam=RedTeamConfig())
    assert base.fingerprint() == RunConfig(redteam=RedTeamConfig(), version="v123").fingerprint()
    assert base.fingerprint() == RunConfig(redteam=RedTeamConfig(), approve="auto").fingerprint()
    assert base.fingerprint() != RunConfig(redteam=RedTeamConfig(seed=1)).fingerprint()


def test_runs_of_one_config_train_the_same_reference_model(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1))
    weights = []
    for process_seed in (0, 1):  # what two fresh processes' unseeded torch generators look like
        torch.manual_seed(process_seed)
        shutil.rmtree(workspace.store.home / "models", ignore_errors=True)  # really train, both times
        ctx = poison_stage(workspace, start_run(workspace, config))
        model = torch.jit.load(train_reference_stage(workspace, ctx, progress=False))
        weights.append(model.state_dict())

    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_a_rerun_of_one_version_and_config_reuses_the_reference_model(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(epochs=1))
    first = poison_stage(workspace, start_run(workspace, config))
    train_reference_stage(workspace, first, progress=False)

    again = poison_stage(workspace, start_run(workspace, config))
    path = train_reference_stage(workspace, again, progress=False)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["run"] == first.run_id and meta["reused_by"] == again.run_id
    assert path.read_bytes() == (first.run_dir / "model_reference.pt").read_bytes()

    other_seed = poison_stage(workspace, start_run(workspace, config.model_copy(update={"seed": 1})))
    path = train_reference_stage(workspace, other_seed, progress=False)
    assert json.loads(path.with_suffix(".json").read_text())["run"] == other_seed.run_id  # trained anew


def _user_model(path: Path, n_classes: int) -> Path:
    """A user's TorchScript model for the digits (the package's CNN, untrained, ``n_classes`` outputs)."""
    torch.manual_seed(0)
    save_torchscript(build_model("cnn", in_channels=1, n_classes=n_classes), path, np.zeros((2, 8, 8, 1), np.uint8))
    return path


@pytest.mark.parametrize("n_classes", [1, 3, 11])
def test_a_user_model_with_the_wrong_number_of_outputs_is_refused_before_anything_is_written(
    workspace: Workspace, tmp_path: Path, n_classes: int
) -> None:
    # A 3-output model on the 10 digit classes used to "measure" accuracy 10 % and ASR 100 %.
    model = _user_model(tmp_path / "user.pt", n_classes)
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(torchscript=model, feature_layer="embed"))
    with pytest.raises(InputError, match=rf"gives {n_classes} outputs per image, but .* has 10 classes"):
        run_cleaning(config, workspace, progress=False)
    with workspace.catalog.session() as s:
        assert s.scalars(select(Run)).all() == []  # refused, not started
        assert {v.kind for v in s.scalars(select(Version))} == {"ingested"}  # no red-team copy, no export
    assert not (workspace.store.home / "runs").exists() or not any((workspace.store.home / "runs").iterdir())


def test_a_user_model_with_one_output_per_class_is_the_reference(workspace: Workspace, tmp_path: Path) -> None:
    model = _user_model(tmp_path / "user.pt", 10)
    config = RunConfig(
        redteam=RedTeamConfig(), model=ModelConfig(torchscript=model, feature_layer="embed"), retrain=False
    )
    result = run_cleaning(config, workspace, progress=False)
    assert result.summary["ingested"] == N_TRAIN and result.summary["clean_acc_before"] is not None
    assert not (result.run_dir / "model_reference.pt").exists()  # the user's file is the reference


@pytest.mark.parametrize("side", [1, 7])
def test_images_too_small_for_the_models_are_refused_at_the_start(
    workspace: Workspace, tmp_path: Path, side: int
) -> None:
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x=rng.integers(0, 256, (40, side, side, 1), dtype=np.uint8), y=np.arange(40) % 2)
    ingest_path(workspace.catalog, workspace.store, dataset="tiny", path=npz, source="vendor")
    with pytest.raises(InputError, match=rf"images are {side}x{side}; cleaning needs at least 8x8 pixels"):
        run_cleaning(RunConfig(dataset="tiny"), workspace, progress=False)
    with workspace.catalog.session() as s:
        assert s.scalars(select(Run)).all() == []


def test_a_version_whose_files_changed_after_publication_is_not_cleaned(workspace: Workspace) -> None:
    # A tampered ingest file (one pixel repainted) was cleaned as if it were the data the team gave.
    ingest_demo(workspace, "digits-demo")
    (ingest,) = (workspace.store.home / "datasets" / "digits-demo" / "ingests").glob("ing-*.parquet")
    data = bytearray(ingest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ingest.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"ingests/ing-.*\.parquet does not match its published checksum"):
        run_cleaning(RunConfig(redteam=RedTeamConfig()), workspace, progress=False)
    with workspace.catalog.session() as s:
        assert s.scalars(select(Run)).all() == []


@pytest.mark.parametrize("attack", ["tact", "all_to_all"])
def test_a_red_team_of_the_new_attacks_runs_and_measures_its_aim(workspace: Workspace, attack: str) -> None:
    """Issue 15: TaCT's poisons come from one source class and its ASR counts that class's test
    images; all-to-all relabels each class to the next and its ASR counts every test image. The
    run's records say what each did, and the training dynamics are kept beside the reference model."""
    from sanitize.evaluate.redteam import get_attack, source_class

    config = RunConfig(
        redteam=RedTeamConfig(attack=attack, rate=0.03, target=1), model=ModelConfig(epochs=3), retrain=False
    )
    result = run_cleaning(config, workspace, progress=False)
    truth = pq.read_table(result.run_dir / "ground_truth.parquet").to_pandas()
    verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["sample_id", "label"]).to_pandas()
    poisons = truth[truth.is_poison].merge(verdict, on="sample_id")
    assert len(poisons) == round(0.03 * len(truth))
    classes = sorted(verdict.label.unique().tolist())
    if attack == "tact":
        assert set(poisons.original_label) == {source_class(classes, 1, 0)}
        assert (poisons.label == 1).all()
    else:
        assert len(set(poisons.original_label)) > 3
        assert (
            poisons.label == get_attack("all_to_all").goal(poisons.original_label.to_numpy(), 1, classes, 0)[1]
        ).all()
    assert 0.0 <= result.summary["asr_before"] <= 1.0
    assert (result.run_dir / "model_reference.dynamics.parquet").is_file()
    assert "loss_dynamics_score" in pq.read_table(result.run_dir / "verdict.parquet").column_names
