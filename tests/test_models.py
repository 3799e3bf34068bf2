"""The package's models: the choice of architecture, the colour CNN, and the training augmentation
(random small warps)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sanitize.config import ModelConfig, RunConfig
from sanitize.features import feature_function
from sanitize.models import (
    FEATURE_LAYER,
    build_model,
    default_architecture,
    load_torchscript,
    model_input_size,
    random_warps,
    save_torchscript,
    to_tensor,
    train,
)
from sanitize.store import Manifest
from sanitize.training import architecture


def _batch() -> torch.Tensor:
    # Smooth images (a blurred random pattern), as natural images are: a sub-pixel warp moves them little.
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def test_warps_move_the_chosen_share_of_a_batch_a_little() -> None:
    x = _batch()
    torch.manual_seed(0)

    out = random_warps(x, share=0.5)

    moved = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert out.shape == x.shape
    assert 16 <= int(moved.sum()) <= 48  # about half
    assert torch.equal(out[~moved], x[~moved])
    # At most a pixel or so of displacement: the warped image stays close to the original.
    assert float((out - x).abs().mean()) < 0.05


def test_warps_repeat_under_one_seed_and_leave_a_batch_alone_at_share_zero() -> None:
    x = _batch()
    torch.manual_seed(3)
    first = random_warps(x, share=1.0)
    torch.manual_seed(3)
    again = random_warps(x, share=1.0)

    assert torch.equal(first, again)
    assert not torch.equal(first, x)
    assert torch.equal(random_warps(x, share=0.0), x)


def test_a_stronger_warp_moves_images_further() -> None:
    x = _batch()
    torch.manual_seed(1)
    weak = random_warps(x, strength=0.01, share=1.0)
    torch.manual_seed(1)
    strong = random_warps(x, strength=0.1, share=1.0)

    assert float((strong - x).abs().mean()) > 3 * float((weak - x).abs().mean())


def test_the_default_architecture_is_chosen_by_shape_and_device() -> None:
    # Colour 32x32 and up: ResNet-18 where there is a GPU, the compact colour CNN on a CPU.
    assert default_architecture(32, 32, 3, device="cpu") == "colour_cnn"
    assert default_architecture(224, 160, 3, device="cpu") == "colour_cnn"
    assert default_architecture(32, 32, 3, device="cuda") == "resnet18"
    assert default_architecture(64, 64, 3, device=torch.device("cuda:0")) == "resnet18"
    # Grey images and small colour ones: the small CNN on either (digits and Fashion-MNIST as before).
    for device in ("cpu", "cuda"):
        assert default_architecture(28, 28, 1, device=device) == "cnn"
        assert default_architecture(8, 8, 1, device=device) == "cnn"
        assert default_architecture(16, 16, 3, device=device) == "cnn"


@pytest.mark.parametrize(("side", "seen"), [(32, 32), (64, 64), (96, 64)])
def test_the_colour_cnn_pools_large_images_and_exposes_its_feature_layer(side: int, seen: int, tmp_path: Path) -> None:
    assert model_input_size("colour_cnn", side, side) == (seen, seen)
    assert model_input_size("resnet18", side, side) == (side, side)
    torch.manual_seed(0)
    model = build_model("colour_cnn", in_channels=3, n_classes=7, image_size=(side, side)).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    x = to_tensor(images)

    with torch.no_grad():
        if side > seen:
            assert tuple(model.resize(x).shape) == (2, 3, seen, seen)
        else:
            assert model.resize is None
        feats, logits = feature_function(model, FEATURE_LAYER)(x)
        # Saved as a run saves it, the TorchScript model pools inside too and gives the same features.
        scripted = load_torchscript(save_torchscript(model, tmp_path / "m.pt", images), FEATURE_LAYER)
        script_feats, script_logits = feature_function(scripted, FEATURE_LAYER)(x)

    assert tuple(logits.shape) == (2, 7)
    assert tuple(feats.shape) == (2, 256)
    assert torch.allclose(script_feats, feats, atol=1e-5)
    assert torch.allclose(script_logits, logits, atol=1e-5)


def test_the_colour_cnn_learns_a_small_patch_on_colour_backgrounds() -> None:
    # 2 classes, 320 noisy images on random colour backgrounds; class 1 carries a bright 5x5 patch
    # at a random place. Six epochs of the package's loop must tell them apart on unseen images.
    rng = np.random.default_rng(0)
    n = 400
    labels = np.arange(n) % 2
    images = rng.uniform(0, 200, (n, 1, 1, 3)) + rng.normal(0, 20, (n, 32, 32, 3))
    for i in np.flatnonzero(labels == 1):
        r, c = rng.integers(2, 25, 2)
        images[i, r : r + 5, c : c + 5] = 255
    images = np.clip(images, 0, 255).astype(np.uint8)
    torch.manual_seed(0)
    model = build_model("colour_cnn", in_channels=3, n_classes=2, image_size=(32, 32))

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng(epoch).permutation(320)
        for i in range(0, 320, 32):
            yield images[order[i : i + 32]], labels[order[i : i + 32]]

    train(model, batches, epochs=6, lr=2e-3, device="cpu", progress=False, n_batches=10)

    with torch.no_grad():
        predictions = model(to_tensor(images[320:])).argmax(1).numpy()
    assert (predictions == labels[320:]).mean() >= 0.9


def test_a_run_chooses_for_the_device_it_trains_on_and_an_explicit_arch_wins() -> None:
    def manifest(side: int, channels: int) -> Manifest:
        return Manifest("v1", "d", "ingest", (), 100, 0, side, side, channels, (0, 1))

    def config(**model: str) -> RunConfig:
        return RunConfig(model=ModelConfig(**model))

    assert architecture(config(device="cpu"), manifest(32, 3)) == "colour_cnn"
    assert architecture(config(device="cuda"), manifest(32, 3)) == "resnet18"
    assert architecture(config(device="cuda"), manifest(28, 1)) == "cnn"
    assert architecture(config(device="cpu", arch="resnet18"), manifest(32, 3)) == "resnet18"
    assert architecture(config(device="cuda", arch="colour_cnn"), manifest(96, 3)) == "colour_cnn"


def test_training_logs_its_progress_with_the_time_left() -> None:
    """Issue 16: a run shows its training's progress (about ten lines, epoch, loss and time left) on the
    run's log, which the CLI prints and each Prefect task forwards."""
    import logging

    from sanitize.models import build_model, train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(32, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 2, size=32)
    model = build_model("cnn", in_channels=1, n_classes=2, image_size=(8, 8))
    seen: list[str] = []
    progress: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    # The run's own logger (the CLI may have stopped it propagating to the root's handlers).
    log = logging.getLogger("sanitize.run")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        train(model, lambda e: iter([(x, y)]), epochs=20, progress=False, n_batches=1, on_progress=progress.append)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    lines = [m for m in seen if m.startswith("train: ")]
    assert lines == progress, "the run's context gets the same lines"
    assert len(lines) == 10
    assert lines[0].startswith("train: epoch 2/20, loss ") and "left" in lines[0]
    assert lines[-1].startswith("train: epoch 20/20") and lines[-1].endswith("about 0 s left")
