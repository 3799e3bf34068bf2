"""The benchmarks' data: Fashion-MNIST on disk, its ingest, and a finished run's training images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from sanitize.config import Settings
from sanitize.features import load_inputs, load_sources
from sanitize.ingest.core import IngestReport, ingest_path
from sanitize.ingest.readers import read_source
from sanitize.pipeline import responder
from sanitize.runs import RunContext
from sanitize.training import dynamics_path, load_dynamics
from sanitize.workspace import Workspace

FMNIST = Path("/usr/share/datasets/fashion-mnist")
DATASET = "fashion-mnist"


def workspace(home: Path) -> Workspace:
    """The benchmark's data folder (created on first use)."""
    return Workspace(Settings(home=home.resolve()))


def require_fmnist() -> None:
    """Stop with the install command when the Fashion-MNIST IDX files are not on this machine."""
    if not FMNIST.is_dir():
        sys.exit(f"{FMNIST} is missing: apt-get install -y dataset-fashion-mnist")


def ingest_fmnist(ws: Workspace) -> IngestReport:
    """Fashion-MNIST as dataset ``fashion-mnist`` (a no-op version when it is there already)."""
    return ingest_path(ws.catalog, ws.store, dataset=DATASET, path=FMNIST, source="zalando-research", actor="bench")


def load_fmnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST's splits in memory: ``{"train": (images, labels), "test": ...}``, images uint8."""
    out: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"train": ([], []), "test": ([], [])}
    for batch in read_source(FMNIST, format="idx"):
        for img, lab, split in zip(batch.images, batch.labels, batch.splits, strict=True):
            out[split][0].append(img)
            out[split][1].append(lab)
    return {k: (np.stack(x), np.array(y, dtype=np.int64)) for k, (x, y) in out.items()}


def _run(run_dir: Path) -> tuple[Workspace, RunContext]:
    """The workspace holding a finished run's folder (``<home>/runs/<run id>``) and the run."""
    ws = Workspace(Settings(home=run_dir.resolve().parents[1]))
    return ws, RunContext.load(ws, run_dir.name)


def run_side_inputs(run_dir: Path, ids: list[str]) -> dict[str, Any]:
    """A finished run's side inputs, loaded, as the pipeline's detect stage hands them to the detectors:
    each sample's source, its training loss per epoch of the reference model (None where none was
    recorded) and the reference model's response to the training images."""
    ws, ctx = _run(run_dir)
    return {
        "sources": load_sources(ws.store, ctx.manifest(ws), ids),
        "dynamics": load_dynamics(dynamics_path(run_dir / "model_reference.pt"), ids),
        "response": responder(ws, ctx, ids),
    }


def run_inputs(run_dir: Path, ids: list[str]) -> np.ndarray:
    """A finished run's training images as the pipeline hands them to input-space detectors."""
    ws, ctx = _run(run_dir)
    return load_inputs(ws.store, ctx.manifest(ws), ids)
