"""The CUDA paths: training, features and k-NN on a GPU give what the CPU gives.

CI has no GPU, so these skip there; they run where torch sees a CUDA device (bench/gpu_check.sh).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_detectors import _stamped_images

from sanitize.config import ModelConfig, RedTeamConfig, RunConfig
from sanitize.detect import InputNeighbours
from sanitize.detect.knn import knn_search
from sanitize.features import extract_features, load_features
from sanitize.models import FEATURE_LAYER, load_torchscript, pick_device
from sanitize.pipeline import run_cleaning
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_picks_the_gpu() -> None:
    assert pick_device("auto").type == "cuda"


def test_the_demo_run_trains_on_the_gpu_and_finds_the_poisons(workspace: Workspace) -> None:
    config = RunConfig(redteam=RedTeamConfig(), model=ModelConfig(device="auto"))

    result = run_cleaning(config, workspace, progress=False)

    meta = json.loads((result.run_dir / "model_reference.json").read_text())
    assert meta["train_report"]["device"].startswith("cuda")
    s = result.summary
    assert s["recall"] >= 0.95 and s["quarantined"] <= 1.5 * s["n_poison"]
    assert s["asr_after"] <= 0.05 and s["clean_acc_after"] >= 0.9

    # The same model's features on the CPU match the GPU's: the CUDA path changes speed, not answers.
    ctx = RunContext.load(workspace, result.run_id)
    model = load_torchscript(result.run_dir / "model_reference.pt", FEATURE_LAYER)
    cpu_path = extract_features(
        model,
        FEATURE_LAYER,
        workspace.store,
        ctx.manifest(workspace),
        result.run_dir / "f_cpu.parquet",
        device="cpu",
        progress=False,
    )
    ids_gpu, f_gpu, _, _ = load_features(result.run_dir / "features.parquet")
    ids_cpu, f_cpu, _, _ = load_features(cpu_path)
    assert ids_gpu == ids_cpu
    np.testing.assert_allclose(f_gpu, f_cpu, rtol=1e-3, atol=1e-3 * float(np.abs(f_cpu).max()))


def test_knn_on_the_gpu_finds_the_cpu_neighbours() -> None:
    x = np.random.default_rng(0).normal(size=(20000, 128)).astype(np.float32)

    d_gpu, i_gpu = knn_search(x, 20, use_gpu=True)
    d_cpu, i_cpu = knn_search(x, 20, use_gpu=False)

    assert (i_gpu == i_cpu).mean() > 0.999
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-4, atol=1e-3)


def test_input_neighbours_learns_the_trigger_on_the_gpu_as_on_the_cpu() -> None:
    x, y, poisons, lookalikes = _stamped_images(np.random.default_rng(0))

    gpu = InputNeighbours(n_components=None, device="cuda").detect(x, y)
    cpu = InputNeighbours(n_components=None, device="cpu").detect(x, y)

    # CUDA kernels round differently, so the CNNs' probabilities differ a little; the flags do not.
    assert gpu.flags[poisons].all() and not gpu.flags[lookalikes].any()
    assert (gpu.flags != cpu.flags).sum() <= 2
    assert gpu.thresholds[0] == 1.5
