"""Red-team poisonings for measuring detection.

Each attack in :data:`ATTACKS` poisons ``(images, labels, rate, target, seed)`` into a
:class:`Poisoning` (the poisoned set and the ground-truth mask) with ``Attack.poison``, and has a
test-time trigger for the attack success rate. Images are (N, H, W, C) uint8 throughout. ``rate`` is the share of the
whole training set that is poisoned.

- BadNets (Gu et al., 2017): a white 3x3 patch, at the bottom-right corner or at a random place.
- Blend (Chen et al., 2017): a fixed random pattern blended at ``alpha`` (0.15).
- SIG (Barni et al., 2019): a horizontal sinusoid added to *target-class* images, labels kept
  (clean-label: the rate cannot exceed the target class's share).
- WaNet (Nguyen and Tran, ICLR 2021): a small smooth warping field (k=4 control grid, s=0.5).
- Adaptive-Blend (Qi et al., ICLR 2023): the blend pattern cut into 16 pieces, each poison carries
  a random half of them at alpha 0.15, and as many "regularization" samples carry pieces but keep
  their true label; the test trigger is the whole pattern at alpha 0.2.

Dirty-label attacks draw their poisons from classes other than ``target`` and relabel them.

:func:`poison_version` applies a run's red team to a stored version: a poisoned copy published as a
version of its own, and the ground truth kept with the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sanitize.catalog import Run
from sanitize.config import RedTeamConfig
from sanitize.runs import RunContext
from sanitize.store import (
    SAMPLE_SCHEMA,
    Manifest,
    TableWriter,
    atomic_write_table,
    content_hash,
    decode_pixels,
    sample_id_for,
    version_id_for,
)
from sanitize.versions import publish_version
from sanitize.workspace import Workspace


@dataclass(frozen=True)
class Poisoning:
    """A poisoned copy of a dataset.

    Attributes
    ----------
    images : ndarray (N, H, W, C) uint8
    labels : ndarray (N,) int64
    mask : ndarray (N,) bool
        True where the sample is a poison (carries the trigger and the attacker's label). For
        Adaptive-Blend the regularization samples keep their label and are not in the mask.
    """

    images: np.ndarray
    labels: np.ndarray
    mask: np.ndarray


def choose_victims(labels: np.ndarray, rate: float, target: int, seed: int, *, from_target: bool = False) -> np.ndarray:
    """Indices (sorted) of the ``round(rate * n)`` samples an attack poisons: outside ``target``
    (dirty-label), or inside it (``from_target``, clean-label)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    if target not in set(np.unique(labels).tolist()):
        raise ValueError(f"target class {target} does not occur in the labels")
    candidates = np.flatnonzero(labels == target) if from_target else np.flatnonzero(labels != target)
    n = int(round(rate * len(labels)))
    if n < 1:
        raise ValueError(f"rate {rate} of {len(labels)} samples poisons no sample")
    if n > len(candidates):
        where = f"in class {target}" if from_target else f"outside class {target}"
        raise ValueError(f"rate {rate} needs {n} poisons but only {len(candidates)} samples are {where}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n, replace=False))


# --- triggers -----------------------------------------------------------------------------------
def patch_size(images: np.ndarray) -> int:
    """The BadNets patch side: 3 pixels, on Fashion-MNIST as on the 8x8 digits (where a 2x2 patch was
    learned by only part of the poisons in some trainings, which left the attack only half-visible)."""
    del images
    return 3


def stamp_patch(images: np.ndarray, size: int = 3, value: int = 255, margin: int = 0) -> np.ndarray:
    """BadNets trigger: a ``size`` x ``size`` square of ``value`` at the bottom-right corner."""
    out = images.copy()
    h, w = images.shape[1:3]
    size = max(1, min(size, h // 2, w // 2))
    margin = min(margin, h - size, w - size)
    out[:, h - margin - size : h - margin, w - margin - size : w - margin, :] = value
    return out


def stamp_patch_random(images: np.ndarray, size: int = 3, value: int = 255, seed: int = 0) -> np.ndarray:
    """BadNets trigger at a random position per image."""
    out = images.copy()
    h, w = images.shape[1:3]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, h - size + 1, size=len(images))
    cols = rng.integers(0, w - size + 1, size=len(images))
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i, r : r + size, c : c + size, :] = value
    return out


def blend_pattern(shape: tuple[int, int, int], seed: int = 12345) -> np.ndarray:
    """The fixed random pattern (H, W, C) uint8 that Blend mixes into its poisons."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _mix(images: np.ndarray, pattern: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    mixed = (1.0 - alpha) * images.astype(np.float32) + alpha * pattern.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def stamp_blend(images: np.ndarray, alpha: float = 0.15, pattern_seed: int = 12345) -> np.ndarray:
    """Blend trigger: ``(1 - alpha) * image + alpha * pattern``."""
    return _mix(images, blend_pattern(images.shape[1:], pattern_seed), alpha)


def stamp_sig(images: np.ndarray, delta: float = 20.0, frequency: int = 6) -> np.ndarray:
    """SIG trigger: add ``delta * sin(2 pi j f / width)`` along the columns (Barni et al., 2019)."""
    w = images.shape[2]
    wave = delta * np.sin(2 * np.pi * np.arange(w) * frequency / w).astype(np.float32)
    out = images.astype(np.float32) + wave[None, None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warping_field(h: int, w: int, k: int = 4, strength: float = 0.5, seed: int = 4242) -> np.ndarray:
    """WaNet's fixed warping field: (H, W, 2) offsets in normalized [-1, 1] coordinates.

    A k x k grid of uniform random offsets, normalized by its mean absolute value, upsampled
    bicubically to the image and scaled by ``strength / H`` (Nguyen and Tran, 2021).
    """
    import torch
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(1, 2, k, k, generator=g) * 2 - 1
    grid = grid / grid.abs().mean()
    field = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
    return (field[0].permute(1, 2, 0) * strength / h).numpy()


def stamp_warp(
    images: np.ndarray, k: int = 4, strength: float = 0.5, seed: int = 4242, noise: np.ndarray | None = None
) -> np.ndarray:
    """WaNet trigger: resample every image through the fixed warping field (plus ``noise``)."""
    import torch
    from torch.nn import functional as F

    n, h, w, c = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    identity = torch.stack([xs, ys], dim=-1)
    field = torch.from_numpy(warping_field(h, w, k, strength, seed))
    grid = (identity + field).clamp(-1, 1).expand(n, h, w, 2)
    if noise is not None:
        grid = (grid + torch.from_numpy(noise).float()).clamp(-1, 1)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


ADAPTIVE_PIECES = 16


def stamp_adaptive_blend(
    images: np.ndarray,
    alpha: float = 0.15,
    pieces_on: int = ADAPTIVE_PIECES // 2,
    seed: int = 0,
    pattern_seed: int = 54321,
) -> np.ndarray:
    """Adaptive-Blend training trigger: a random ``pieces_on`` of the 4x4 pieces of the pattern."""
    n, h, w, c = images.shape
    pattern = blend_pattern((h, w, c), pattern_seed)
    side = int(np.sqrt(ADAPTIVE_PIECES))
    rows = np.minimum(np.arange(h) * side // h, side - 1)
    cols = np.minimum(np.arange(w) * side // w, side - 1)
    piece_of = rows[:, None] * side + cols[None, :]
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    for i in range(n):
        on = rng.choice(ADAPTIVE_PIECES, size=pieces_on, replace=False)
        a = np.where(np.isin(piece_of, on), alpha, 0.0)[:, :, None]
        out[i] = _mix(images[i], pattern, a)
    return out


# --- attacks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Which samples an attack touches: ``poisons`` carry the trigger and count as poisons (relabelled
    to the target unless the attack is clean-label); ``regularization`` carry the trigger but keep
    their true label (Adaptive-Blend)."""

    poisons: np.ndarray
    regularization: np.ndarray


@dataclass(frozen=True)
class Attack:
    """An attack: how it picks and stamps training samples, and how it triggers a test image.

    ``stamp(images, seed)`` applies the training trigger to (B, H, W, C) uint8 images;
    ``trigger(images)`` the test-time trigger.
    """

    stamp: Callable[[np.ndarray, int], np.ndarray]
    trigger: Callable[[np.ndarray], np.ndarray]
    clean_label: bool = False
    regularization: bool = False

    def plan(self, labels: np.ndarray, rate: float, target: int, seed: int) -> Plan:
        """Choose the poisons (and regularization samples) from the labels alone, so the images can
        be stamped batch by batch."""
        poisons = choose_victims(labels, rate, target, seed, from_target=self.clean_label)
        regular = np.zeros(0, dtype=np.int64)
        if self.regularization:
            rest = np.setdiff1d(np.flatnonzero(labels != target), poisons)
            rng = np.random.default_rng(seed + 7)
            regular = np.sort(rng.choice(rest, size=min(len(poisons), len(rest)), replace=False))
        return Plan(poisons, regular)

    def poison(self, images: np.ndarray, labels: np.ndarray, rate: float, target: int, seed: int = 0) -> Poisoning:
        """Poison a whole in-memory set (the pipeline streams the same steps batch by batch)."""
        plan = self.plan(labels, rate, target, seed)
        out_images, out_labels = images.copy(), labels.astype(np.int64).copy()
        out_images[plan.poisons] = self.stamp(images[plan.poisons], seed)
        if len(plan.regularization):
            out_images[plan.regularization] = self.stamp(images[plan.regularization], seed + 1)
        if not self.clean_label:
            out_labels[plan.poisons] = target
        mask = np.zeros(len(labels), dtype=bool)
        mask[plan.poisons] = True
        return Poisoning(out_images, out_labels, mask)


ATTACKS: dict[str, Attack] = {
    # BadNets: a white 3x3 patch in the bottom-right corner, relabelled.
    "badnets": Attack(lambda x, s: stamp_patch(x, size=patch_size(x)), lambda x: stamp_patch(x, size=patch_size(x))),
    # BadNets with the patch at a random position in every image.
    "badnets_random": Attack(
        lambda x, s: stamp_patch_random(x, size=patch_size(x), seed=s + 1),
        lambda x: stamp_patch_random(x, size=patch_size(x), seed=999),
    ),
    "blend": Attack(lambda x, s: stamp_blend(x), stamp_blend),
    # SIG is clean-label: target-class images get the sinusoid and keep their label.
    "sig": Attack(lambda x, s: stamp_sig(x), stamp_sig, clean_label=True),
    "wanet": Attack(lambda x, s: stamp_warp(x), stamp_warp),
    "adaptive_blend": Attack(
        lambda x, s: stamp_adaptive_blend(x, seed=s),
        lambda x: stamp_blend(x, alpha=0.2, pattern_seed=54321),
        regularization=True,
    ),
}


def get_attack(name: str) -> Attack:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name]


def trigger_for(attack: str, images: np.ndarray) -> np.ndarray:
    """Apply ``attack``'s test-time trigger to images, for the attack success rate."""
    return get_attack(attack).trigger(images)


def poison_version(ws: Workspace, ctx: RunContext) -> RunContext:
    """For a red-team run: write a poisoned copy of the run's version's train split, publish it as a
    version (kind ``redteam``, parent the ingested version), keep the ground truth with the run
    (``ground_truth.parquet``: sample id, is_poison, original label) and point the run at it.

    Streams the samples; only the labels are held in memory to choose the victims. The same red team
    on the same version gives the same version id; a version already published stays as it was.
    """
    rt = ctx.config.redteam
    if rt is None:
        return ctx
    src = ws.store.manifest(ctx.dataset, ctx.ingested_version)
    labels = ws.store.read_column_table(src, ["label"], split="train").column("label").to_numpy()
    attack = get_attack(rt.attack)
    plan = attack.plan(labels, rt.rate, rt.target, rt.seed)
    is_victim = np.zeros(len(labels), dtype=bool)
    is_victim[plan.poisons] = True
    is_stamped = is_victim.copy()
    is_stamped[plan.regularization] = True
    out = ws.store.dataset_dir(ctx.dataset) / "ingests" / f"redteam-{ctx.run_id}.parquet"
    writer = TableWriter(out, SAMPLE_SCHEMA)
    truth: dict[str, list] = {"sample_id": [], "is_poison": [], "original_label": []}
    pairs: list[tuple[str, int, str]] = []
    pos = 0
    try:
        for batch in ws.store.iter_samples(src, batch_size=2048):
            table = pa.Table.from_batches([batch])
            split = np.array(table.column("split").to_pylist())
            train_rows = np.flatnonzero(split == "train")
            poison_rows = train_rows[is_victim[pos : pos + len(train_rows)]]
            stamp_rows = train_rows[is_stamped[pos : pos + len(train_rows)]]
            pos += len(train_rows)
            if len(stamp_rows):
                table = _stamp_rows(table, attack, rt, stamp_rows, poison_rows, rt.seed + pos)
            writer.write(table.cast(SAMPLE_SCHEMA))
            flags = np.zeros(table.num_rows, dtype=bool)
            flags[poison_rows] = True
            orig = batch.column("label").to_numpy()
            for r in train_rows:
                truth["sample_id"].append(table.column("sample_id")[r].as_py())
                truth["is_poison"].append(bool(flags[r]))
                truth["original_label"].append(int(orig[r]))
            pairs.extend(
                zip(
                    table.column("content_sha256").to_pylist(),
                    table.column("label").to_pylist(),
                    split.tolist(),
                    strict=True,
                )
            )
        version_id = version_id_for(pairs, ctx.dataset)
        manifest = Manifest(
            version_id=version_id,
            dataset=ctx.dataset,
            kind="redteam",
            files=(str(out.relative_to(ws.store.home)),),
            n_train=src.n_train,
            n_test=src.n_test,
            height=src.height,
            width=src.width,
            channels=src.channels,
            classes=src.classes,
            parent_id=src.version_id,
            extra={"redteam": rt.model_dump(), "run_id": ctx.run_id},
        )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    atomic_write_table(ctx.run_dir / "ground_truth.parquet", pa.table(truth))
    with ws.catalog.session() as s:
        if not publish_version(s, ws.store, manifest, run_id=ctx.run_id):
            # An earlier run published this very poisoning: its copy is the version, this one is spare.
            out.unlink()
        s.get(Run, ctx.run_id).version_id = version_id  # type: ignore[union-attr]
        ws.catalog.audit(
            s,
            "pipeline",
            "run.poison",
            ctx.run_id,
            attack=rt.attack,
            rate=rt.rate,
            target=rt.target,
            n_poison=int(is_victim.sum()),
            version=version_id,
        )
    ctx.version = version_id
    ctx.save()
    return ctx


def _stamp_rows(
    table: pa.Table, attack: Attack, rt: RedTeamConfig, stamp_rows: np.ndarray, poison_rows: np.ndarray, seed: int
) -> pa.Table:
    """``table`` with the trigger stamped on ``stamp_rows`` (new content hashes and sample ids) and,
    for a dirty-label attack, ``poison_rows`` relabelled to the target."""
    images = decode_pixels(table).copy()
    images[stamp_rows] = attack.stamp(images[stamp_rows], seed)
    shas = table.column("content_sha256").to_pylist()
    ids = table.column("sample_id").to_pylist()
    lab = table.column("label").to_numpy().copy()
    locs = table.column("locator").to_pylist()
    srcs = table.column("source").to_pylist()
    pixels = table.column("pixels").to_pylist()
    for r in stamp_rows:
        shas[r] = content_hash(images[r])
        ids[r] = sample_id_for(srcs[r], locs[r], shas[r])
        pixels[r] = images[r].tobytes()
    if not attack.clean_label:
        lab[poison_rows] = rt.target
    for name, values in (
        ("content_sha256", pa.array(shas, pa.string())),
        ("sample_id", pa.array(ids)),
        ("label", pa.array(lab, pa.int64())),
        ("pixels", pa.array(pixels, pa.binary())),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table
