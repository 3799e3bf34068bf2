"""The conductor of a cleaning run: the stages in the order a sample travels through them.

Each stage is a short adapter that times itself and calls the module that does the work:

======================  ==========================================================
stage                   where the work is
======================  ==========================================================
start                   :func:`sanitize.runs.start_run` (the run's context and catalog row)
poison (red team)       :func:`sanitize.evaluate.redteam.poison_version`
train reference         :func:`sanitize.training.train_reference`
features                :func:`sanitize.features.extract_features`
detect                  :func:`sanitize.detect.detect`, :func:`~sanitize.detect.write_verdict`
quarantine              :func:`sanitize.quarantine.enter_quarantine`
retrain                 :func:`sanitize.training.train_clean`
evaluate                :func:`sanitize.evaluate.measure.measure_run`
export                  :func:`sanitize.runs.approval_for`, :func:`sanitize.export.export_clean_version`
finish                  :func:`finish_run` (the summary), :func:`sanitize.runs.complete_run`
======================  ==========================================================

Stages take the workspace and the run's context and return paths, so the Prefect flow in ``flows/``
can call them as tasks and pass file paths, not arrays. :func:`run_cleaning` calls them in order for
direct use (the CLI without Prefect, tests, benchmarks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sanitize import runs
from sanitize.catalog import Dataset
from sanitize.config import DEFAULT_DATASET, RunConfig
from sanitize.demo import ingest_demo
from sanitize.detect import detect, write_verdict
from sanitize.errors import InvariantError
from sanitize.evaluate.measure import measure_run
from sanitize.evaluate.redteam import poison_version
from sanitize.export import export_clean_version
from sanitize.faults import pause_point
from sanitize.features import StoredResponder, extract_features, load_features, load_inputs, load_sources
from sanitize.models import load_torchscript
from sanitize.provenance import source_verdicts
from sanitize.quarantine import QuarantineSummary, enter_quarantine, pending_count, quarantined_ids
from sanitize.runs import RunContext, approval_for, complete_run, fail_run, git_commit, machine
from sanitize.store import Manifest
from sanitize.training import (
    check_user_model,
    dynamics_path,
    feature_layer,
    load_dynamics,
    reference_model_path,
    train_clean,
    train_reference,
)
from sanitize.workspace import Workspace


def check_run(ws: Workspace, config: RunConfig) -> str:
    """Refuse, before anything is written, a run that cannot work: no such version, a version it
    cannot clean, a user's model that does not fit it. The built-in default dataset is ingested on
    first use. Returns the version the run would clean."""
    _ingest_default(ws, config)
    return runs.check_run(ws, config, _model_check(ws, config))


def start_run(ws: Workspace, config: RunConfig) -> RunContext:
    """Record a running run of the configured version, once the checks of :func:`check_run` pass."""
    _ingest_default(ws, config)
    ctx = runs.start_run(ws, config, _model_check(ws, config))
    runs.log.info("run %s: cleaning %s version %s", ctx.run_id, ctx.dataset, ctx.version)
    if not ctx.manifest(ws).n_test:
        runs.log.warning("%s", _no_test_split(ctx))
    pause_point("start")
    return ctx


def _no_test_split(ctx: RunContext) -> str:
    return (
        f"version {ctx.ingested_version} of {ctx.dataset!r} has no test split: clean accuracy"
        + (" and the attack success rate" if ctx.config.redteam else "")
        + " cannot be measured"
    )


def _ingest_default(ws: Workspace, config: RunConfig) -> None:
    with ws.catalog.session() as s:
        has_dataset = s.get(Dataset, config.dataset) is not None
    if not has_dataset and config.dataset == DEFAULT_DATASET:
        ingest_demo(ws, config.dataset)


def _model_check(ws: Workspace, config: RunConfig) -> Callable[[Manifest], None]:
    return lambda manifest: check_user_model(ws, config, manifest)


def poison_stage(ws: Workspace, ctx: RunContext) -> RunContext:
    """For red-team runs: a poisoned copy of the train split as a new version, and the ground truth."""
    if ctx.config.redteam is None:
        return ctx
    with ctx.stage("poison"):
        ctx = poison_version(ws, ctx)
    return ctx


def train_reference_stage(ws: Workspace, ctx: RunContext, progress: bool = True) -> Path:
    """Train the reference model on the (possibly poisoned) train split, or use the user's TorchScript."""
    with ctx.stage("train_reference"):
        return train_reference(ws, ctx, progress=progress)


def features_stage(ws: Workspace, ctx: RunContext, model_path: Path, progress: bool = True) -> Path:
    """Penultimate-layer features of every sample, stored keyed by sample_id."""
    with ctx.stage("features"):
        layer = feature_layer(ctx)
        return extract_features(
            load_torchscript(model_path, layer),
            layer,
            ws.store,
            ctx.manifest(ws),
            ctx.run_dir / "features.parquet",
            device=ctx.config.model.device,
            progress=progress,
        )


def detect_stage(ws: Workspace, ctx: RunContext, features_path: Path) -> Path:
    """Run every configured detector on the train features and combine the voters into one verdict."""
    with ctx.stage("detect"):
        ids, feats, labels, _ = load_features(features_path, split="train")
        verdict, seconds = detect(
            ctx.config.detect,
            feats,
            labels,
            lambda: load_inputs(ws.store, ctx.manifest(ws), ids),  # read only if an input-space detector runs
            random_state=ctx.config.seed,
            sources=lambda: load_sources(ws.store, ctx.manifest(ws), ids),
            dynamics=lambda: load_dynamics(dynamics_path(ctx.run_dir / "model_reference.pt"), ids),
            response=lambda: responder(ws, ctx, ids),
        )
        return write_verdict(ctx.run_dir, ids, labels, verdict, seconds)


def responder(ws: Workspace, ctx: RunContext, ids: list[str]) -> StoredResponder:
    """The run's reference model (the user's TorchScript where given) and its training images, for
    the detectors that test how the model responds to a group's pattern."""
    model = load_torchscript(reference_model_path(ctx), feature_layer(ctx))
    return StoredResponder(model, ws.store, ctx.manifest(ws), ids, device=ctx.config.model.device)


def quarantine_stage(ws: Workspace, ctx: RunContext, verdict_path: Path) -> QuarantineSummary:
    """Enter flagged samples into the quarantine (status pending); kept + quarantined = ingested."""
    with ctx.stage("quarantine"):
        return enter_quarantine(ws, ctx, verdict_path)


def retrain_stage(ws: Workspace, ctx: RunContext, verdict_path: Path, progress: bool = True) -> Path | None:
    """Retrain the reference architecture on the kept samples (when the run retrains)."""
    if not ctx.config.retrain:
        return None
    with ctx.stage("retrain"):
        return train_clean(ws, ctx, quarantined_ids(ws, ctx.run_id, verdict_path), progress=progress)


def evaluate_stage(
    ws: Workspace, ctx: RunContext, reference_model: Path, clean_model: Path | None, verdict_path: Path
) -> dict[str, Any]:
    """Clean test accuracy before and after cleaning; for red-team runs also detection figures and ASR."""
    with ctx.stage("evaluate"):
        return measure_run(ws, ctx, reference_model, clean_model, verdict_path)


def export_stage(ws: Workspace, ctx: RunContext, verdict_path: Path, figures: dict[str, Any] | None = None) -> str:
    """Write the clean version (kept samples) for training jobs (:mod:`sanitize.export`), approved or
    provisional as :func:`sanitize.runs.approval_for` decides from the policy, the quarantine and the
    red team's ``figures`` (the evaluation's)."""
    with ctx.stage("export"):
        ctx.approval = approval_for(ws, ctx, figures or {}, pending_count(ws, ctx.run_id))
        vid = export_clean_version(
            ws,
            ctx.dataset,
            ctx.version,
            ctx.run_id,
            quarantined_ids(ws, ctx.run_id, verdict_path),
            ctx.config.model_dump(mode="json"),
            status=ctx.approval["version_status"],
        )
        with ws.catalog.session() as s:
            published = ws.catalog.version(s, vid)
            if published.status != ctx.approval["version_status"]:  # published before, by another run
                ctx.approval["why"] += f"; the same version, published by run {published.run_id}, is {published.status}"
                ctx.approval["version_status"] = published.status
        log = runs.log.warning if ctx.approval["detection_failed"] else runs.log.info
        log("clean version %s is %s: %s", vid, ctx.approval["version_status"], ctx.approval["why"])
        return vid


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
    """Record the run's summary (counts, per-source verdicts, figures, timings) and mark it completed."""
    pause_point("finish")
    detection = json.loads((ctx.run_dir / "detection.json").read_text())
    prov = ws.store.read_column_table(ctx.manifest(ws), ["sample_id", "source"], split="train")
    verdict = pq.read_table(ctx.run_dir / "verdict.parquet", columns=["sample_id", "quarantine"])
    if prov.column("sample_id").to_pylist() != verdict.column("sample_id").to_pylist():
        raise InvariantError(f"run {ctx.run_id}: the verdict's samples are not the version's training samples")
    sources = source_verdicts(prov.column("source").to_pylist(), verdict.column("quarantine").to_numpy())
    n_test = ctx.manifest(ws).n_test
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "dataset": ctx.dataset,
        "ingested_version": ctx.ingested_version,
        "version": ctx.version,
        "clean_version": clean_version,
        "estimated_poison_rate": detection["estimated_rate_overall"],
        "estimated_rate_per_class": detection["estimated_rate"],
        "looks_clean": counts.quarantined == 0,
        "per_source": {v.source: v.as_dict() for v in sources},
        "suspicious_sources": [v.source for v in sources if v.suspicious],
        **figures,
        # After the figures: a red-team run's detection figures count the verdict's flags as
        # "quarantined"; the quarantine also holds poisons confirmed in earlier runs.
        "ingested": counts.ingested,
        "kept": counts.kept,
        "quarantined": counts.quarantined,
        "redteam": ctx.config.redteam.model_dump() if ctx.config.redteam else None,
        "approval": ctx.approval,
        "measurable": n_test > 0,
        "warnings": [] if n_test else [_no_test_split(ctx)],
        "timings": ctx.timings,
        "seconds": round(sum(ctx.timings.values()), 2),
        "model_reference": str(ctx.run_dir / "model_reference.pt"),
        "model_clean": str(clean_model) if clean_model else None,
        "commit": git_commit(),
        "machine": machine(),
    }
    complete_run(ws, ctx, summary, clean_version)
    return RunResult(ctx.run_id, ctx.dataset, ctx.version, clean_version, ctx.run_dir, summary)


def run_cleaning(config: RunConfig, ws: Workspace | None = None, *, progress: bool = True) -> RunResult:
    """A complete cleaning run, stage by stage, without Prefect; a failing stage fails the run."""
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
        clean_version = export_stage(ws, ctx, verdict, figures)
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
