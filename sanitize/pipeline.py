"""The stages of a cleaning run, in the order a sample travels through them.

Each stage takes the workspace and the run's context and returns paths, so the Prefect flow in
``flows/`` can call them as tasks and pass file paths, not arrays. :func:`run_cleaning` calls them
in order for direct use (the CLI without Prefect, tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import subprocess
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sqlalchemy import func, select

from sanitize.catalog import QuarantineEntry, Run, Version
from sanitize.config import DEFAULT_DATASET, RunConfig
from sanitize.detect import combine, run_detectors, write_verdict
from sanitize.errors import InputError, InvariantError, SanitizeError
from sanitize.evaluate.metrics import detection_figures
from sanitize.evaluate.redteam import get_attack, trigger_for
from sanitize.features import extract_features, load_features, load_inputs
from sanitize.models import (
    AUGMENTATIONS,
    FEATURE_LAYER,
    build_model,
    default_architecture,
    load_torchscript,
    pick_device,
    save_torchscript,
    to_tensor,
    train,
)
from sanitize.provenance import source_verdicts
from sanitize.store import (
    SAMPLE_SCHEMA,
    Manifest,
    TableWriter,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_table,
    content_hash,
    decode_pixels,
    sample_id_for,
    version_id_for,
)
from sanitize.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage needs to find a run's inputs and outputs; saved as ``context.json``."""

    run_id: str
    dataset: str
    ingested_version: str
    version: str
    run_dir: Path
    config: RunConfig
    timings: dict[str, float] = field(default_factory=dict)

    def save(self) -> None:
        atomic_write_json(
            self.run_dir / "context.json",
            {
                "run_id": self.run_id,
                "dataset": self.dataset,
                "ingested_version": self.ingested_version,
                "version": self.version,
                "config": self.config.model_dump(mode="json"),
                "timings": self.timings,
            },
        )

    @classmethod
    def load(cls, ws: Workspace, run_id: str) -> RunContext:
        path = ws.store.run_dir(run_id) / "context.json"
        if not path.is_file():
            raise SanitizeError(f"run {run_id} has no context at {path}")
        obj = json.loads(path.read_text())
        config = dict(obj["config"])
        # Runs recorded before the clean model's recipe could be set retrained as the reference model
        # trained: unaugmented, and for the epochs their model_clean.json records.
        config.setdefault("retrain_augment", "none")
        if "retrain_epochs" not in config:
            clean = path.parent / "model_clean.json"
            config["retrain_epochs"] = json.loads(clean.read_text())["epochs"] if clean.is_file() else None
        return cls(
            obj["run_id"],
            obj["dataset"],
            obj["ingested_version"],
            obj["version"],
            path.parent,
            RunConfig.model_validate(config),
            obj.get("timings", {}),
        )

    def manifest(self, ws: Workspace) -> Manifest:
        return ws.store.manifest(self.dataset, self.version)


class _Timer:
    def __init__(self, ctx: RunContext, stage: str):
        self.ctx, self.stage = ctx, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.ctx.timings[self.stage] = round(time.perf_counter() - self.start, 3)
        self.ctx.save()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_id() -> str:
    """A run id that sorts by start time: ``run-YYYYmmdd-HHMMSS-xxxxxx``."""
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


# --- 1. start -----------------------------------------------------------------------------------
def start_run(ws: Workspace, config: RunConfig) -> RunContext:
    """Resolve the dataset version, check it can be cleaned, and record a running run."""
    with ws.catalog.session() as s:
        from sanitize.catalog import Dataset

        has_dataset = s.get(Dataset, config.dataset) is not None
    if not has_dataset and config.dataset == DEFAULT_DATASET:
        from sanitize.demo import ingest_demo

        ingest_demo(ws, config.dataset)
    with ws.catalog.session() as s:
        ds = ws.catalog.dataset(s, config.dataset)
        version_id = config.version or ds.current_version
        if version_id is None:
            raise InputError(f"dataset {config.dataset!r} has no version yet")
        version = ws.catalog.version(s, version_id)
        if version.dataset != config.dataset:
            raise InputError(f"version {version_id} belongs to dataset {version.dataset!r}, not {config.dataset!r}")
    manifest = ws.store.manifest(config.dataset, version_id)
    labels = ws.store.read_column_table(manifest, ["label"], split="train").column("label").to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError(
            f"dataset {config.dataset!r} version {version_id}: the train split has "
            f"{len(classes)} class; cleaning needs at least 2"
        )
    small = classes[counts < 2]
    if len(small):
        raise InputError(
            f"dataset {config.dataset!r} version {version_id}: class(es) {small.tolist()} have fewer "
            f"than 2 training samples"
        )
    if config.redteam is not None and config.redteam.target not in set(classes.tolist()):
        raise InputError(
            f"red-team target class {config.redteam.target} is not a class of {config.dataset!r} "
            f"(classes: {classes.tolist()})"
        )
    run_id = new_run_id()
    run_dir = ws.store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    ctx = RunContext(run_id, config.dataset, version_id, version_id, run_dir, config)
    ctx.save()
    with ws.catalog.session() as s:
        s.add(
            Run(
                id=run_id,
                dataset=config.dataset,
                version_id=version_id,
                status="running",
                config=config.model_dump(mode="json"),
                config_fingerprint=config.fingerprint(),
            )
        )
        ws.catalog.audit(s, "pipeline", "run.start", run_id, dataset=config.dataset, version=version_id)
    return ctx


# --- 2. red team (optional) ---------------------------------------------------------------------
def poison_stage(ws: Workspace, ctx: RunContext) -> RunContext:
    """For red-team runs: write a poisoned copy of the train split as a new version, and the ground truth.

    Streams the samples; only the labels are held in memory to choose the victims.
    """
    rt = ctx.config.redteam
    if rt is None:
        return ctx
    with _Timer(ctx, "poison"):
        src = ws.store.manifest(ctx.dataset, ctx.ingested_version)
        labels = ws.store.read_column_table(src, ["label"], split="train").column("label").to_numpy()
        attack = get_attack(rt.attack)
        plan = attack.plan(labels, rt.rate, rt.target, rt.seed)
        is_victim = np.zeros(len(labels), dtype=bool)
        is_victim[plan.poisons] = True
        is_stamped = is_victim.copy()
        is_stamped[plan.regularization] = True
        out = ws.store.dataset_dir(ctx.dataset) / "ingests" / f"redteam-{ctx.run_id}.parquet"
        writer = TableWriter(out, SAMPLE_SCHEMA)
        truth_ids: list[str] = []
        truth_flag: list[bool] = []
        truth_label: list[int] = []
        pairs: list[tuple[str, int, str]] = []
        pos = 0
        try:
            for batch in ws.store.iter_samples(src, batch_size=2048):
                table = pa.Table.from_batches([batch])
                split = np.array(table.column("split").to_pylist())
                train_rows = np.flatnonzero(split == "train")
                poison_rows = train_rows[is_victim[pos : pos + len(train_rows)]]
                stamp_rows = train_rows[is_stamped[pos : pos + len(train_rows)]]
                pos += len(train_rows)
                if len(stamp_rows):
                    images = decode_pixels(table).copy()
                    images[stamp_rows] = attack.stamp(images[stamp_rows], rt.seed + pos)
                    shas = table.column("content_sha256").to_pylist()
                    ids = table.column("sample_id").to_pylist()
                    lab = table.column("label").to_numpy().copy()
                    locs = table.column("locator").to_pylist()
                    srcs = table.column("source").to_pylist()
                    pixels = table.column("pixels").to_pylist()
                    for r in stamp_rows:
                        shas[r] = content_hash(images[r])
                        ids[r] = sample_id_for(srcs[r], locs[r], shas[r])
                        pixels[r] = images[r].tobytes()
                    if not attack.clean_label:
                        lab[poison_rows] = rt.target
                    table = (
                        table.set_column(
                            table.schema.get_field_index("content_sha256"),
                            "content_sha256",
                            pa.array(shas, pa.string()),
                        )
                        .set_column(table.schema.get_field_index("sample_id"), "sample_id", pa.array(ids))
                        .set_column(table.schema.get_field_index("label"), "label", pa.array(lab, pa.int64()))
                        .set_column(table.schema.get_field_index("pixels"), "pixels", pa.array(pixels, pa.binary()))
                    )
                writer.write(table.cast(SAMPLE_SCHEMA))
                flags = np.zeros(table.num_rows, dtype=bool)
                flags[poison_rows] = True
                orig = batch.column("label").to_numpy()
                for r in train_rows:
                    truth_ids.append(table.column("sample_id")[r].as_py())
                    truth_flag.append(bool(flags[r]))
                    truth_label.append(int(orig[r]))
                pairs.extend(
                    zip(
                        table.column("content_sha256").to_pylist(),
                        table.column("label").to_pylist(),
                        split.tolist(),
                        strict=True,
                    )
                )
            version_id = version_id_for(pairs, ctx.dataset)
            manifest = Manifest(
                version_id=version_id,
                dataset=ctx.dataset,
                kind="redteam",
                files=(str(out.relative_to(ws.store.home)),),
                n_train=src.n_train,
                n_test=src.n_test,
                height=src.height,
                width=src.width,
                channels=src.channels,
                classes=src.classes,
                parent_id=src.version_id,
                extra={"redteam": rt.model_dump(), "run_id": ctx.run_id},
            )
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        atomic_write_table(
            ctx.run_dir / "ground_truth.parquet",
            pa.table({"sample_id": truth_ids, "is_poison": truth_flag, "original_label": truth_label}),
        )
        ws.store.write_manifest(manifest)
        with ws.catalog.session() as s:
            if s.get(Version, version_id) is None:
                s.add(
                    Version(
                        id=version_id,
                        dataset=ctx.dataset,
                        kind="redteam",
                        parent_id=src.version_id,
                        run_id=ctx.run_id,
                        n_train=src.n_train,
                        n_test=src.n_test,
                        manifest=str(ws.store.manifest_path(ctx.dataset, version_id).relative_to(ws.store.home)),
                    )
                )
            s.get(Run, ctx.run_id).version_id = version_id  # type: ignore[union-attr]
            ws.catalog.audit(
                s,
                "pipeline",
                "run.poison",
                ctx.run_id,
                attack=rt.attack,
                rate=rt.rate,
                target=rt.target,
                n_poison=int(is_victim.sum()),
                version=version_id,
            )
        ctx.version = version_id
    ctx.save()
    return ctx


# --- 3. reference model ---------------------------------------------------------------------------
def auto_epochs(n_train: int) -> int:
    """Enough passes for about 150,000 sample visits: 4 for 60k images, 40 for the 1.4k digits."""
    return int(min(40, max(4, math.ceil(150_000 / max(n_train, 1)))))


def retrain_epochs(config: RunConfig, n_train: int) -> int:
    """The clean model's passes: the run's ``retrain_epochs``, else three times the reference model's
    (12 for 60k images), up to 40 unless the reference itself took more.

    The reference model only has to expose the trigger in its features; the clean model is the one
    measured and handed on. On Fashion-MNIST, 12 passes instead of 4 lift a model trained on clean
    data from 0.920 to 0.931 (``bench/RESULTS.md``, "The clean model's recipe").
    """
    if config.retrain_epochs is not None:
        return config.retrain_epochs
    reference = config.model.epochs or auto_epochs(n_train)
    return max(reference, min(40, 3 * reference))


def _train_model(
    ws: Workspace,
    ctx: RunContext,
    manifest: Manifest,
    exclude: set[str] | None,
    relabel: dict[str, int] | None,
    out: Path,
    progress: bool,
    seed_offset: int,
    augment: str = "none",
    epochs: int | None = None,
) -> Path:
    """Train the run's architecture on the train split less ``exclude``; ``epochs`` None takes the
    model config's, else :func:`auto_epochs` for the size."""
    cfg = ctx.config.model
    arch = default_architecture(manifest.height, manifest.width, manifest.channels) if cfg.arch == "auto" else cfg.arch
    n_classes = max(manifest.classes) + 1
    seed = ctx.config.seed + seed_offset
    torch.manual_seed(seed)  # the initial weights too: the same config trains the same model
    model = build_model(arch, in_channels=manifest.channels, n_classes=n_classes)
    n_train = manifest.n_train - len(exclude or ())
    epochs = epochs or cfg.epochs or auto_epochs(n_train)

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return ws.store.iter_training_batches(
            manifest, split="train", batch_size=cfg.batch_size, seed=seed + epoch, exclude=exclude, relabel=relabel
        )

    report = train(
        model,
        batches,
        epochs=epochs,
        lr=cfg.lr,
        device=cfg.device,
        seed=seed,
        progress=progress,
        n_batches=math.ceil(n_train / cfg.batch_size),
        augment=AUGMENTATIONS.get(augment),
    )
    example = next(ws.store.iter_samples(manifest, columns=["height", "width", "channels", "pixels"], batch_size=2))
    save_torchscript(model, out, decode_pixels(example))
    atomic_write_json(
        out.with_suffix(".json"),
        {
            "arch": arch,
            "epochs": epochs,
            "n_train": n_train,
            "feature_layer": FEATURE_LAYER,
            "train_report": asdict(report),
            "augment": augment,
            "dataset": ctx.dataset,
            "version": ctx.version,
            "run": ctx.run_id,
        },
    )
    return out


def train_reference_stage(ws: Workspace, ctx: RunContext, progress: bool = True) -> Path:
    """Train the reference model on the (possibly poisoned) train split, or use the user's TorchScript."""
    with _Timer(ctx, "train_reference"):
        if ctx.config.model.torchscript is not None:
            load_torchscript(ctx.config.model.torchscript, ctx.config.model.feature_layer or "")
            return Path(ctx.config.model.torchscript)
        out = ctx.run_dir / "model_reference.pt"
        cached = _reference_cache(ws, ctx)
        if cached.is_file() and cached.with_suffix(".json").is_file():
            # Training is deterministic in (data version, model config, seed): an earlier run of the same
            # three trained exactly this model, so reuse it rather than spend minutes training it again.
            atomic_write_bytes(out, cached.read_bytes())
            meta = json.loads(cached.with_suffix(".json").read_text())
            atomic_write_json(out.with_suffix(".json"), {**meta, "reused_by": ctx.run_id})
            return out
        _train_model(ws, ctx, ctx.manifest(ws), None, None, out, progress, 0)
        atomic_write_json(cached.with_suffix(".json"), json.loads(out.with_suffix(".json").read_text()))
        atomic_write_bytes(cached, out.read_bytes())
        return out


def _reference_cache(ws: Workspace, ctx: RunContext) -> Path:
    """Where the reference model of this (data version, model config, seed) is kept for later runs."""
    model = ctx.config.model.model_dump(mode="json", exclude={"device"})
    key = json.dumps({"version": ctx.version, "model": model, "seed": ctx.config.seed}, sort_keys=True)
    return ws.store.home / "models" / f"reference-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def _feature_layer(ctx: RunContext) -> str:
    return ctx.config.model.feature_layer or FEATURE_LAYER


# --- 4. features ----------------------------------------------------------------------------------
def features_stage(ws: Workspace, ctx: RunContext, model_path: Path, progress: bool = True) -> Path:
    """Penultimate-layer features of every sample, stored keyed by sample_id."""
    with _Timer(ctx, "features"):
        model = load_torchscript(model_path, _feature_layer(ctx))
        return extract_features(
            model,
            _feature_layer(ctx),
            ws.store,
            ctx.manifest(ws),
            ctx.run_dir / "features.parquet",
            device=ctx.config.model.device,
            progress=progress,
        )


# --- 5. detect ------------------------------------------------------------------------------------
def detect_stage(ws: Workspace, ctx: RunContext, features_path: Path) -> Path:
    """Run every configured detector on the train features and combine the voters into one verdict."""
    with _Timer(ctx, "detect"):
        ids, feats, labels, _ = load_features(features_path, split="train")
        cfg = ctx.config.detect
        results, seconds = run_detectors(
            cfg.detectors,
            feats,
            labels,
            lambda: load_inputs(ws.store, ctx.manifest(ws), ids),
            voters=cfg.voters,
            fallback=cfg.fallback_voters,
            contamination=cfg.contamination,
            random_state=ctx.config.seed,
            knn_k=cfg.knn_k,
        )
        verdict = combine(results, cfg.voters, labels, cfg.fallback_voters)
        return write_verdict(ctx.run_dir, ids, labels, verdict, seconds)


# --- 6. quarantine --------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuarantineSummary:
    ingested: int
    kept: int
    quarantined: int


def quarantine_stage(ws: Workspace, ctx: RunContext, verdict_path: Path) -> QuarantineSummary:
    """Enter flagged samples into the quarantine (status pending) and check kept + quarantined = ingested.

    Samples whose content was confirmed as poison in an earlier run of the dataset enter it too,
    already ``confirmed`` (flagged or not this time), with the run that confirmed them as reason.
    """
    from sanitize.quarantine import confirmed_poisons

    with _Timer(ctx, "quarantine"):
        verdict = pq.read_table(
            verdict_path, columns=["sample_id", "suspicion_score", "quarantine", "flagged_by", "reason"]
        )
        manifest = ctx.manifest(ws)
        prov = ws.store.read_column_table(
            manifest, ["sample_id", "content_sha256", "label", "source", "locator"], split="train"
        )
        ingested = prov.num_rows
        if verdict.num_rows != ingested:
            raise InvariantError(
                f"run {ctx.run_id}: the verdict covers {verdict.num_rows} samples but the version "
                f"has {ingested} training samples"
            )
        by_id = {sid: i for i, sid in enumerate(prov.column("sample_id").to_pylist())}
        p = prov.to_pydict()
        confirmed = confirmed_poisons(ws, ctx.dataset, other_than=ctx.run_id)
        entries = []
        carried = 0
        for row in verdict.to_pylist():
            i = by_id[row["sample_id"]]
            earlier = confirmed.get(p["content_sha256"][i])
            if not row["quarantine"] and earlier is None:
                continue
            carried += earlier is not None
            entries.append(
                QuarantineEntry(
                    run_id=ctx.run_id,
                    dataset=ctx.dataset,
                    sample_id=row["sample_id"],
                    content_sha256=p["content_sha256"][i],
                    label=p["label"][i],
                    source=p["source"][i],
                    locator=p["locator"][i],
                    suspicion_score=float(row["suspicion_score"]),
                    detectors=row["flagged_by"] if row["quarantine"] else "review",
                    reason="; ".join(r for r in (earlier, row["reason"] if row["quarantine"] else "") if r),
                    status="pending" if earlier is None else "confirmed",
                )
            )
        with ws.catalog.session() as s:
            s.add_all(entries)
            s.flush()
            quarantined = (
                s.scalar(select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.run_id == ctx.run_id))
                or 0
            )
            kept = ingested - len(entries)
            if kept + quarantined != ingested:
                raise InvariantError(
                    f"run {ctx.run_id}: kept {kept} + quarantined {quarantined} != ingested {ingested}"
                )
            ws.catalog.audit(
                s,
                "pipeline",
                "run.quarantine",
                ctx.run_id,
                quarantined=quarantined,
                kept=kept,
                ingested=ingested,
                confirmed_earlier=carried,
            )
    return QuarantineSummary(ingested, kept, quarantined)


def _quarantined_ids(ws: Workspace, ctx: RunContext, verdict_path: Path) -> set[str]:
    """The run's quarantine: what the verdict flagged and what earlier reviews confirmed as poison."""
    t = pq.read_table(verdict_path, columns=["sample_id", "quarantine"])
    with ws.catalog.session() as s:
        entered = s.scalars(select(QuarantineEntry.sample_id).where(QuarantineEntry.run_id == ctx.run_id)).all()
    return set(t.filter(t.column("quarantine")).column("sample_id").to_pylist()) | set(entered)


# --- 7. retrain and measure -----------------------------------------------------------------------
def retrain_stage(ws: Workspace, ctx: RunContext, verdict_path: Path, progress: bool = True) -> Path | None:
    """Retrain the reference architecture on the kept samples, for :func:`retrain_epochs` and with the
    run's ``retrain_augment``, and save it (TorchScript) with the run."""
    if not ctx.config.retrain:
        return None
    with _Timer(ctx, "retrain"):
        manifest = ctx.manifest(ws)
        return _train_model(
            ws,
            ctx,
            manifest,
            _quarantined_ids(ws, ctx, verdict_path),
            None,
            ctx.run_dir / "model_clean.pt",
            progress,
            1,
            ctx.config.retrain_augment,
            retrain_epochs(ctx.config, manifest.n_train),
        )


def _predict_split(
    ws: Workspace, ctx: RunContext, model_path: Path, attack: str | None = None, not_label: int | None = None
) -> tuple[np.ndarray, np.ndarray]:

    model = load_torchscript(model_path, _feature_layer(ctx))
    dev = pick_device(ctx.config.model.device)
    model = model.to(dev).eval()
    preds, labels = [], []
    with torch.no_grad():
        for batch in ws.store.iter_samples(
            ctx.manifest(ws), split="test", columns=["label", "height", "width", "channels", "pixels"]
        ):
            y = batch.column("label").to_numpy()
            x = decode_pixels(batch)
            if not_label is not None:
                keep = y != not_label
                x, y = x[keep], y[keep]
            if attack is not None:
                x = trigger_for(attack, x)
            if len(y):
                preds.append(model(to_tensor(x).to(dev)).argmax(1).cpu().numpy())
                labels.append(y)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(preds), np.concatenate(labels)


def evaluate_stage(
    ws: Workspace, ctx: RunContext, reference_model: Path, clean_model: Path | None, verdict_path: Path
) -> dict[str, Any]:
    """Clean test accuracy before and after cleaning; for red-team runs also detection figures and ASR."""
    with _Timer(ctx, "evaluate"):
        figures: dict[str, Any] = {}
        has_test = ctx.manifest(ws).n_test > 0
        for tag, path in (("before", reference_model), ("after", clean_model)):
            if path is None or not has_test:
                figures[f"clean_acc_{tag}"] = None
                continue
            pred, y = _predict_split(ws, ctx, path)
            figures[f"clean_acc_{tag}"] = float((pred == y).mean())
        rt = ctx.config.redteam
        if rt is not None:
            truth = pq.read_table(ctx.run_dir / "ground_truth.parquet")
            verdict = pq.read_table(verdict_path, columns=["sample_id", "suspicion_score", "quarantine"])
            order = {sid: i for i, sid in enumerate(verdict.column("sample_id").to_pylist())}
            idx = np.array([order[s] for s in truth.column("sample_id").to_pylist()])
            det = detection_figures(
                truth.column("is_poison").to_numpy(),
                verdict.column("quarantine").to_numpy()[idx],
                verdict.column("suspicion_score").to_numpy()[idx],
            )
            figures.update(det.as_dict())
            for tag, path in (("before", reference_model), ("after", clean_model)):
                if path is None or not has_test:
                    figures[f"asr_{tag}"] = None
                    continue
                pred, _ = _predict_split(ws, ctx, path, attack=rt.attack, not_label=rt.target)
                figures[f"asr_{tag}"] = float((pred == rt.target).mean()) if len(pred) else None
    return figures


# --- 8. export ------------------------------------------------------------------------------------
def export_stage(ws: Workspace, ctx: RunContext, verdict_path: Path) -> str:
    """Write the clean version (kept samples) for training jobs; see :mod:`sanitize.export`."""
    from sanitize.export import export_clean_version

    with _Timer(ctx, "export"):
        with ws.catalog.session() as s:
            pending = s.scalar(
                select(func.count())
                .select_from(QuarantineEntry)
                .where(QuarantineEntry.run_id == ctx.run_id, QuarantineEntry.status == "pending")
            )
        return export_clean_version(
            ws,
            ctx.dataset,
            ctx.version,
            ctx.run_id,
            _quarantined_ids(ws, ctx, verdict_path),
            ctx.config.model_dump(mode="json"),
            # Nothing left for a reviewer (nothing flagged, or only poisons confirmed before): approved.
            status="provisional" if pending else "approved",
        )


# --- 9. finish ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What a finished run reports to its caller."""

    run_id: str
    dataset: str
    version: str
    clean_version: str | None
    run_dir: Path
    summary: dict[str, Any]


def finish_run(
    ws: Workspace,
    ctx: RunContext,
    counts: QuarantineSummary,
    figures: dict[str, Any],
    clean_version: str,
    clean_model: Path | None,
) -> RunResult:
    """Record the run's summary and mark it completed."""
    detection = json.loads((ctx.run_dir / "detection.json").read_text())
    prov = ws.store.read_column_table(ctx.manifest(ws), ["sample_id", "source"], split="train")
    verdict = pq.read_table(ctx.run_dir / "verdict.parquet", columns=["sample_id", "quarantine"])
    if prov.column("sample_id").to_pylist() != verdict.column("sample_id").to_pylist():
        raise InvariantError(f"run {ctx.run_id}: the verdict's samples are not the version's training samples")
    sources = source_verdicts(prov.column("source").to_pylist(), verdict.column("quarantine").to_numpy())
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "dataset": ctx.dataset,
        "ingested_version": ctx.ingested_version,
        "version": ctx.version,
        "clean_version": clean_version,
        "ingested": counts.ingested,
        "kept": counts.kept,
        "quarantined": counts.quarantined,
        "estimated_poison_rate": detection["estimated_rate_overall"],
        "estimated_rate_per_class": detection["estimated_rate"],
        "looks_clean": counts.quarantined == 0,
        "per_source": {v.source: v.as_dict() for v in sources},
        "suspicious_sources": [v.source for v in sources if v.suspicious],
        **figures,
        "redteam": ctx.config.redteam.model_dump() if ctx.config.redteam else None,
        "timings": ctx.timings,
        "seconds": round(sum(ctx.timings.values()), 2),
        "model_reference": str(ctx.run_dir / "model_reference.pt"),
        "model_clean": str(clean_model) if clean_model else None,
        "commit": _git_commit(),
        "machine": f"{platform.node()} {platform.machine()} {_cpu_count()} cpu",
    }
    atomic_write_json(ctx.run_dir / "summary.json", summary)
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, ctx.run_id)
        run.status = "completed"
        run.summary = json.loads(json.dumps(summary, default=str))
        run.clean_version_id = clean_version
        run.finished_at = datetime.now(UTC)
        ws.catalog.audit(
            s, "pipeline", "run.complete", ctx.run_id, clean_version=clean_version, quarantined=counts.quarantined
        )
    return RunResult(ctx.run_id, ctx.dataset, ctx.version, clean_version, ctx.run_dir, summary)


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def fail_run(ws: Workspace, run_id: str, error: BaseException) -> None:
    """Mark a run failed with its error; it never produces a clean version."""
    with ws.catalog.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            return
        run.status = "failed"
        run.error = f"{type(error).__name__}: {error}"
        run.finished_at = datetime.now(UTC)
        # A run that failed after its export leaves no clean version a training job could pick up.
        for version in s.scalars(select(Version).where(Version.run_id == run_id, Version.kind == "clean")):
            version.status = "failed"
        ws.catalog.audit(
            s,
            "pipeline",
            "run.fail",
            run_id,
            error=run.error,
            traceback="".join(traceback.format_exception(error))[-4000:],
        )


def run_cleaning(config: RunConfig, ws: Workspace | None = None, *, progress: bool = True) -> RunResult:
    """A complete cleaning run, stage by stage, without Prefect."""
    ws = ws or Workspace()
    ctx = start_run(ws, config)
    try:
        ctx = poison_stage(ws, ctx)
        reference = train_reference_stage(ws, ctx, progress)
        features = features_stage(ws, ctx, reference, progress)
        verdict = detect_stage(ws, ctx, features)
        counts = quarantine_stage(ws, ctx, verdict)
        clean_model = retrain_stage(ws, ctx, verdict, progress)
        figures = evaluate_stage(ws, ctx, reference, clean_model, verdict)
        clean_version = export_stage(ws, ctx, verdict)
        return finish_run(ws, ctx, counts, figures, clean_version, clean_model)
    except BaseException as exc:
        fail_run(ws, ctx.run_id, exc)
        raise


__all__ = [
    "QuarantineSummary",
    "RunContext",
    "RunResult",
    "detect_stage",
    "evaluate_stage",
    "export_stage",
    "features_stage",
    "fail_run",
    "finish_run",
    "poison_stage",
    "quarantine_stage",
    "retrain_stage",
    "run_cleaning",
    "start_run",
    "train_reference_stage",
]
