"""A small version of the attack x rate benchmark (bench/matrix.py), kept as a regression test: complete
runs on 8,000 Fashion-MNIST images with a 3-epoch model, with floors on what the combined verdict must
reach, so detection cannot silently get worse. No poison rate and no target are given to the detectors.

A 3-epoch model on 8,000 images learns neither WaNet nor SIG (attack success stays near the base
rate), so these two check the pixel-space voters: ``input_gap`` finds SIG's sinusoid, and the fallback
voter ``input_neighbours`` finds WaNet's relabelled images among their own kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sanitize.config import ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.evaluate.metrics import detection_figures
from sanitize.ingest.core import ingest_path
from sanitize.ingest.readers import read_source
from sanitize.pipeline import run_cleaning
from sanitize.workspace import Workspace

FMNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST, EPOCHS = 8000, 1000, 3

pytestmark = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)"
)


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The first 8,000 training and 1,000 test images of Fashion-MNIST, ingested once for the module."""
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for batch in read_source(FMNIST, format="idx"):
        for img, lab, split in zip(batch.images, batch.labels, batch.splits, strict=True):
            if len(labels[split]) < (N_TRAIN if split == "train" else N_TEST):
                images[split].append(img)
                labels[split].append(int(lab))
    root = tmp_path_factory.mktemp("quality")
    path = root / "fmnist-small.npz"
    np.savez(
        path,
        x_train=np.stack(images["train"]),
        y_train=np.array(labels["train"]),
        x_test=np.stack(images["test"]),
        y_test=np.array(labels["test"]),
    )
    ws = Workspace(Settings(home=root / "home", catalog_url=None))
    ingest_path(ws.catalog, ws.store, dataset="fmnist-small", path=path, source="zalando", actor="test")
    return ws


def combined_figures(ws: Workspace, attack: str | None, rate: float) -> tuple[dict, dict]:
    redteam = RedTeamConfig(attack=attack, rate=rate, target=0) if attack else None
    config = RunConfig(dataset="fmnist-small", redteam=redteam, model=ModelConfig(epochs=EPOCHS), retrain=False)
    result = run_cleaning(config, ws, progress=False)
    verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["sample_id", "quarantine", "suspicion_score"])
    is_poison = np.zeros(verdict.num_rows, dtype=bool)
    if attack:
        truth = pq.read_table(result.run_dir / "ground_truth.parquet")
        poisons = {s for s, p in zip(truth["sample_id"].to_pylist(), truth["is_poison"].to_pylist(), strict=True) if p}
        is_poison = np.array([s in poisons for s in verdict["sample_id"].to_pylist()])
    fig = detection_figures(is_poison, verdict["quarantine"].to_numpy(), verdict["suspicion_score"].to_numpy())
    return fig.as_dict(), result.summary


@pytest.mark.parametrize(
    ("attack", "rate"),
    [("badnets", 0.02), ("blend", 0.05)],
    ids=["badnets-2%", "blend-5%"],
)
def test_poisons_are_found_without_the_rate(small_fmnist: Workspace, attack: str, rate: float) -> None:
    fig, summary = combined_figures(small_fmnist, attack, rate)

    # Measured at this size: recall 1.000 with 1.00x (BadNets) and 1.06x (Blend) quarantined.
    assert fig["recall"] >= 0.95, fig
    assert fig["quarantined"] <= 1.5 * fig["n_poison"], fig
    assert fig["auroc"] >= 0.98, fig
    assert summary["asr_before"] >= 0.9, "the attack must have worked for the test to mean anything"
    assert summary["estimated_poison_rate"] == pytest.approx(rate, abs=0.5 * rate)


def test_clean_data_stays_clean(small_fmnist: Workspace) -> None:
    fig, summary = combined_figures(small_fmnist, None, 0.0)

    assert fig["quarantined"] <= 0.005 * N_TRAIN, fig
    assert summary["quarantined"] == fig["quarantined"]


def test_clean_label_sig_is_found_in_the_pixels(small_fmnist: Workspace) -> None:
    fig, summary = combined_figures(small_fmnist, "sig", 0.01)

    # Measured at this size: the 80 poisons (a tenth of the target class) and nothing else.
    assert fig["n_poison"] == 80
    assert fig["recall"] >= 0.95, fig
    assert fig["quarantined"] <= 1.5 * fig["n_poison"], fig
    assert fig["auroc"] >= 0.98, fig


def test_dirty_label_poisons_the_model_did_not_learn_are_found_in_the_pixels(small_fmnist: Workspace) -> None:
    fig, summary = combined_figures(small_fmnist, "wanet", 0.02)

    # Measured at this size: 170 quarantined for 160 poisons, recall 0.975, AUROC 0.999 (201 and 0.956
    # before the voter learnt the trigger); the model's attack success was 0.06, so no feature-space
    # voter could see them.
    assert fig["n_poison"] == 160
    assert fig["recall"] >= 0.9, fig
    assert fig["quarantined"] <= 1.5 * fig["n_poison"], fig
    assert fig["auroc"] >= 0.98, fig
    assert summary["asr_before"] < 0.2, "the model must not have learnt the warp, or this tests the other voters"
