"""Probe (issue 15): how long the CPU's default colour model takes to train, and what it learns.

A run on colour 32x32 images used to train a ResNet-18 on any device (40 s a step of 128 images on 2
cores). On a CPU the default is now :class:`sanitize.models.ColourCNN`. This trains it as a run's
reference model would (the package's :func:`sanitize.models.train`, batch 128, the run's default lr,
:func:`sanitize.training.auto_epochs` epochs) on synthetic colour images that take some learning: 10
shape classes (disc, ring, square, frame, triangle, cross, X, bars, diamond...) of random size,
position and colour on random colour backgrounds with a colour gradient and pixel noise, and measures
seconds per epoch and accuracy on a held-out split.

    python -m bench probe colour-model                          # 10,000 + 2,000 32x32 images, 2 threads
    python -m bench probe colour-model --size 96 --n-train 2000 --epochs 2   # pooled to 64x64 inside
    python -m bench probe colour-model --data data/datasets/icons-32          # real icons (bench datasets)
    python -m bench probe colour-model --data data/datasets/fmnist-colour-96.npz --n-train 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.records import RESULTS, commit, machine, write_json
from sanitize.config import ModelConfig
from sanitize.models import build_model, default_architecture, model_input_size, to_tensor, train
from sanitize.training import auto_epochs

N_CLASSES = 10


def shapes(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, size, size, 3) uint8 of 10 shape classes, and their labels (n,) int64."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    r = rng.uniform(0.15, 0.3, (n, 1, 1))
    dy, dx = yy[None] - cy, xx[None] - cx
    ady, adx = np.abs(dy), np.abs(dx)
    dist = np.hypot(dy, dx)
    t = 0.06 + 0.2 * r  # a stroke's half-width
    masks = [
        dist < r,  # disc
        (dist < r) & (dist > r * 0.55),  # ring
        np.maximum(ady, adx) < r * 0.85,  # square
        (np.maximum(ady, adx) < r * 0.85) & (np.maximum(ady, adx) > r * 0.5),  # frame
        (dy < r * 0.7) & (dy > -r * 0.8) & (adx < (dy + r * 0.8) * 0.6),  # triangle
        ((ady < t * 0.5) | (adx < t * 0.5)) & (np.maximum(ady, adx) < r),  # plus
        (np.abs(ady - adx) < t * 0.5) & (np.maximum(ady, adx) < r * 0.8),  # X
        (ady < t * 0.5) & (adx < r * 1.2),  # horizontal bar
        (adx < t * 0.5) & (ady < r * 1.2),  # vertical bar
        ady + adx < r,  # diamond
    ]
    mask = np.zeros((n, size, size), dtype=bool)
    for k, m in enumerate(masks):
        mask[labels == k] = m[labels == k]
    background = rng.uniform(0, 255, (n, 1, 1, 3)) + rng.uniform(-60, 60, (n, 1, 1, 3)) * yy[None, :, :, None]
    # The shape's colour differs from the background's by at least 80 in one channel at least.
    shift = rng.uniform(80, 160, (n, 1, 1, 3)) * rng.choice([-1, 1], (n, 1, 1, 3))
    shape = np.where(background + shift > 255, background - shift, background + shift)
    shape = np.where(shape < 0, background - shift, shape)
    image = np.where(mask[..., None], shape, background) + rng.normal(0, 25, (n, size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels.astype(np.int64)


def image_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``root/split/CLASS/*.png`` as (n, H, W, 3) uint8 images and labels by sorted class folder."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    images, labels = [], []
    for k, name in enumerate(classes):
        for path in sorted((root / split / name).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(k)
    return np.stack(images), np.array(labels, dtype=np.int64)


def load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Train and test images and labels, and the data's name: a ``--data`` folder or npz, else shapes."""
    if args.data is None:
        n = args.n_train or 10_000
        x, y = shapes(n + args.n_test, args.size, args.seed)
        return x[:n], y[:n], x[n:], y[n:], f"shapes-{args.size}px"
    path = Path(args.data)
    if path.suffix == ".npz":
        with np.load(path) as f:
            xs = [f["x_train"], f["y_train"].astype(np.int64), f["x_test"], f["y_test"].astype(np.int64)]
    else:
        xs = [*image_folder(path, "train"), *image_folder(path, "test")]
    return xs[0], xs[1], xs[2], xs[3], path.stem


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        preds = np.concatenate([model(to_tensor(x[i : i + 512])).argmax(1).numpy() for i in range(0, len(x), 512)])
    return float((preds == y).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench probe colour-model", description=__doc__)
    parser.add_argument("--data", default=None, help="an image folder (train/, test/) or npz; default: shapes")
    parser.add_argument("--n-train", type=int, default=None, help="shapes: 10,000; --data: all, or a random N")
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--size", type=int, default=32, help="shapes: image side in pixels")
    parser.add_argument("--epochs", type=int, default=None, help="default: auto_epochs(n_train), as a run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", default=None, help="default: the CPU's choice for colour images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test, name = load(args)
    if args.data is not None and args.n_train is not None and args.n_train < len(x_train):
        rows = np.random.default_rng(args.seed).permutation(len(x_train))[: args.n_train]
        x_train, y_train = x_train[rows], y_train[rows]
    n_train, (_, h, w, _) = len(x_train), x_train.shape
    arch = args.arch or default_architecture(h, w, 3, device="cpu")
    cfg = ModelConfig()
    epochs = args.epochs or auto_epochs(n_train)
    torch.manual_seed(args.seed)
    model = build_model(arch, in_channels=3, n_classes=int(y_train.max()) + 1, image_size=(h, w))
    n_batches = -(-n_train // cfg.batch_size)

    def batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng(args.seed + epoch).permutation(n_train)
        for i in range(0, n_train, cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            yield x_train[rows], y_train[rows]

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    report = train(
        model, batches, epochs=epochs, lr=cfg.lr, device="cpu", seed=args.seed, progress=False, n_batches=n_batches
    )
    record = {
        "probe": "colour-model",
        "data": name,
        "arch": arch,
        "image_size": [h, w],
        "input_size": list(model_input_size(arch, h, w)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_train": n_train,
        "n_test": len(x_test),
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "threads": args.threads,
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": round(report.seconds / epochs, 2),
        "final_loss": round(report.final_loss, 4),
        "train_accuracy": round(accuracy(model, x_train[:2000], y_train[:2000]), 4),
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        # The 1-minute load average before and after: above ~0 before, others shared the cores.
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "commit": commit(),
        "machine": machine(),
    }
    print(record)
    write_json(RESULTS / f"probe_colour_model_{name}_{arch}_{n_train}.json", record)
