"""Finding more like a sample, and what a group of samples has in common that its class has not.

Both read every training image of a run once (:class:`RunPixels`, kept with the run): pooled to a
few hundred numbers each for nearest neighbours in input space, and summed per class (pixel by pixel,
values and squares) for the trigger pictures. Neighbours in feature space search the run's own
features. Searches are exact (FAISS flat indexes: at a million samples one query costs tens of
milliseconds, and a reviewer looking for a poison's siblings wants all of them, not most).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import faiss
import numpy as np
from PIL import Image

from sanitize.errors import NotFoundError
from sanitize.store import decode_pixels
from sanitize.web.data import RunData, SampleStore
from sanitize.workspace import Workspace

SPACES = ("features", "pixels")
MAX_POOLED = 192
"""Numbers per image for input-space search: 8x8 in three colours; larger images are block-averaged."""
KEEP_PIXELS_BYTES = 256 << 20
"""Up to this size a run's training images stay in memory whole (a trigger picture of a large group
then reads nothing); above it a group's images are read from the store."""
MAX_GROUP = 5000
"""A larger group is summarised from this many of its samples (a fixed random choice): its means and
spreads are then within a few hundredths of the whole group's, and the picture stays fast."""
PICTURE_PX = 320


@dataclass(frozen=True)
class Neighbour:
    row: int
    distance: float


class RunPixels:
    """A run's training images read once, in the verdict's order: pooled uint8 vectors (``n, d``),
    per class the sum and sum of squares of every pixel, and the images themselves when small."""

    def __init__(self, ws: Workspace, data: RunData):
        if data.version_id is None:
            raise NotFoundError(f"run {data.run_id} has no dataset version to read its images from")
        manifest = ws.store.manifest(data.dataset, data.version_id)
        h, w, c = manifest.height, manifest.width, manifest.channels
        self.shape = (h, w, c)
        block = 1
        while (h // block) * (w // block) * c > MAX_POOLED:
            block += 1
        self.block = block
        n = len(data.sample_ids)
        classes = sorted(data.class_sizes)
        self.class_index = {k: i for i, k in enumerate(classes)}
        self.sums = np.zeros((len(classes), h, w, c), dtype=np.float64)
        self.squares = np.zeros_like(self.sums)
        keep = n * h * w * c <= KEEP_PIXELS_BYTES
        self.images: np.ndarray | None = np.empty((n, h, w, c), dtype=np.uint8) if keep else None
        oh, ow = h // block, w // block
        self.pooled = np.empty((n, oh * ow * c), dtype=np.uint8)
        columns = ["sample_id", "label", "height", "width", "channels", "pixels"]
        for batch in ws.store.iter_samples(manifest, split="train", columns=columns, batch_size=8192):
            x = decode_pixels(batch)
            rows = np.fromiter((data.row_of[s] for s in batch.column("sample_id").to_pylist()), np.int64)
            if self.images is not None:
                self.images[rows] = x
            pooled = x[:, : oh * block, : ow * block].reshape(len(x), oh, block, ow, block, c).mean(axis=(2, 4))
            self.pooled[rows] = np.rint(pooled).astype(np.uint8).reshape(len(x), -1)
            labels = data.labels[rows]
            for k in np.unique(labels):
                part = x[labels == k].astype(np.float64)
                slot = self.class_index[int(k)]
                self.sums[slot] += part.sum(axis=0)
                self.squares[slot] += np.square(part).sum(axis=0)
        # uint8 codes searched as they are: a quarter of the memory of float32, the same distances.
        self.index = faiss.IndexScalarQuantizer(self.pooled.shape[1], faiss.ScalarQuantizer.QT_8bit_direct)
        for s in range(0, n, 65536):
            self.index.add(self.pooled[s : s + 65536].astype(np.float32))

    def group_images(self, rows: np.ndarray, data: RunData, samples: SampleStore) -> np.ndarray:
        """(len(rows), H, W, C) uint8 images of ``rows``."""
        if self.images is not None:
            return self.images[rows]
        if len(rows) == 0:
            return np.zeros((0, *self.shape), np.uint8)
        return np.stack([samples.pixels(data.sample_ids[int(i)]) for i in rows])


def run_pixels(ws: Workspace, data: RunData) -> RunPixels:
    return data.memo("pixels", lambda: RunPixels(ws, data))


def feature_index(data: RunData) -> faiss.Index:
    """An exact L2 index over every training sample's features (the sample page's is over kept ones)."""

    def make() -> faiss.Index:
        feats = data.features()
        index = faiss.IndexFlatL2(feats.shape[1])
        index.add(feats)
        return index

    return data.memo("features_index", make)


def similar(ws: Workspace, data: RunData, rows: list[int], space: str, k: int) -> list[Neighbour]:
    """The ``k`` training samples nearest to any of ``rows`` (L2; in feature space, or in input space
    on pooled pixels), nearest first, the query samples left out."""
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    if space == "features":
        index, queries = feature_index(data), data.features()[rows]
    else:
        pixels = run_pixels(ws, data)
        index, queries = pixels.index, pixels.pooled[rows].astype(np.float32)
    want = min(k + len(rows), index.ntotal)
    dist, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
    best: dict[int, float] = {}
    asked = set(rows)
    for d_row, i_row in zip(dist, found, strict=True):
        for d, i in zip(d_row, i_row, strict=True):
            j = int(i)
            if j < 0 or j in asked:
                continue
            dd = float(np.sqrt(max(float(d), 0.0)))
            if dd < best.get(j, np.inf):
                best[j] = dd
    ranked = sorted(best.items(), key=lambda item: (item[1], item[0]))[:k]
    return [Neighbour(j, d) for j, d in ranked]


# --- the trigger, as a picture ----------------------------------------------------------------


@dataclass(frozen=True)
class GroupContrast:
    """A group against the rest of its classes, pixel by pixel (each ``H, W, C`` float64)."""

    group_size: int
    rest_size: int
    summarised_from: int
    group_mean: np.ndarray
    rest_mean: np.ndarray
    group_std: np.ndarray
    rest_std: np.ndarray

    @property
    def difference(self) -> np.ndarray:
        return self.group_mean - self.rest_mean

    @property
    def constancy(self) -> np.ndarray:
        """(H, W) in [0, 1]: near 1 where the group is constant while the rest of its class is not.

        ``1 - group std / rest spread`` (averaged over colours, clipped to [0, 1]), where the rest's
        spread is taken around the *group's* mean (``sqrt(rest std² + (rest mean - group mean)²)``):
        a patch that is white in every poison lights up whether the clean images there vary or are all
        black. Damped where that spread is under ``VARIES`` of 255: a border black in every image is
        constant in the group too, and says nothing about a trigger.
        """
        spread = np.sqrt(np.square(self.rest_std) + np.square(self.rest_mean - self.group_mean)).mean(axis=2)
        group = self.group_std.mean(axis=2)
        ratio = group / np.maximum(spread, 1e-9)
        return np.clip(1.0 - ratio, 0.0, 1.0) * np.clip(spread / VARIES, 0.0, 1.0)


VARIES = 16.0
"""A pixel whose spread in the rest of the class is under this (of 255) counts as not varying."""


def contrast(ws: Workspace, data: RunData, samples: SampleStore, rows: np.ndarray, *, seed: int = 0) -> GroupContrast:
    """What ``rows`` (a group of training samples) look like against the other samples of the
    classes they belong to: means and spreads per pixel."""
    if len(rows) == 0:
        raise ValueError("the group is empty: nothing to picture")
    pixels = run_pixels(ws, data)
    labels = data.labels[rows]
    classes = np.unique(labels)
    sizes = sum(data.class_sizes[int(k)] for k in classes)
    rest_size = sizes - len(rows)
    if rest_size < 1:
        raise ValueError("the group is the whole of its classes: there is no rest of the class to compare with")
    chosen = rows
    if len(rows) > MAX_GROUP:
        chosen = np.sort(np.random.default_rng(seed).choice(rows, MAX_GROUP, replace=False))
    images = pixels.group_images(chosen, data, samples).astype(np.float64)
    group_mean = images.mean(axis=0)
    group_std = images.std(axis=0)
    # The rest: its classes' sums less the group's (the whole group's, estimated from the chosen part).
    slots = [pixels.class_index[int(k)] for k in classes]
    total, squares = pixels.sums[slots].sum(axis=0), pixels.squares[slots].sum(axis=0)
    scale = len(rows) / len(chosen)
    rest_sum = total - images.sum(axis=0) * scale
    rest_sq = squares - np.square(images).sum(axis=0) * scale
    rest_mean = rest_sum / rest_size
    rest_std = np.sqrt(np.maximum(rest_sq / rest_size - np.square(rest_mean), 0.0))
    return GroupContrast(len(rows), rest_size, len(chosen), group_mean, rest_mean, group_std, rest_std)


PICTURES = ("mean", "difference", "constancy")


def picture(c: GroupContrast, kind: str) -> bytes:
    """One of :data:`PICTURES` as a PNG scaled up (nearest neighbour) to about ``PICTURE_PX``:

    - ``mean``: the group's mean image;
    - ``difference``: group mean minus rest mean, mid-grey where equal, stretched so the largest
      difference is full scale (brighter: the group is brighter there; colour: in that channel);
    - ``constancy``: :attr:`GroupContrast.constancy` as a heat map, black (varies as the class
      does) through red to white (constant in the group while the class varies).
    """
    if kind == "mean":
        image = np.clip(np.rint(c.group_mean), 0, 255).astype(np.uint8)
    elif kind == "difference":
        diff = c.difference
        top = max(float(np.abs(diff).max()), 1e-9)
        image = np.clip(np.rint(127.5 + diff * (127.5 / top)), 0, 255).astype(np.uint8)
    elif kind == "constancy":
        v = c.constancy
        heat = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=2)
        image = np.rint(heat * 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown picture {kind!r}; choose one of {', '.join(PICTURES)}")
    if image.shape[2] == 1:
        image = image[..., 0]
    elif image.shape[2] == 4:
        image = image[..., :3]
    h, w = image.shape[:2]
    scale = max(1, PICTURE_PX // max(h, w))
    big = Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue()


def largest_difference(c: GroupContrast) -> float:
    """The largest absolute difference of means (pixel values, 0-255): the difference picture's full scale."""
    return float(np.abs(c.difference).max())
