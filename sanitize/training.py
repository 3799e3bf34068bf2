"""Training a run's models on a dataset version: the reference model, whose features the detectors
read, and the clean model, retrained on the kept samples, which is the one measured and handed on.

Training is deterministic in (data version, model configuration, seed), so a reference model trained
once is kept in the home (:func:`reference_cache_path`) and reused by later runs of the same three.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sanitize.config import RunConfig
from sanitize.errors import InputError
from sanitize.models import (
    AUGMENTATIONS,
    FEATURE_LAYER,
    build_model,
    default_architecture,
    load_torchscript,
    model_input_size,
    pick_device,
    save_torchscript,
    to_tensor,
    train,
)
from sanitize.runs import RunContext
from sanitize.store import Manifest, atomic_write_bytes, atomic_write_json, atomic_write_table, decode_pixels
from sanitize.workspace import Workspace


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


def feature_layer(ctx: RunContext) -> str:
    """The layer whose output is the feature: the user's model's, else the package models' penultimate."""
    return ctx.config.model.feature_layer or FEATURE_LAYER


def architecture(config: RunConfig, manifest: Manifest) -> str:
    """The run's architecture: the configuration's, or for ``auto`` the package's choice for the
    version's image shape on the device the run trains on (:func:`sanitize.models.default_architecture`)."""
    if config.model.arch != "auto":
        return config.model.arch
    return default_architecture(manifest.height, manifest.width, manifest.channels, pick_device(config.model.device))


def train_model(
    ws: Workspace,
    ctx: RunContext,
    manifest: Manifest,
    *,
    out: Path,
    exclude: set[str] | None = None,
    relabel: dict[str, int] | None = None,
    progress: bool = False,
    seed_offset: int = 0,
    augment: str = "none",
    epochs: int | None = None,
    dynamics: Path | None = None,
) -> Path:
    """Train the run's architecture on ``manifest``'s train split less ``exclude`` (with ``relabel``'s
    labels), save it as TorchScript at ``out`` and its record beside it (``out`` with ``.json``).

    ``epochs`` None takes the model configuration's, else :func:`auto_epochs` for the size;
    ``seed_offset`` separates the run's models (0 the reference, 1 the clean one); ``augment`` names
    one of :data:`sanitize.models.AUGMENTATIONS` or ``none``. ``dynamics``: where to write each
    training sample's loss in every epoch (:func:`write_dynamics`), recorded as it trains.
    """
    cfg = ctx.config.model
    arch = architecture(ctx.config, manifest)
    n_classes = max(manifest.classes) + 1
    seed = ctx.config.seed + seed_offset
    torch.manual_seed(seed)  # the initial weights too: the same config trains the same model
    image_size = (manifest.height, manifest.width)
    model = build_model(arch, in_channels=manifest.channels, n_classes=n_classes, image_size=image_size)
    n_train = manifest.n_train - len(exclude or ())
    epochs = epochs or cfg.epochs or auto_epochs(n_train)

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        return ws.store.iter_training_batches(
            manifest,
            split="train",
            batch_size=cfg.batch_size,
            seed=seed + epoch,
            exclude=exclude,
            relabel=relabel,
            with_ids=dynamics is not None,
        )

    seen: dict[str, np.ndarray] = {}

    def record(epoch: int, ids: np.ndarray, losses: np.ndarray) -> None:
        for sid, loss in zip(ids.tolist(), losses.tolist(), strict=True):
            row = seen.get(sid)
            if row is None:
                row = seen[sid] = np.full(epochs, np.nan, np.float32)
            row[epoch] = loss

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
        record=record if dynamics is not None else None,
        on_progress=ctx.report_progress,
    )
    if dynamics is not None:
        write_dynamics(dynamics, seen, epochs)
    example = next(ws.store.iter_samples(manifest, columns=["height", "width", "channels", "pixels"], batch_size=2))
    save_torchscript(model, out, decode_pixels(example))
    atomic_write_json(
        out.with_suffix(".json"),
        {
            "arch": arch,
            # "auto" chooses by device (ResNet-18 on CUDA, the compact colour CNN on a CPU for colour).
            "arch_chosen_for": str(pick_device(cfg.device)) if cfg.arch == "auto" else None,
            "image_size": list(image_size),
            "input_size": list(model_input_size(arch, *image_size)),
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


def write_dynamics(path: Path, losses: dict[str, np.ndarray], epochs: int) -> None:
    """The training dynamics: per training sample (``sample_id``), its loss in each epoch as the model
    saw it while training (``loss_1`` ... ``loss_E``, float32), in the order of the sample ids."""
    ids = sorted(losses)
    matrix = np.stack([losses[i] for i in ids]) if ids else np.zeros((0, epochs), np.float32)
    columns: dict[str, pa.Array] = {"sample_id": pa.array(ids, pa.string())}
    for e in range(epochs):
        columns[f"loss_{e + 1}"] = pa.array(matrix[:, e], pa.float32())
    atomic_write_table(path, pa.table(columns))


def dynamics_path(model_path: Path) -> Path:
    """The training dynamics recorded beside a reference model (``model_reference.dynamics.parquet``)."""
    return model_path.with_suffix(".dynamics.parquet")


def load_dynamics(path: Path, sample_ids: list[str]) -> np.ndarray | None:
    """The training dynamics at ``path`` (:func:`write_dynamics`) as (n, E) float64 in the order of
    ``sample_ids``; None where none were recorded (a user's model, a model cached before they were) or
    they do not cover every sample."""
    if not path.is_file():
        return None
    table = pq.read_table(path)
    row = {sid: i for i, sid in enumerate(table.column("sample_id").to_pylist())}
    if any(sid not in row for sid in sample_ids):
        return None
    matrix = np.stack([table.column(n).to_numpy() for n in table.column_names if n.startswith("loss_")], axis=1)
    return matrix[[row[sid] for sid in sample_ids]].astype(np.float64)


def reference_cache_path(ws: Workspace, ctx: RunContext, manifest: Manifest | None = None) -> Path:
    """Where the reference model of this (data version, model config, seed) is kept for later runs.

    Where ``auto`` chose by device (colour images: ResNet-18 on CUDA, the colour CNN on a CPU) the
    chosen architecture is part of the key, so a CPU run does not reuse a GPU run's other network;
    keys of runs whose choice does not depend on the device are as they always were.
    """
    model = ctx.config.model.model_dump(mode="json", exclude={"device"})
    payload: dict[str, object] = {"version": ctx.version, "model": model, "seed": ctx.config.seed}
    if ctx.config.model.arch == "auto":
        arch = architecture(ctx.config, manifest or ctx.manifest(ws))
        if arch != "cnn":
            payload["arch"] = arch
    key = json.dumps(payload, sort_keys=True)
    return ws.store.home / "models" / f"reference-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def check_user_model(ws: Workspace, config: RunConfig, manifest: Manifest) -> None:
    """Refuse a user's TorchScript model that cannot serve as the run's reference model: one that does
    not load, lacks its feature layer, fails on the version's images, or has a number of outputs other
    than the version's classes (labels 0 to the largest: a 3-output model on 10 classes "measured" an
    accuracy of 10 % and an attack success of 100 %)."""
    path = config.model.torchscript
    if path is None:
        return
    model = load_torchscript(path, config.model.feature_layer or "").eval()
    example = next(ws.store.iter_samples(manifest, columns=["height", "width", "channels", "pixels"], batch_size=2))
    images = decode_pixels(example)
    try:
        with torch.no_grad():
            out = model(to_tensor(images))
    except Exception as exc:  # a TorchScript module raises torch's own errors for a wrong input
        raise InputError(
            f"model {path} fails on dataset {manifest.dataset!r}'s images of shape {images.shape[1:]}: {exc}"
        ) from exc
    n_classes = max(manifest.classes) + 1
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != n_classes:
        got = (
            f"{out.shape[1]} outputs per image"
            if isinstance(out, torch.Tensor) and out.ndim == 2
            else (
                f"an output of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            )
        )
        raise InputError(
            f"model {path} gives {got}, but dataset {manifest.dataset!r} version {manifest.version_id} has "
            f"{n_classes} classes (labels 0 to {n_classes - 1}): its last layer needs one output per class"
        )


def reference_model_path(ctx: RunContext) -> Path:
    """Where the run's reference model is: the user's TorchScript, else ``model_reference.pt`` in the run."""
    custom = ctx.config.model.torchscript
    return Path(custom) if custom is not None else ctx.run_dir / "model_reference.pt"


def train_reference(ws: Workspace, ctx: RunContext, *, progress: bool = False) -> Path:
    """The run's reference model: the user's TorchScript (checked to load with its feature layer), a
    copy of the one an earlier run of the same version, model and seed trained, or a new one."""
    out = reference_model_path(ctx)
    if ctx.config.model.torchscript is not None:
        load_torchscript(out, ctx.config.model.feature_layer or "")
        return out
    manifest = ctx.manifest(ws)
    cached = reference_cache_path(ws, ctx, manifest)
    if cached.is_file() and cached.with_suffix(".json").is_file():
        # Training is deterministic in (data version, model config, seed): an earlier run of the same
        # three trained exactly this model, so reuse it rather than spend minutes training it again.
        atomic_write_bytes(out, cached.read_bytes())
        meta = json.loads(cached.with_suffix(".json").read_text())
        if dynamics_path(cached).is_file():  # a model cached before dynamics were recorded has none
            atomic_write_bytes(dynamics_path(out), dynamics_path(cached).read_bytes())
        atomic_write_json(out.with_suffix(".json"), {**meta, "reused_by": ctx.run_id})
        return out
    train_model(ws, ctx, manifest, out=out, progress=progress, dynamics=dynamics_path(out))
    atomic_write_bytes(dynamics_path(cached), dynamics_path(out).read_bytes())
    atomic_write_json(cached.with_suffix(".json"), json.loads(out.with_suffix(".json").read_text()))
    atomic_write_bytes(cached, out.read_bytes())
    return out


def train_clean(ws: Workspace, ctx: RunContext, quarantined: set[str], *, progress: bool = False) -> Path:
    """The clean model: the reference architecture retrained without ``quarantined``, for
    :func:`retrain_epochs` and with the run's ``retrain_augment``, saved with the run."""
    manifest = ctx.manifest(ws)
    return train_model(
        ws,
        ctx,
        manifest,
        out=ctx.run_dir / "model_clean.pt",
        exclude=quarantined,
        progress=progress,
        seed_offset=1,
        augment=ctx.config.retrain_augment,
        epochs=retrain_epochs(ctx.config, manifest.n_train),
    )
