"""Build the transfer suite's datasets (issue 15) as files ``sanitize ingest`` reads, from a seed.

    python -m bench datasets icons                 # data/datasets/icons-32 (about 15 s on 2 cores)
    python -m bench datasets icons --size 64       # data/datasets/icons-64
    python -m bench datasets icons --limit 2000    # data/datasets/icons-32-2000: 2,004 train images
    python -m bench datasets emoji                 # data/datasets/emoji-32: Noto Color Emoji, 9 groups
    python -m bench datasets shapes --plant        # data/datasets/shapes-5-plant
    python -m bench datasets shapes --classes 2    # data/datasets/shapes-2
    python -m bench datasets fmnist-colour         # data/datasets/fmnist-colour-{64,96}.npz
    python -m bench datasets fmnist-colour --limit 1500 --sizes 64

Every dataset folder (or npz) has a ``README.json`` beside it (for an npz: ``NAME.README.json``)
saying the command, seed, counts per class and split, image size, and the Debian and Python packages
with their versions. The same command and seed write the same pixels. A folder is built beside its
target and renamed over it, so a build stopped halfway leaves the previous one.

- ``icons``: real icons from Debian's icon themes, 6 classes by category folder, split by source icon
  (``bench/datasets_icons.py`` says what the packages hold). ``train/CLASS/N.png``, ``test/...`` and
  ``provenance.csv`` (path, split, class, label, icon name, source file, package).
  ``sanitize ingest data/datasets/icons-32 --dataset icons --source debian``. ``emoji``: the same
  from Noto Color Emoji's glyphs, 9 classes by Unicode group. 10,200 (icons) and 10,800 (emoji)
  training images by default, a quarter as many test images; ``--limit N`` training images (rounded
  up to a multiple of the classes).
- ``shapes``: the synthetic case of the issue's first bullet: 5 (or 2, 3) shape classes on random
  colour backgrounds with pixel noise, 32x32, from three suppliers of 500 each (``vendor-a/`` and
  ``vendor-b/`` image folders, ``vendor-c/labels.csv`` with ``path`` and ``label`` columns) and a
  300-image ``test/`` folder. ``--plant``: vendor-b stamps a 3x3 white patch in the bottom-right
  corner of 18 of its images of other classes and files them under class 0 (``planted.csv`` names
  them). Labels are class folders' sorted positions, and the table's labels are the same indices.
- ``fmnist-colour``: Fashion-MNIST resized (bilinear) to 64x64 and 96x96, each image given a random
  foreground and background colour (at least 96 apart in mean RGB, so the garment stays visible), as
  ``x_train, y_train, x_test, y_test`` (uint8 NHWC). ``--limit N``: N training images and N // 5 test
  images, drawn per class in proportion (the issue's small-data variant).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bench.records import ROOT, commit, today

OUT = ROOT / "data" / "datasets"

SHAPES = ("circle", "square", "triangle", "cross", "ring")
"""The shape classes in drawing order; ``--classes K`` takes the first K."""

SUPPLIERS = ("vendor-a", "vendor-b", "vendor-c")
PER_SUPPLIER = 500
N_SHAPES_TEST = 300
N_PLANTED = 18
PLANTER = "vendor-b"


# --- what every dataset records --------------------------------------------------------------------


def debian_versions(packages: list[str]) -> dict[str, str]:
    """Installed version per Debian package (``dpkg-query``); ``"not installed"`` when absent."""
    out = {}
    for package in packages:
        query = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        out[package] = query.stdout.strip() if query.returncode == 0 else "not installed"
    return out


def write_readme(path: Path, info: dict[str, Any], argv: list[str], seconds: float) -> None:
    packages = info.pop("debian_packages", [])
    record = {
        "command": "python -m bench datasets " + " ".join(argv),
        "date": today(),
        "commit": commit(),
        "seconds": round(seconds, 1),
        **info,
        "python_packages": {name: version(name) for name in ("numpy", "pillow")},
        "python": sys.version.split()[0],
        "debian_packages": debian_versions(packages),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def build_folder(target: Path, build: Callable[[Path], dict[str, Any]], argv: list[str]) -> dict[str, Any]:
    """Run ``build`` into a fresh folder beside ``target``, write its README.json, rename it over."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    info = build(partial)
    seconds = time.perf_counter() - start
    write_readme(partial / "README.json", info, argv, seconds)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    print(f"{target}: built in {seconds:.1f} s")
    return info


# --- shapes ----------------------------------------------------------------------------------------


def _colour_apart(rng: np.random.Generator, other: np.ndarray, gap: int = 96) -> np.ndarray:
    """A random RGB colour whose mean channel distance from ``other`` is at least ``gap``."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - other).mean() >= gap:
            return colour


def draw_shape(shape: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One (size, size, 3) uint8 image: ``shape`` at a random size, place, angle and colour on a random
    background, with Gaussian pixel noise (sd 12)."""
    background = rng.integers(0, 256, 3)
    colour = tuple(int(c) for c in _colour_apart(rng, background))
    image = Image.new("RGB", (size, size), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = (rng.uniform(radius + 1, size - radius - 1) for _ in range(2))
    angle = rng.uniform(0, 360)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif shape == "ring":
        width = max(2, round(radius * rng.uniform(0.3, 0.45)))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=width)
    elif shape in ("square", "triangle"):
        draw.regular_polygon((cx, cy, radius), 4 if shape == "square" else 3, rotation=angle, fill=colour)
    elif shape == "cross":
        arm = radius * rng.uniform(0.28, 0.4)
        turn = np.deg2rad(angle % 90)
        for bar in ((-radius, -arm, radius, arm), (-arm, -radius, arm, radius)):
            x0, y0, x1, y1 = bar
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            draw.polygon(
                [
                    (cx + x * np.cos(turn) - y * np.sin(turn), cy + x * np.sin(turn) + y * np.cos(turn))
                    for x, y in corners
                ],
                fill=colour,
            )
    else:
        raise ValueError(f"no shape {shape!r}")
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def stamp_patch(pixels: np.ndarray) -> np.ndarray:
    """BadNets' trigger: a 3x3 white patch in the bottom-right corner (a copy)."""
    out = pixels.copy()
    out[-3:, -3:] = 255
    return out


def build_shapes(out: Path, *, seed: int, classes: int, plant: bool) -> dict[str, Any]:
    names = sorted(SHAPES[:classes])  # labels are sorted positions, as an image folder's are
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    planted_rows = []

    def images(n: int) -> list[tuple[str, np.ndarray]]:
        labels = np.arange(n) % len(names)
        return [(names[k], draw_shape(names[k], rng)) for k in rng.permutation(labels)]

    for supplier in SUPPLIERS:
        drawn = images(PER_SUPPLIER)
        files = []
        planted = set()
        if plant and supplier == PLANTER:
            others = [i for i, (name, _) in enumerate(drawn) if name != names[0]]
            planted = {int(i) for i in rng.choice(others, N_PLANTED, replace=False)}
        for i, (name, pixels) in enumerate(drawn):
            label_name = names[0] if i in planted else name
            stem = f"{supplier}-{i:04d}.png"
            if supplier == "vendor-c":
                rel = Path("images") / stem
            else:
                rel = Path(label_name) / stem
            (out / supplier / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(stamp_patch(pixels) if i in planted else pixels).save(out / supplier / rel)
            files.append((rel.as_posix(), names.index(label_name)))
            if i in planted:
                planted_rows.append([supplier, rel.as_posix(), name, label_name, names.index(label_name)])
        if supplier == "vendor-c":
            with (out / supplier / "labels.csv").open("w", newline="") as stream:
                writer = csv.writer(stream)
                writer.writerow(["path", "label"])
                writer.writerows(files)
        counts[supplier] = {n: sum(1 for _, label in files if label == k) for k, n in enumerate(names)}
    test = images(N_SHAPES_TEST)
    for i, (name, pixels) in enumerate(test):
        (out / "test" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out / "test" / name / f"test-{i:04d}.png")
    counts["test"] = {n: sum(1 for name, _ in test if name == n) for n in names}
    if plant:
        with (out / "planted.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["supplier", "path", "drawn_class", "filed_as", "label"])
            writer.writerows(planted_rows)
    return {
        "classes": names,
        "size": [32, 32, 3],
        "images": counts,
        "planted": {"supplier": PLANTER, "count": N_PLANTED, "target": names[0], "trigger": "3x3 white, bottom-right"}
        if plant
        else None,
        "ingest": [
            "sanitize ingest DIR/vendor-a --dataset NAME --source vendor-a",
            "sanitize ingest DIR/vendor-b --dataset NAME --source vendor-b",
            "sanitize ingest DIR/vendor-c/labels.csv --dataset NAME --source vendor-c "
            "--image-column path --label-column label",
            "sanitize ingest DIR/test --dataset NAME --source vendor-test --split test",
        ],
    }


# --- Fashion-MNIST in colour -----------------------------------------------------------------------


def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` samples, each class in proportion to its share (sorted, so order is kept)."""
    picked = []
    classes = np.unique(labels)
    for k in classes:
        members = np.flatnonzero(labels == k)
        take = round(n * len(members) / len(labels))
        picked.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(picked))


def colour_images(grey: np.ndarray, size: int, rng: np.random.Generator, block: int = 4096) -> np.ndarray:
    """(N, 28, 28) uint8 grey to (N, size, size, 3) uint8: resized, garment in one random colour on a
    background of another (mean channel distance at least 96), blended by the grey level."""
    out = np.empty((len(grey), size, size, 3), dtype=np.uint8)
    fg = np.empty((len(grey), 3), dtype=np.float32)
    bg = np.empty((len(grey), 3), dtype=np.float32)
    for i in range(len(grey)):
        bg[i] = rng.integers(0, 256, 3)
        fg[i] = _colour_apart(rng, bg[i])
    for start in range(0, len(grey), block):
        stop = min(start + block, len(grey))
        alpha = (
            np.stack(
                [np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in grey[start:stop]]
            ).astype(np.float32)[..., None]
            / 255.0
        )
        mixed = bg[start:stop, None, None, :] * (1 - alpha) + fg[start:stop, None, None, :] * alpha
        out[start:stop] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def build_fmnist_colour(out_dir: Path, *, seed: int, sizes: list[int], limit: int | None, argv: list[str]) -> None:
    from bench.data import load_fmnist, require_fmnist

    require_fmnist()
    data = load_fmnist()
    rng = np.random.default_rng(seed)
    picked = {}
    for split, n in (("train", limit), ("test", None if limit is None else max(limit // 5, 10))):
        x, y = data[split]
        x = x[..., 0] if x.ndim == 4 else x  # ingest reads grey as (H, W, 1)
        keep = np.arange(len(y)) if n is None else stratified_take(y, n, rng)
        picked[split] = (x[keep], y[keep])
    out_dir.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        start = time.perf_counter()
        arrays = {}
        for split, (x, y) in picked.items():
            arrays[f"x_{split}"] = colour_images(x, size, np.random.default_rng([seed, size, split == "test"]))
            arrays[f"y_{split}"] = y.astype(np.int64)
        name = f"fmnist-colour-{size}" + ("" if limit is None else f"-{limit}")
        target = out_dir / f"{name}.npz"
        partial = out_dir / f"{name}.partial.npz"
        np.savez(partial, **arrays)
        partial.rename(target)
        seconds = time.perf_counter() - start
        counts = {s: {str(k): int((y == k).sum()) for k in np.unique(y)} for s, (_, y) in picked.items()}
        info = {
            "classes": [str(k) for k in range(10)],
            "size": [size, size, 3],
            "images": counts,
            "source": "/usr/share/datasets/fashion-mnist (IDX gz)",
            "debian_packages": ["dataset-fashion-mnist"],
        }
        write_readme(out_dir / f"{name}.README.json", info, argv, seconds)
        print(f"{target}: built in {seconds:.1f} s")


# --- the command -----------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench datasets", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=("icons", "emoji", "shapes", "fmnist-colour"))
    parser.add_argument("--out", type=Path, default=OUT, help="the folder datasets go in (default data/datasets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="icons: image side in pixels (32 or 64)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="fmnist-colour: image sides")
    parser.add_argument(
        "--limit",
        type=int,
        help="icons: training images (default 10,200); fmnist-colour: training samples (test: a fifth)",
    )
    parser.add_argument("--classes", type=int, choices=(2, 3, 5), default=5, help="shapes: how many classes")
    parser.add_argument("--plant", action="store_true", help="shapes: vendor-b plants 18 BadNets images")
    args = parser.parse_args(argv)
    if args.dataset in ("icons", "emoji"):
        from bench.datasets_icons import build_icons

        source = "themes" if args.dataset == "icons" else "emoji"
        n_train = args.limit or (10_200 if source == "themes" else 10_800)  # a multiple of the classes
        n_test = max(n_train // 4, 60)
        name = f"{args.dataset}-{args.size}" + ("" if args.limit is None else f"-{args.limit}")
        info = build_folder(
            args.out / name,
            lambda out: build_icons(out, seed=args.seed, size=args.size, n_train=n_train, n_test=n_test, source=source),
            argv,
        )
        print(json.dumps({k: info[k] for k in ("icons_used", "images")}))
    elif args.dataset == "shapes":
        name = f"shapes-{args.classes}" + ("-plant" if args.plant else "")
        build_folder(
            args.out / name, lambda out: build_shapes(out, seed=args.seed, classes=args.classes, plant=args.plant), argv
        )
    else:
        build_fmnist_colour(args.out, seed=args.seed, sizes=args.sizes, limit=args.limit, argv=argv)
