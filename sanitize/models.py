"""Reference models: small networks defined here (no hub downloads), their training loop, and
loading a user's own TorchScript model.

Every model exposes its penultimate layer as the attribute named by ``FEATURE_LAYER`` so that
:mod:`sanitize.features` can hook it; a user's TorchScript model names its own layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)
progress_log = logging.getLogger("sanitize.run")


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


#: Name of the sub-module whose output is the penultimate-layer feature in the package's models.
FEATURE_LAYER = "embed"

Batch = tuple[np.ndarray, ...]
"""A training batch: images (B, H, W, C) uint8 and labels (B,) int64."""


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present and asked for (``auto``), else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [0, 1]."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, H, W, C), got {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


class SmallCNN(nn.Module):
    """A compact CNN for small grey or colour images (8x8 digits up to 28x28 Fashion-MNIST).

    Two convolution stages and an adaptive pool to 4x4 keep the trigger's position visible to the
    classifier while the cost stays low on a 2-core CPU (about 8 M multiply-adds at 28x28).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 32, embed_dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(4),
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, embed_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(self.features(x))))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18-style network for 32x32 colour images (He et al., 2016; CIFAR stem: 3x3, no pool)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10, base: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU())
        layers: list[nn.Module] = []
        cin = base
        for i, cout in enumerate([base, 2 * base, 4 * base, 8 * base]):
            stride = 1 if i == 0 else 2
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.layers(self.stem(x))))


COLOUR_MAX_SIDE = 64
"""The longest side :class:`ColourCNN` looks at: larger images are average-pooled down to it at the
model's input (a 3x3 patch at 96x96 is still two pixels), so a 224x224 image costs what a 64x64 one
does instead of 49 times a 32x32 one."""


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ColourCNN(nn.Module):
    """A compact VGG-style network for colour images on a CPU: the default there for colour 32x32 and up.

    Three stages of 3x3 convolutions with BatchNorm (width, 2x and 4x width channels, each halving the
    side) and an adaptive max pool to 4x4, as :class:`SmallCNN` does, so that a small trigger's
    position stays visible to the classifier. With ``input_size`` (see :func:`model_input_size`) the
    images are average-pooled to it first, inside the model, so training, feature extraction and a
    saved TorchScript model all see the same input. On 2 CPU cores it trains on 10,000 32x32 images
    for 15 epochs in 83 s, where a ResNet-18 takes about 52 minutes (``bench/RESULTS.md``, "A colour
    model for the CPU").
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 10,
        width: int = 32,
        embed_dim: int = 256,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.input_size = input_size
        # No module at all at the image's own size: a traced Identity takes no input, and a TorchScript
        # model's feature layer is read by applying its top-level children in order.
        self.resize = nn.AdaptiveAvgPool2d(input_size) if input_size is not None else None
        self.features = nn.Sequential(
            *_conv_bn(in_channels, width),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(2 * width, 4 * width),
            nn.AdaptiveMaxPool2d(4),
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 16, embed_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = self.resize(x)
        return self.head(self.dropout(self.embed(self.features(x))))


ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": SmallCNN, "resnet18": ResNet18, "colour_cnn": ColourCNN}


def model_input_size(arch: str, height: int, width: int) -> tuple[int, int]:
    """The (height, width) architecture ``arch`` sees for images of ``height`` x ``width``: the image's
    own, except that :class:`ColourCNN` pools images larger than :data:`COLOUR_MAX_SIDE` a side down to
    it, keeping the aspect ratio."""
    longest = max(height, width)
    if arch != "colour_cnn" or longest <= COLOUR_MAX_SIDE:
        return height, width
    scale = COLOUR_MAX_SIDE / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def build_model(arch: str, *, in_channels: int, n_classes: int, image_size: tuple[int, int] | None = None) -> nn.Module:
    """Build one of the package's architectures by name (see :data:`ARCHITECTURES`).

    ``image_size`` (height, width) lets :class:`ColourCNN` pool larger images down to
    :func:`model_input_size`; the other architectures take images as they are.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if arch == "colour_cnn" and image_size is not None:
        size = model_input_size(arch, *image_size)
        return ColourCNN(in_channels=in_channels, n_classes=n_classes, input_size=None if size == image_size else size)
    return ARCHITECTURES[arch](in_channels=in_channels, n_classes=n_classes)


def default_architecture(height: int, width: int, channels: int, device: str | torch.device = "auto") -> str:
    """The package's choice for an image shape and the device it trains on.

    Colour 32x32 and up: ResNet-18 on CUDA, :class:`ColourCNN` on a CPU (a ResNet-18 step of 128
    32x32 images took 40 s on 2 cores, so a 1,500-image run took hours); anything else: the
    :class:`SmallCNN`, on any device (the digits and Fashion-MNIST as they always were).
    """
    if channels != 3 or min(height, width) < 32:
        return "cnn"
    return "resnet18" if pick_device(str(device)).type == "cuda" else "colour_cnn"


def random_warps(x: torch.Tensor, *, strength: float = 0.036, share: float = 0.5) -> torch.Tensor:
    """Resample a random ``share`` of a batch (B, C, H, W) through random smooth warps.

    Each chosen image gets its own displacement field: a coarse grid (3x3 to 6x6, one size per batch)
    of random offsets, interpolated bicubically to the image, with a mean displacement drawn uniformly
    up to ``strength`` of the image side (0.036: one pixel at 28x28). A model trained so is moved less
    by small warps: by a warping trigger whose poisons escaped the detectors, and by the look-alikes
    a warp makes (a warped shirt read as a T-shirt). Draws from torch's RNG, so ``torch.manual_seed``
    makes it repeatable.
    """
    n, _, h, w = x.shape
    chosen = torch.rand(n, device=x.device) < share
    m = int(chosen.sum())
    if m == 0:
        return x
    k = int(torch.randint(3, 7, (1,)))
    grid = torch.rand(m, 2, k, k, device=x.device) * 2 - 1
    grid = grid / grid.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    # Normalized coordinates span 2 over the side, so a displacement of strength * side is 2 * strength.
    size = torch.rand(m, 1, 1, 1, device=x.device) * (2 * strength)
    field = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True) * size
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij"
    )
    sample_at = (torch.stack([xs, ys], dim=-1) + field.permute(0, 2, 3, 1)).clamp(-1, 1)
    out = x.clone()
    out[chosen] = F.grid_sample(x[chosen], sample_at, mode="bilinear", padding_mode="border", align_corners=True)
    return out


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"warp": random_warps}
"""Training-time augmentations by the name a run's config gives them."""


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: epochs, final mean loss, seconds, device."""

    epochs: int
    final_loss: float
    seconds: float
    device: str


def _layout(model: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """``model`` with its parameters in ``memory_format`` (in place; torch's stubs lack the keyword)."""
    return cast(nn.Module, cast(Any, model).to(memory_format=memory_format))


def train(
    model: nn.Module,
    batches: Callable[[int], Iterable[Batch]],
    *,
    epochs: int = 4,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    n_batches: int | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    record: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> TrainReport:
    """Train ``model`` with AdamW and a one-cycle schedule.

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    batches : callable
        ``batches(epoch)`` yields ``(images (B,H,W,C) uint8, labels (B,) int64)``, shuffled by the
        caller; streaming from the store keeps memory bounded by the batch size.
    n_batches : int, optional
        Batches per epoch, for the learning-rate schedule and progress bar.
    augment : callable, optional
        Applied to each batch (B, C, H, W, float in [0, 1], on the device) before the forward pass,
        for example :func:`random_warps`.
    record : callable, optional
        ``record(epoch, sample_ids, losses)`` after each step, with the per-sample training loss of the
        step's forward pass (no extra computation), where ``batches`` yields ``(images, labels, ids)``:
        the training dynamics that the loss-dynamics detector reads.
    on_progress : callable, optional
        Called with each progress line the run's log gets (about ten a training).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    dev = pick_device(device)
    # Channels-last tensors: the convolutions' fast path on CPUs (an epoch of 9,216 32x32 colour images
    # took 2.8 s instead of 5.0 s on 2 cores, SmallCNN's of 28x28 grey 2.5 s instead of 4.5 s) and on
    # CUDA. The model goes back to the default layout afterwards, for tracing and feature extraction.
    _layout(model.to(dev), torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = None
    if n_batches:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches + 1, pct_start=0.15)
    started = time.perf_counter()
    mean_loss = float("nan")
    for epoch in range(epochs):
        total, count = 0.0, 0
        bar = tqdm(
            batches(epoch),
            total=n_batches,
            desc=f"train epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
            unit="batch",
        )
        for batch in bar:
            images, labels = batch[0], batch[1]
            x = to_tensor(images).to(dev, non_blocking=True)
            if augment is not None:
                x = augment(x)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(labels.astype(np.int64)).to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            losses = F.cross_entropy(model(x), y, reduction="none")
            loss = losses.mean()
            loss.backward()
            if record is not None and len(batch) > 2:
                record(epoch, batch[2], losses.detach().cpu().numpy())
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(labels)
            count += len(labels)
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
        mean_loss = total / max(count, 1)
        spent = time.perf_counter() - started
        left = spent / (epoch + 1) * (epochs - epoch - 1)
        # On the run's log (the CLI's stderr, each Prefect task's log): the whole training's progress,
        # about ten lines a training.
        if (epoch + 1) % max(1, epochs // 10) and epoch + 1 != epochs:
            continue
        line = (
            f"train: epoch {epoch + 1}/{epochs}, loss {mean_loss:.4f}, "
            f"{_duration(spent)} so far, about {_duration(left)} left"
        )
        progress_log.info("%s", line)
        if on_progress is not None:
            on_progress(line)
    _layout(model, torch.contiguous_format).eval()
    return TrainReport(epochs, mean_loss, time.perf_counter() - started, str(dev))


def save_torchscript(model: nn.Module, path: Path, example: np.ndarray) -> Path:
    """Save ``model`` as TorchScript (traced on ``example``, (B,H,W,C) uint8) via a temp file."""
    model = model.cpu().eval()
    traced = torch.jit.trace(model, to_tensor(example[:2]))
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.jit.save(traced, str(tmp))
    tmp.replace(path)
    return path


def load_torchscript(path: Path | str, feature_layer: str) -> nn.Module:
    """Load a user's TorchScript model and check that ``feature_layer`` names one of its modules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises many types for a bad archive
        raise ValueError(f"{path} is not a TorchScript model: {exc}") from exc
    names = dict(model.named_modules())
    if feature_layer not in names:
        raise ValueError(
            f"{path} has no layer {feature_layer!r}; its layers are: {', '.join(n for n in names if n)[:500]}"
        )
    return model
