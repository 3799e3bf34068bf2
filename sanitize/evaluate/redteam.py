"""Red-team poisonings for measuring detection: each is a function of
``(images, labels, rate, target, seed)`` that returns a :class:`Poisoning`.

Images are (N, H, W, C) uint8 throughout. ``rate`` is the share of the whole training set that is
poisoned; dirty-label attacks draw their poisons from classes other than ``target`` and relabel
them to ``target`` (BadNets: Gu et al., 2017; Blend: Chen et al., 2017).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Poisoning:
    """A poisoned copy of a dataset.

    Attributes
    ----------
    images : ndarray (N, H, W, C) uint8
    labels : ndarray (N,) int64
    mask : ndarray (N,) bool, True where the sample was poisoned (the ground truth).
    """

    images: np.ndarray
    labels: np.ndarray
    mask: np.ndarray


def choose_victims(labels: np.ndarray, rate: float, target: int, seed: int) -> np.ndarray:
    """Indices (sorted) of the ``round(rate * n)`` samples outside ``target`` that an attack poisons."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    if target not in set(np.unique(labels).tolist()):
        raise ValueError(f"target class {target} does not occur in the labels")
    candidates = np.flatnonzero(labels != target)
    n = int(round(rate * len(labels)))
    if n < 1:
        raise ValueError(f"rate {rate} of {len(labels)} samples poisons no sample")
    if n > len(candidates):
        raise ValueError(f"rate {rate} needs {n} poisons but only {len(candidates)} samples are outside class {target}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n, replace=False))


def stamp_patch(images: np.ndarray, size: int = 3, value: int = 255, margin: int = 0) -> np.ndarray:
    """BadNets trigger: a ``size`` x ``size`` square of ``value`` at the bottom-right corner."""
    out = images.copy()
    h, w = images.shape[1:3]
    size = max(1, min(size, h // 2, w // 2))
    margin = min(margin, h - size, w - size)
    out[:, h - margin - size : h - margin, w - margin - size : w - margin, :] = value
    return out


def blend_pattern(shape: tuple[int, int, int], seed: int = 12345) -> np.ndarray:
    """The fixed random pattern (H, W, C) uint8 that Blend mixes into its poisons."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def stamp_blend(images: np.ndarray, alpha: float = 0.15, pattern_seed: int = 12345) -> np.ndarray:
    """Blend trigger: ``(1 - alpha) * image + alpha * pattern``."""
    pattern = blend_pattern(images.shape[1:], pattern_seed).astype(np.float32)
    mixed = (1.0 - alpha) * images.astype(np.float32) + alpha * pattern
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def badnets(images: np.ndarray, labels: np.ndarray, rate: float, target: int, seed: int = 0) -> Poisoning:
    """BadNets: stamp a white 3x3 patch (scaled down on tiny images) and relabel to ``target``."""
    idx = choose_victims(labels, rate, target, seed)
    size = 3 if min(images.shape[1:3]) >= 16 else 2
    out_images, out_labels = images.copy(), labels.astype(np.int64).copy()
    out_images[idx] = stamp_patch(images[idx], size=size)
    out_labels[idx] = target
    mask = np.zeros(len(labels), dtype=bool)
    mask[idx] = True
    return Poisoning(out_images, out_labels, mask)


def blend(images: np.ndarray, labels: np.ndarray, rate: float, target: int, seed: int = 0) -> Poisoning:
    """Blend: mix a fixed random pattern at alpha 0.15 and relabel to ``target``."""
    idx = choose_victims(labels, rate, target, seed)
    out_images, out_labels = images.copy(), labels.astype(np.int64).copy()
    out_images[idx] = stamp_blend(images[idx])
    out_labels[idx] = target
    mask = np.zeros(len(labels), dtype=bool)
    mask[idx] = True
    return Poisoning(out_images, out_labels, mask)


def trigger_for(attack: str, images: np.ndarray) -> np.ndarray:
    """Apply ``attack``'s trigger to test images, for the attack success rate."""
    if attack == "badnets":
        return stamp_patch(images, size=3 if min(images.shape[1:3]) >= 16 else 2)
    if attack == "blend":
        return stamp_blend(images)
    raise ValueError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS)}")


ATTACKS: dict[str, Callable[..., Poisoning]] = {"badnets": badnets, "blend": blend}
