"""Triggers: functions that stamp a backdoor trigger on (N, H, W, C) uint8 images.

The red team's attacks (:mod:`sanitize.evaluate.redteam`) are built from these. Each returns a new
array; none changes its input.

- BadNets (Gu et al., 2017): a 3x3 white patch, in the corner or at a random place.
- Blend (Chen et al., 2017): a fixed random pattern blended in.
- SIG (Barni et al., 2019): a horizontal sinusoid.
- WaNet (Nguyen and Tran, ICLR 2021): a small smooth warp.
- Adaptive-Blend and Adaptive-Patch (Qi et al., ICLR 2023): a pattern cut in pieces, or several
  patches, of which each poison carries only some.
- :func:`stamp_shape`: a patch of any shape, size, colour, opacity and position, which the
  randomised attack generator (:mod:`sanitize.evaluate.drawn`) draws from a seed.
"""

from __future__ import annotations

import numpy as np


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


#: Shapes a drawn patch can take (:func:`shape_mask`).
SHAPES = ("square", "cross", "checker", "frame", "noise")


def shape_mask(shape: str, size: int, seed: int = 0) -> np.ndarray:
    """A (size, size) float mask in [0, 1] of a patch shape: a filled ``square``, a ``cross`` (the
    middle row and column), a ``checker`` board, a ``frame`` (the border), or ``noise`` (a fixed random
    pattern of 0s and 1s from ``seed``)."""
    if size < 1:
        raise ValueError(f"a patch needs a side of at least 1 pixel, got {size}")
    if shape == "square":
        return np.ones((size, size), np.float32)
    if shape == "cross":
        m = np.zeros((size, size), np.float32)
        m[size // 2, :] = 1.0
        m[:, size // 2] = 1.0
        return m
    if shape == "checker":
        return ((np.arange(size)[:, None] + np.arange(size)[None, :]) % 2 == 0).astype(np.float32)
    if shape == "frame":
        m = np.ones((size, size), np.float32)
        if size > 2:
            m[1:-1, 1:-1] = 0.0
        return m
    if shape == "noise":
        m = (np.random.default_rng(seed).random((size, size)) < 0.5).astype(np.float32)
        m.flat[0] = 1.0  # never empty
        return m
    raise ValueError(f"unknown patch shape {shape!r}; choose one of {SHAPES}")


def stamp_shape(
    images: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] | np.ndarray,
    row: int,
    col: int,
    alpha: float = 1.0,
) -> np.ndarray:
    """Stamp a patch: where ``mask`` (s, s) is 1, blend ``colour`` (per channel; grey images take the
    mean) in at opacity ``alpha`` with its top-left corner at (``row``, ``col``), clipped to the image."""
    out = images.copy()
    h, w, c = images.shape[1:]
    s = mask.shape[0]
    row, col = int(np.clip(row, 0, max(h - s, 0))), int(np.clip(col, 0, max(w - s, 0)))
    m = mask[: h - row, : w - col]
    rgb = np.asarray(colour, np.float32).reshape(-1)
    value = rgb[:c] if c == len(rgb) else np.full(c, rgb.mean(), np.float32)
    region = out[:, row : row + m.shape[0], col : col + m.shape[1], :].astype(np.float32)
    a = (alpha * m)[None, :, :, None]
    out[:, row : row + m.shape[0], col : col + m.shape[1], :] = np.clip(
        np.rint((1.0 - a) * region + a * value[None, None, None, :]), 0, 255
    ).astype(np.uint8)
    return out


#: Adaptive-Patch (Qi et al., ICLR 2023): this many patches, each poison carrying this many of them.
ADAPTIVE_PATCHES, ADAPTIVE_PATCHES_ON = 4, 2


def adaptive_patches(h: int, w: int, pattern_seed: int = 777) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Adaptive-Patch's patches: (mask, colour, row, col) each, one near each corner, random-pattern
    masks of side ``max(2, min(h, w) // 8)`` and random colours from ``pattern_seed``."""
    rng = np.random.default_rng(pattern_seed)
    side = max(2, min(h, w) // 8)
    spots = [(1, 1), (1, w - side - 1), (h - side - 1, 1), (h - side - 1, w - side - 1)]
    out = []
    for k in range(ADAPTIVE_PATCHES):
        mask = shape_mask("noise", side, seed=pattern_seed + k)
        out.append((mask, rng.integers(0, 256, size=3), *spots[k]))
    return out


def stamp_adaptive_patch(
    images: np.ndarray, on: int = ADAPTIVE_PATCHES_ON, alpha: float = 1.0, seed: int = 0, pattern_seed: int = 777
) -> np.ndarray:
    """Adaptive-Patch: every image carries a random ``on`` of the :func:`adaptive_patches` (all of them
    with ``on`` = ``ADAPTIVE_PATCHES``, the test-time trigger), at opacity ``alpha``."""
    h, w = images.shape[1:3]
    patches = adaptive_patches(h, w, pattern_seed)
    rng = np.random.default_rng(seed)
    out = images.copy()
    for i in range(len(images)):
        for k in sorted(rng.choice(len(patches), size=min(on, len(patches)), replace=False)):
            mask, colour, r, c = patches[k]
            out[i : i + 1] = stamp_shape(out[i : i + 1], mask, colour, r, c, alpha)
    return out
