"""The training augmentation: random small warps."""

from __future__ import annotations

import torch

from sanitize.models import random_warps


def _batch() -> torch.Tensor:
    # Smooth images (a blurred random pattern), as natural images are: a sub-pixel warp moves them little.
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def test_warps_move_the_chosen_share_of_a_batch_a_little() -> None:
    x = _batch()
    torch.manual_seed(0)

    out = random_warps(x, share=0.5)

    moved = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert out.shape == x.shape
    assert 16 <= int(moved.sum()) <= 48  # about half
    assert torch.equal(out[~moved], x[~moved])
    # At most a pixel or so of displacement: the warped image stays close to the original.
    assert float((out - x).abs().mean()) < 0.05


def test_warps_repeat_under_one_seed_and_leave_a_batch_alone_at_share_zero() -> None:
    x = _batch()
    torch.manual_seed(3)
    first = random_warps(x, share=1.0)
    torch.manual_seed(3)
    again = random_warps(x, share=1.0)

    assert torch.equal(first, again)
    assert not torch.equal(first, x)
    assert torch.equal(random_warps(x, share=0.0), x)


def test_a_stronger_warp_moves_images_further() -> None:
    x = _batch()
    torch.manual_seed(1)
    weak = random_warps(x, strength=0.01, share=1.0)
    torch.manual_seed(1)
    strong = random_warps(x, strength=0.1, share=1.0)

    assert float((strong - x).abs().mean()) > 3 * float((weak - x).abs().mean())
