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
from sanitize.evaluate.drawn import draw
from sanitize.evaluate.triggers import (
    ADAPTIVE_PATCHES,
    patch_size,
    shape_mask,
    stamp_adaptive_blend,
    stamp_adaptive_patch,
    stamp_blend,
    stamp_patch,
    stamp_patch_random,
    stamp_shape,
    stamp_sig,
    stamp_warp,
)
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


# --- attacks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Which samples an attack touches: ``poisons`` carry the trigger and count as poisons, relabelled
    to ``new_labels`` (their own labels for a clean-label attack); ``regularization`` (cover) samples
    carry the trigger but keep their true label (Adaptive-Blend, Adaptive-Patch, TaCT)."""

    poisons: np.ndarray
    regularization: np.ndarray
    new_labels: np.ndarray


def next_class(labels: np.ndarray, classes: tuple[int, ...] | list[int]) -> np.ndarray:
    """All-to-all's relabelling: each label to the next of the sorted ``classes``, the last to the first."""
    order = sorted(int(c) for c in classes)
    after = {c: order[(i + 1) % len(order)] for i, c in enumerate(order)}
    return np.array([after[int(y)] for y in labels], dtype=np.int64)


def source_class(classes: tuple[int, ...] | list[int], target: int, seed: int) -> int:
    """TaCT's source class: the one class whose images carry the trigger to ``target``, chosen by the
    seed among the others."""
    others = sorted(int(c) for c in classes if int(c) != target)
    if not others:
        raise ValueError(f"a source-specific attack needs a class besides the target {target}")
    return others[seed % len(others)]


@dataclass(frozen=True)
class Attack:
    """An attack: how it picks and stamps training samples, and how it triggers a test image.

    ``stamp(images, seed)`` applies the training trigger to (B, H, W, C) uint8 images;
    ``trigger(images)`` the test-time trigger. ``relabel`` is ``target`` (every poison to the target),
    ``next`` (all-to-all: each class to the next) or ``keep`` (clean-label). ``source_specific``
    (TaCT): the poisons come from one source class and as many cover samples of the other classes
    carry the trigger under their true label.
    """

    stamp: Callable[[np.ndarray, int], np.ndarray]
    trigger: Callable[[np.ndarray], np.ndarray]
    relabel: str = "target"
    regularization: bool = False
    source_specific: bool = False

    @property
    def clean_label(self) -> bool:
        return self.relabel == "keep"

    def plan(self, labels: np.ndarray, rate: float, target: int, seed: int) -> Plan:
        """Choose the poisons (and cover samples) from the labels alone, so the images can be stamped
        batch by batch."""
        classes = sorted(int(c) for c in np.unique(labels))
        rng = np.random.default_rng(seed + 7)
        regular = np.zeros(0, dtype=np.int64)
        if self.relabel == "next":
            poisons = _choose(np.arange(len(labels)), rate, len(labels), seed, "in the training set")
            return Plan(poisons, regular, next_class(labels[poisons], classes))
        if self.source_specific:
            if target not in classes:
                raise ValueError(f"target class {target} does not occur in the labels")
            source = source_class(classes, target, seed)
            poisons = _choose(np.flatnonzero(labels == source), rate, len(labels), seed, f"in class {source}")
            cover = np.flatnonzero((labels != source) & (labels != target))
            regular = np.sort(rng.choice(cover, size=min(len(poisons), len(cover)), replace=False))
            return Plan(poisons, regular, np.full(len(poisons), target, np.int64))
        poisons = choose_victims(labels, rate, target, seed, from_target=self.clean_label)
        if self.regularization:
            rest = np.setdiff1d(np.flatnonzero(labels != target), poisons)
            regular = np.sort(rng.choice(rest, size=min(len(poisons), len(rest)), replace=False))
        new = labels[poisons].astype(np.int64) if self.clean_label else np.full(len(poisons), target, np.int64)
        return Plan(poisons, regular, new)

    def goal(
        self, labels: np.ndarray, target: int, classes: tuple[int, ...] | list[int], seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """For the attack success rate on test images of true ``labels``: which images count (mask)
        and the class the attacker wants each of them predicted as."""
        if self.relabel == "next":
            return np.ones(len(labels), bool), next_class(labels, classes)
        if self.source_specific:
            return labels == source_class(classes, target, seed), np.full(len(labels), target, np.int64)
        return labels != target, np.full(len(labels), target, np.int64)

    def poison(self, images: np.ndarray, labels: np.ndarray, rate: float, target: int, seed: int = 0) -> Poisoning:
        """Poison a whole in-memory set (the pipeline streams the same steps batch by batch)."""
        plan = self.plan(labels, rate, target, seed)
        out_images, out_labels = images.copy(), labels.astype(np.int64).copy()
        out_images[plan.poisons] = self.stamp(images[plan.poisons], seed)
        if len(plan.regularization):
            out_images[plan.regularization] = self.stamp(images[plan.regularization], seed + 1)
        out_labels[plan.poisons] = plan.new_labels
        mask = np.zeros(len(labels), dtype=bool)
        mask[plan.poisons] = True
        return Poisoning(out_images, out_labels, mask)


def _choose(candidates: np.ndarray, rate: float, n_total: int, seed: int, where: str) -> np.ndarray:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    n = int(round(rate * n_total))
    if n < 1:
        raise ValueError(f"rate {rate} of {n_total} samples poisons no sample")
    if n > len(candidates):
        raise ValueError(f"rate {rate} needs {n} poisons but only {len(candidates)} samples are {where}")
    return np.sort(np.random.default_rng(seed).choice(candidates, size=n, replace=False))


def _patch(x: np.ndarray) -> np.ndarray:
    return stamp_patch(x, size=patch_size(x))


ATTACKS: dict[str, Attack] = {
    # BadNets: a white 3x3 patch in the bottom-right corner, relabelled.
    "badnets": Attack(lambda x, s: _patch(x), _patch),
    # BadNets with the patch at a random position in every image.
    "badnets_random": Attack(
        lambda x, s: stamp_patch_random(x, size=patch_size(x), seed=s + 1),
        lambda x: stamp_patch_random(x, size=patch_size(x), seed=999),
    ),
    "blend": Attack(lambda x, s: stamp_blend(x), stamp_blend),
    # SIG is clean-label: target-class images get the sinusoid and keep their label.
    "sig": Attack(lambda x, s: stamp_sig(x), stamp_sig, relabel="keep"),
    "wanet": Attack(lambda x, s: stamp_warp(x), stamp_warp),
    "adaptive_blend": Attack(
        lambda x, s: stamp_adaptive_blend(x, seed=s),
        lambda x: stamp_blend(x, alpha=0.2, pattern_seed=54321),
        regularization=True,
    ),
    # Adaptive-Patch: 4 patches, each poison (and as many cover samples, labels kept) carries 2.
    "adaptive_patch": Attack(
        lambda x, s: stamp_adaptive_patch(x, seed=s),
        lambda x: stamp_adaptive_patch(x, on=ADAPTIVE_PATCHES),
        regularization=True,
    ),
    # All-to-all (BadNets' patch): poisons from every class, each relabelled to the next class.
    "all_to_all": Attack(lambda x, s: _patch(x), _patch, relabel="next"),
    # TaCT (Tang et al., USENIX Security 2021): only one source class's images go to the target; as
    # many cover samples of the other classes carry the same patch under their true label.
    "tact": Attack(lambda x, s: _patch(x), _patch, source_specific=True),
}

#: Attacks whose trigger is drawn from the run's seed (:func:`seeded_attack`).
SEEDED = ("badnets_colour", "drawn")


def seeded_attack(name: str, seed: int) -> Attack:
    """``badnets_colour``: a 3x3 patch of a random colour at a random place, both fixed per seed;
    ``drawn``: the randomised generator's trigger of that seed (:mod:`sanitize.evaluate.drawn`; the run's
    target and rate are the red team's own, which the suite takes from the same draw)."""
    rng = np.random.default_rng([seed, 3])
    if name == "badnets_colour":
        colour = rng.integers(0, 256, size=3)
        row, col = float(rng.random()), float(rng.random())

        def stamp(x: np.ndarray) -> np.ndarray:
            h, w = x.shape[1:3]
            return stamp_shape(x, shape_mask("square", 3), colour, round(row * (h - 3)), round(col * (w - 3)))

        return Attack(lambda x, s: stamp(x), stamp)
    if name == "drawn":
        d = draw(seed, classes=2, n_train=10**6)
        return Attack(lambda x, s: d.stamp(x), d.stamp)
    raise ValueError(f"unknown seeded attack {name!r}; choose one of {SEEDED}")


def get_attack(name: str, seed: int = 0) -> Attack:
    """The attack of that name (a seeded one's trigger from ``seed``, the red team's seed)."""
    if name in SEEDED:
        return seeded_attack(name, seed)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted([*ATTACKS, *SEEDED])}")
    return ATTACKS[name]


def attack_of(rt: RedTeamConfig) -> Attack:
    """A red team's attack."""
    return get_attack(rt.attack, rt.seed)


def trigger_for(attack: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Apply ``attack``'s test-time trigger to images, for the attack success rate."""
    return get_attack(attack, seed).trigger(images)


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
    attack = attack_of(rt)
    plan = attack.plan(labels, rt.rate, rt.target, rt.seed)
    is_victim = np.zeros(len(labels), dtype=bool)
    is_victim[plan.poisons] = True
    is_stamped = is_victim.copy()
    is_stamped[plan.regularization] = True
    new_label = np.full(len(labels), -1, np.int64)
    new_label[plan.poisons] = plan.new_labels
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
            start = pos
            poison_rows = train_rows[is_victim[pos : pos + len(train_rows)]]
            stamp_rows = train_rows[is_stamped[pos : pos + len(train_rows)]]
            pos += len(train_rows)
            if len(stamp_rows):
                table = _stamp_rows(table, attack, stamp_rows, poison_rows, new_label[start:pos], rt.seed + pos)
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
    table: pa.Table,
    attack: Attack,
    stamp_rows: np.ndarray,
    poison_rows: np.ndarray,
    new_labels: np.ndarray,
    seed: int,
) -> pa.Table:
    """``table`` with the trigger stamped on ``stamp_rows`` (new content hashes and sample ids) and
    ``poison_rows`` relabelled as the plan says (``new_labels``: per training row of the batch, -1 where
    the row is no poison)."""
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
    train_rows = np.flatnonzero(np.array(table.column("split").to_pylist()) == "train")
    relabel = dict(zip(train_rows.tolist(), new_labels.tolist(), strict=True))
    for r in poison_rows:
        lab[r] = relabel[int(r)]
    for name, values in (
        ("content_sha256", pa.array(shas, pa.string())),
        ("sample_id", pa.array(ids)),
        ("label", pa.array(lab, pa.int64())),
        ("pixels", pa.array(pixels, pa.binary())),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table
