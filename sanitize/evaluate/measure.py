"""Measuring a run's models on its version's test split: clean accuracy before and after cleaning,
and for red-team runs the detection against the ground truth and the attack success rate (ASR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sanitize.config import RedTeamConfig
from sanitize.evaluate.metrics import detection_figures
from sanitize.evaluate.redteam import Attack, attack_of, get_attack
from sanitize.models import load_torchscript, pick_device, to_tensor
from sanitize.runs import RunContext
from sanitize.store import decode_pixels
from sanitize.training import feature_layer
from sanitize.workspace import Workspace


def predict_split(
    ws: Workspace,
    ctx: RunContext,
    model_path: Path,
    attack: str | Attack | None = None,
    not_label: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A model's predicted classes on the run's test split, with the true labels: (pred, labels), each
    (n,) int64. ``attack`` (a name or an :class:`Attack`) applies that attack's test-time trigger first;
    ``not_label`` leaves out the images of that class."""
    if isinstance(attack, str):
        attack = get_attack(attack)
    model = load_torchscript(model_path, feature_layer(ctx))
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
                x = attack.trigger(x)
            if len(y):
                preds.append(model(to_tensor(x).to(dev)).argmax(1).cpu().numpy())
                labels.append(y)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(preds), np.concatenate(labels)


def measure_run(
    ws: Workspace, ctx: RunContext, reference_model: Path, clean_model: Path | None, verdict_path: Path
) -> dict[str, Any]:
    """Clean test accuracy before and after cleaning (``clean_acc_before``/``_after``, None without a
    test split or a clean model); for red-team runs also the detection figures against the ground
    truth and ``asr_before``/``asr_after``."""
    figures: dict[str, Any] = {}
    has_test = ctx.manifest(ws).n_test > 0
    models = (("before", reference_model), ("after", clean_model))
    for tag, path in models:
        if path is None or not has_test:
            figures[f"clean_acc_{tag}"] = None
            continue
        pred, y = predict_split(ws, ctx, path)
        figures[f"clean_acc_{tag}"] = float((pred == y).mean())
    rt = ctx.config.redteam
    if rt is None:
        return figures
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
    for tag, path in models:
        if path is None or not has_test:
            figures[f"asr_{tag}"] = None
            continue
        figures[f"asr_{tag}"] = attack_success(ws, ctx, path)
    return figures


def attack_success(ws: Workspace, ctx: RunContext, model_path: Path, rt: RedTeamConfig | None = None) -> float | None:
    """The attack success rate of the red team ``rt`` (the run's own by default) against a model: the
    share of the test images the attack aims at (those outside the target; every image for all-to-all;
    the source class's for TaCT) that the triggered image makes the model predict as the attacker
    wants. None when the test split has no such image."""
    rt = rt or ctx.config.redteam
    if rt is None:
        raise ValueError(f"run {ctx.run_id} has no red team: there is no attack to measure")
    attack = attack_of(rt)
    pred, y = predict_split(ws, ctx, model_path, attack=attack)
    keep, goal = attack.goal(y, rt.target, ctx.manifest(ws).classes, rt.seed)
    return float((pred[keep] == goal[keep]).mean()) if keep.any() else None
