"""The randomised attack generator: a trigger that nobody chose, drawn from a seed.

A *draw* fixes every choice an attacker makes: the trigger's kind (a patch, or a pattern blended over
the whole image), its shape, side, colour, opacity and position, the target class and the poison
rate. The transfer suite (``python -m bench transfer``) measures the detectors over many draws, so
its figures are a distribution over attacks rather than a hand-picked table. The same seed always
gives the same draw; :func:`draw` says what each seed means and :meth:`Draw.describe` says it in words.

The ranges, and why (none was fitted to a detector):

- kind: a patch with probability 3/4, else a blend (the two families of additive triggers);
- patch shape: one of :data:`~sanitize.evaluate.triggers.SHAPES`, uniformly; side 2 to ``max(3,
  side // 8)`` pixels (3 on 8x8 digits, 4 on 32x32, 8 on 64x64): from a pixel pair to an eighth of
  the image, the sizes published patch attacks use;
- colour: uniform RGB; opacity uniform in [0.5, 1] for patches (a half-transparent patch is still a
  patch a model learns), [0.08, 0.2] for blends (Chen et al. used 0.2 and below);
- position: one fixed place per draw, uniform over the image (not only corners);
- target: uniform among the classes; rate: log-uniform in [0.1 %, 10 %] (the brief's range),
  raised where needed so that at least :data:`MIN_POISONS` samples are poisoned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sanitize.evaluate.triggers import SHAPES, blend_pattern, shape_mask, stamp_shape

#: The brief's range of poison rates.
RATE_LOW, RATE_HIGH = 0.001, 0.10
#: A draw poisons at least this many samples: fewer is not an attack a model learns (the red team's
#: BadNets needs about 10 on the 1,437 digits; bench/RESULTS.md "digits demo").
MIN_POISONS = 10
PATCH_SHARE = 0.75


@dataclass(frozen=True)
class Draw:
    """One drawn attack. ``kind`` is ``patch`` or ``blend``; for a patch, ``shape``, ``size`` (its
    side), ``row`` and ``col`` (its top-left corner, as shares of the image's free range, so one
    draw means the same place on every image size), ``colour`` and ``alpha``; the side is ``size_u``
    of the way from 2 pixels to :func:`largest_side` (:meth:`side`); for a blend, ``alpha``
    and the pattern's seed; ``target`` and ``rate`` for the poisoning."""

    seed: int
    kind: str
    shape: str
    size_u: float
    colour: tuple[int, int, int]
    alpha: float
    row: float
    col: float
    target: int
    rate: float

    def side(self, h: int, w: int) -> int:
        """The patch's side on an image of ``h`` x ``w``."""
        return min(2 + int(self.size_u * (largest_side(h, w) - 1)), h, w)

    def describe(self, h: int = 32, w: int = 32) -> str:
        if self.kind == "blend":
            return f"blend of a random pattern (seed {self.seed}) at alpha {self.alpha:.2f}"
        s = self.side(h, w)
        return (
            f"{s}x{s} {self.shape} patch (on {h}x{w}), colour {self.colour}, alpha {self.alpha:.2f}, "
            f"at ({self.row:.2f}, {self.col:.2f}) of the free range"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stamp(self, images: np.ndarray) -> np.ndarray:
        """Apply the trigger to (N, H, W, C) uint8 images (training and test time alike)."""
        h, w, c = images.shape[1:]
        if self.kind == "blend":
            pattern = blend_pattern((h, w, c), seed=self.seed).astype(np.float32)
            mixed = (1.0 - self.alpha) * images.astype(np.float32) + self.alpha * pattern
            return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        side = self.side(h, w)
        mask = shape_mask(self.shape, side, seed=self.seed)
        row, col = round(self.row * (h - side)), round(self.col * (w - side))
        return stamp_shape(images, mask, self.colour, row, col, self.alpha)


def largest_side(h: int, w: int) -> int:
    """A drawn patch's largest side: an eighth of the image's smaller side, at least 3."""
    return max(3, min(h, w) // 8)


def draw(seed: int, *, classes: int, n_train: int) -> Draw:
    """The attack of ``seed`` for a dataset of ``classes`` classes and ``n_train`` training samples
    (the trigger itself does not depend on them, only the target and the rate do)."""
    if classes < 2:
        raise ValueError(f"an attack needs at least 2 classes, got {classes}")
    rng = np.random.default_rng([seed, 15])
    kind = "patch" if rng.random() < PATCH_SHARE else "blend"
    shape = str(rng.choice(SHAPES))
    size_u = float(rng.random())
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    alpha = float(rng.uniform(0.5, 1.0) if kind == "patch" else rng.uniform(0.08, 0.2))
    row, col = float(rng.random()), float(rng.random())
    target = int(rng.integers(0, classes))
    rate = math.exp(rng.uniform(math.log(RATE_LOW), math.log(RATE_HIGH)))
    rate = max(rate, MIN_POISONS / n_train)
    place = (round(row, 3), round(col, 3))
    return Draw(seed, kind, shape, round(size_u, 3), (r, g, b), round(alpha, 3), *place, target, round(rate, 5))
