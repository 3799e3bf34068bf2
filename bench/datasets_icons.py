"""The ``icons`` and ``emoji`` datasets of ``python -m bench datasets``: real icons Debian ships, rendered.

Sources are the full-colour PNG icons that four Debian packages ship (``apt-get install -y
oxygen-icon-theme tango-icon-theme gnome-icon-theme mate-icon-theme``), found with ``dpkg -L``. An icon
is a theme's picture of one freedesktop name (``folder``, ``printer``, ``text-x-generic``) at the largest
size the theme ships for it (at least 32 px); the class is the theme's category folder. Symlinked
aliases are the same picture and count once, and so do byte-identical files. A name drawn by several
themes is one *source group*: the train/test split is by group, so no icon name (in any theme's
drawing) is in both splits.

What the four packages hold (bookworm: oxygen 5:5.103.0-1, tango 0.8.90-11, gnome 3.12.0-5, mate
1.26.0-1): distinct full-colour pictures of at least 32 px, after aliases and duplicates and with a
name kept in its first category only; then what the cap and the split (seed 0) leave:

=========  =====  =====  ===================  =================================
class      found  names  used (train + test)  found in oxygen/mate/gnome/tango
=========  =====  =====  ===================  =================================
actions      942    713  160 + 40             647 / 118 / 108 / 69
apps         283    226  160 + 40             186 / 39 / 30 / 28
devices      167     95  133 + 34             71 / 38 / 38 / 20
mimetypes    279    228  160 + 40             187 / 47 / 24 / 21
places       100     70  80 + 20              55 / 17 / 19 / 9
status       311    176  160 + 40             79 / 115 / 82 / 35
=========  =====  =====  ===================  =================================

The run prints and ``README.json`` records the counts it found, so a later Debian release that ships
other icons is visible. Categories with too few icons for a class of their own (emblems, emotes,
categories, animations, applets) are left out. Adwaita is not used: apart from its ``legacy`` folder,
which has no categories, its PNGs are grey symbolic silhouettes; the SVG-only themes (breeze, papirus)
would need an SVG renderer.

The ``emoji`` variant draws ``fonts-noto-color-emoji`` 2.042 (a CBDT bitmap font Pillow draws at its
one size, 109) with the classes from ``unicode-data`` 15.0's ``emoji-test.txt``: its 9 groups
("Component" left out), one source per fully-qualified emoji, skin-tone variants left out (the same
drawing in five colours). Found: people 363, flags 269, objects 261, symbols 223, travel 218,
smileys 166, animals 152, food 133, activities 85 (1,870); used (cap 170, seed 0), train + test:
activities 68 + 17, animals 121 + 31, food 106 + 27, smileys 132 + 34, the other five 136 + 34.

Each class is capped at twice its smallest class's icon count (whole names, a seeded sample), and its
names are split so that about 20 % of its icons go to test. Every class gets the same number of
images: each image draws one of its class's icons in turn, on a random background (a solid colour, a
two-colour linear gradient, or smoothed colour noise), at a random scale (55-105 % of the canvas, so
some are cropped by the edge), at a random position, with colour jitter (brightness, contrast,
saturation, +-30 %) and sometimes a slight blur.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

PACKAGES = ("oxygen-icon-theme", "tango-icon-theme", "gnome-icon-theme", "mate-icon-theme")
"""The icon themes read, in this order: a name's category is the one its first theme gives it."""

CLASSES = ("actions", "apps", "devices", "mimetypes", "places", "status")
"""Category folders that become classes (labels by sorted position, as ``sanitize ingest`` reads)."""

MIN_SOURCE_PX = 32
"""The smallest icon size used as a source: smaller ones would be blown up into blur at 32x32."""

TEST_SHARE = 0.2
"""The share of each class's icon groups that go to test."""


@dataclass(frozen=True)
class SourceIcon:
    """One picture: a theme's drawing of ``name`` in category ``cls``, read from ``file``."""

    cls: str
    name: str
    file: str
    package: str
    px: int
    glyph: str = ""
    """For an emoji: the character sequence drawn from the font ``file``; empty for a PNG icon."""


def _package_pngs(package: str) -> list[str]:
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        raise SystemExit(f"{package} is not installed: apt-get install -y {' '.join(PACKAGES)}")
    return [line for line in listing.stdout.splitlines() if line.endswith(".png")]


def find_icons(packages: tuple[str, ...] = PACKAGES) -> list[SourceIcon]:
    """Every distinct full-colour picture of the packages in ``CLASSES``, largest size per name."""
    icons: list[SourceIcon] = []
    seen_files: set[str] = set()
    seen_bytes: set[str] = set()
    category_of: dict[str, str] = {}
    for package in packages:
        best: dict[tuple[str, str], tuple[int, str]] = {}
        for file in _package_pngs(package):
            parts = Path(file).parts
            # .../THEME/NNxNN/CATEGORY/NAME.png: the size folder sits two above the file.
            if len(parts) < 3 or not re.fullmatch(r"(\d+)x\1", parts[-3]):
                continue
            px, cls, name = int(parts[-3].split("x")[0]), parts[-2], Path(file).stem
            if name.endswith("-symbolic") or ".symbolic" in name or not os.path.isfile(file):
                continue
            if best.get((cls, name), (0, ""))[0] < px:
                best[cls, name] = (px, file)
        for (cls, name), (px, file) in sorted(best.items()):
            if cls not in CLASSES or px < MIN_SOURCE_PX:
                continue
            if category_of.setdefault(name, cls) != cls:
                continue  # the name is another class's in an earlier theme: one class per name
            real = os.path.realpath(file)
            digest = hashlib.sha256(Path(real).read_bytes()).hexdigest()
            if real in seen_files or digest in seen_bytes:
                continue  # an alias (symlink) or a copy of a picture already taken
            seen_files.add(real)
            seen_bytes.add(digest)
            icons.append(SourceIcon(cls=cls, name=name, file=file, package=package, px=px))
    return icons


def split_icons(
    icons: list[SourceIcon], classes: tuple[str, ...], seed: int
) -> tuple[dict[str, list[SourceIcon]], dict[str, list[SourceIcon]]]:
    """``(train, test)`` icons per class, split by name (about 80/20 of the icons), after capping each
    class at twice the smallest class's icon count (whole names, in a seeded order)."""
    rng = np.random.default_rng(seed)
    by_name: dict[str, dict[str, list[SourceIcon]]] = {c: defaultdict(list) for c in classes}
    for icon in icons:
        by_name[icon.cls][icon.name].append(icon)
    cap = 2 * min(sum(map(len, by_name[c].values())) for c in classes)
    train: dict[str, list[SourceIcon]] = {}
    test: dict[str, list[SourceIcon]] = {}
    for cls in classes:
        names = sorted(by_name[cls])
        chosen: list[list[SourceIcon]] = []
        taken = 0
        for i in rng.permutation(len(names)):
            group = by_name[cls][names[i]]
            if taken + len(group) > cap:
                continue
            chosen.append(group)
            taken += len(group)
        train[cls], test[cls] = [], []
        for group in chosen:
            # Fill test first up to its share: a name goes whole to one split.
            (test if len(test[cls]) < TEST_SHARE * taken else train)[cls].extend(group)
    return train, test


# --- rendering -------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:
        colour = rng.integers(0, 256, 3)
        pixels = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    elif kind == 1:
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        pixels = a + (b - a) * t[..., None]
    else:
        base = rng.integers(0, 256, 3).astype(np.float32)
        coarse = rng.normal(0, rng.uniform(20, 70), (max(2, size // 8), max(2, size // 8), 3)).astype(np.float32)
        up = np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
            dtype=np.float32,
        )
        pixels = base + (up - 128) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _jitter(icon: Image.Image, rng: np.random.Generator) -> Image.Image:
    rgb, alpha = icon.convert("RGB"), icon.getchannel("A")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        rgb = enhancer(rgb).enhance(float(rng.uniform(0.7, 1.3)))
    rgb.putalpha(alpha)
    return rgb


def render(source: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """One ``size`` x ``size`` RGB image of an RGBA ``source`` icon on a random background."""
    canvas = _background(rng, size)
    side = max(4, round(size * rng.uniform(0.55, 1.05)))
    icon = _jitter(source.resize((side, side), Image.LANCZOS), rng)
    if rng.random() < 0.15:
        icon = icon.filter(ImageFilter.GaussianBlur(0.6))
    # The icon's centre anywhere that keeps at least 70 % of each side on the canvas.
    slack = size - side
    low, high = min(0, slack) - round(0.15 * side), max(0, slack) + round(0.15 * side)
    x, y = (int(v) for v in rng.integers(low, high + 1, 2))
    canvas.paste(icon, (x, y), icon)
    return canvas


def _load(icon: SourceIcon, size: int) -> Image.Image:
    if icon.glyph:
        image = _draw_emoji(icon)
    else:
        with Image.open(icon.file) as image:
            image = image.convert("RGBA")
    # Downscale once to twice the canvas: each render then resizes a small image.
    side = min(image.width, 2 * size)
    return image.resize((side, side), Image.LANCZOS) if image.width != side else image


def build_icons(
    out: Path,
    *,
    seed: int,
    size: int,
    n_train: int,
    n_test: int,
    source: str = "themes",
) -> dict[str, object]:
    """Write ``out/{train,test}/CLASS/NNNNNN.png`` and ``out/provenance.csv``; return the counts.

    ``source``: ``"themes"`` (the icon themes' PNGs by category) or ``"emoji"`` (Noto Color Emoji's
    glyphs by Unicode group). Each class gets ``ceil(n / classes)`` images of each split.
    """
    if source == "emoji":
        icons, classes, packages = find_emoji(), EMOJI_CLASSES, EMOJI_PACKAGES
    else:
        icons, classes, packages = find_icons(), CLASSES, PACKAGES
    found = Counter(icon.cls for icon in icons)
    found_names = {c: len({i.name for i in icons if i.cls == c}) for c in classes}
    train, test = split_icons(icons, classes, seed)
    rows = []
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for split, per_class, total in (("train", train, n_train), ("test", test, n_test)):
        per = -(-total // len(classes))
        for label, cls in enumerate(classes):
            folder = out / split / cls
            folder.mkdir(parents=True)
            sources = per_class[cls]
            rng = np.random.default_rng([seed, label, split == "test"])
            order = [sources[i] for i in rng.permutation(len(sources))]
            loaded = {}
            for k in range(per):
                icon = order[k % len(order)]
                key = (icon.file, icon.glyph)
                if key not in loaded:
                    loaded[key] = _load(icon, size)
                name = f"{split}/{cls}/{k:06d}.png"
                render(loaded[key], rng, size).save(out / name, optimize=False, compress_level=1)
                rows.append([name, split, cls, label, icon.name, icon.file, icon.package])
            counts[split][cls] = per
    with (out / "provenance.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "split", "class", "label", "icon_name", "source_icon", "package"])
        writer.writerows(rows)
    used = (("train", train), ("test", test))
    return {
        "source": source,
        "classes": list(classes),
        "size": [size, size, 3],
        "images": counts,
        "icons_found": {c: found[c] for c in classes},
        "icon_names_found": found_names,
        "icons_used": {s: {c: len(d[c]) for c in classes} for s, d in used},
        "icon_names_used": {s: {c: len({i.name for i in d[c]}) for c in classes} for s, d in used},
        "debian_packages": list(packages),
    }


# --- emoji -----------------------------------------------------------------------------------------

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
EMOJI_PACKAGES = ("fonts-noto-color-emoji", "unicode-data")

EMOJI_GROUPS = {
    "Smileys & Emotion": "smileys",
    "People & Body": "people",
    "Animals & Nature": "animals",
    "Food & Drink": "food",
    "Travel & Places": "travel",
    "Activities": "activities",
    "Objects": "objects",
    "Symbols": "symbols",
    "Flags": "flags",
}
"""Unicode's emoji groups (``emoji-test.txt``) and their class folder names; "Component" (skin tones
and hair parts alone) is left out."""

EMOJI_CLASSES = tuple(sorted(EMOJI_GROUPS.values()))

_SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))


def find_emoji() -> list[SourceIcon]:
    """One source per fully-qualified emoji of ``emoji-test.txt`` that the font draws, skin-tone
    variants left out (they are one picture in five colours, and would put one drawing in both
    splits); ``name`` is the emoji's CLDR name."""
    for path in (EMOJI_FONT, EMOJI_TEST):
        if not Path(path).is_file():
            raise SystemExit(f"{path} is missing: apt-get install -y {' '.join(EMOJI_PACKAGES)}")
    icons = []
    group = ""
    for line in Path(EMOJI_TEST).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        if "; fully-qualified" not in line or group not in EMOJI_GROUPS:
            continue
        codes, _, rest = line.partition(";")
        glyph = "".join(chr(int(c, 16)) for c in codes.split())
        if _SKIN_TONES & set(glyph):
            continue
        name = rest.split("#", 1)[1].strip().split(" ", 2)[-1]  # "# 😀 E1.0 grinning face"
        icons.append(
            SourceIcon(
                cls=EMOJI_GROUPS[group], name=name, file=EMOJI_FONT, package=EMOJI_PACKAGES[0], px=136, glyph=glyph
            )
        )
    return icons


def _draw_emoji(icon: SourceIcon) -> Image.Image:
    """The glyph as a square RGBA image, its drawing centred (Noto's bitmaps are 136x128 at size 109)."""
    font = _emoji_font()
    image = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((12, 16), icon.glyph, font=font, embedded_color=True)
    box = image.getbbox()
    if box is None:
        raise ValueError(f"the font draws nothing for {icon.name!r}")
    side = max(box[2] - box[0], box[3] - box[1])
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(image.crop(box), ((side - (box[2] - box[0])) // 2, (side - (box[3] - box[1])) // 2))
    return square


@functools.cache
def _emoji_font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(EMOJI_FONT, 109)  # the one size a CBDT bitmap font has
