"""The red team's attacks beyond the first six (issue 15): all-to-all, TaCT, Adaptive-Patch, a patch of a
random colour and place, and the randomised generator; each poisons what it says and its ASR counts
what it aims at."""

import numpy as np
import pytest

from sanitize.evaluate.drawn import MIN_POISONS, RATE_HIGH, RATE_LOW, draw
from sanitize.evaluate.redteam import get_attack, next_class, source_class
from sanitize.evaluate.triggers import SHAPES, shape_mask


def data(n_per=60, classes=4, side=16, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per)
    images = rng.integers(0, 200, size=(len(labels), side, side, channels), dtype=np.uint8)
    return images, labels


def test_all_to_all_relabels_each_poison_to_the_next_class():
    images, labels = data()
    p = get_attack("all_to_all").poison(images, labels, rate=0.1, target=0, seed=3)
    assert p.mask.sum() == 24
    orig = labels[p.mask]
    assert set(orig.tolist()) == {0, 1, 2, 3}, "poisons come from every class, the target's too"
    assert (p.labels[p.mask] == (orig + 1) % 4).all()
    assert (p.labels[~p.mask] == labels[~p.mask]).all()
    assert (p.images[p.mask][:, -3:, -3:, :] == 255).all()


def test_next_class_wraps_over_sparse_class_ids():
    assert next_class(np.array([2, 5, 9]), [9, 2, 5]).tolist() == [5, 9, 2]


def test_tact_poisons_one_source_class_and_covers_the_others_under_their_labels():
    images, labels = data()
    attack = get_attack("tact")
    source = source_class([0, 1, 2, 3], target=1, seed=5)
    assert source != 1
    plan = attack.plan(labels, rate=0.05, target=1, seed=5)
    assert (labels[plan.poisons] == source).all()
    assert (plan.new_labels == 1).all()
    assert len(plan.regularization) == len(plan.poisons)
    assert not set(labels[plan.regularization].tolist()) & {source, 1}
    p = attack.poison(images, labels, rate=0.05, target=1, seed=5)
    cover = plan.regularization
    assert (p.labels[cover] == labels[cover]).all()
    assert (p.images[cover][:, -3:, -3:, :] == 255).all(), "cover samples carry the trigger"
    assert not p.mask[cover].any(), "cover samples are not poisons"
    keep, goal = attack.goal(np.array([0, 1, 2, 3]), 1, [0, 1, 2, 3], 5)
    assert keep.tolist() == [c == source for c in range(4)]
    assert (goal == 1).all()


def test_tact_refuses_a_rate_its_source_class_cannot_hold():
    images, labels = data()
    with pytest.raises(ValueError, match="only 60 samples are in class"):
        get_attack("tact").plan(labels, rate=0.3, target=0, seed=0)


def test_adaptive_patch_poisons_carry_two_of_four_patches_and_the_test_trigger_all():
    images = np.zeros((50, 32, 32, 3), np.uint8)
    labels = np.repeat(np.arange(5), 10)
    attack = get_attack("adaptive_patch")
    stamped = attack.stamp(images, 1)
    corners = [stamped[:, 1:5, 1:5], stamped[:, 1:5, -5:-1], stamped[:, -5:-1, 1:5], stamped[:, -5:-1, -5:-1]]
    carried = np.stack([c.reshape(50, -1).any(axis=1) for c in corners], axis=1).sum(axis=1)
    assert (carried == 2).all()
    full = attack.trigger(images)
    assert all(c.reshape(50, -1).any(axis=1).all() for c in [full[:, 1:5, 1:5], full[:, -5:-1, -5:-1]])
    plan = attack.plan(labels, rate=0.1, target=0, seed=0)
    assert len(plan.regularization) == len(plan.poisons) == 5


def test_badnets_colour_is_fixed_per_seed_and_differs_across_seeds():
    images = np.zeros((4, 20, 20, 3), np.uint8)
    a = get_attack("badnets_colour", 1).trigger(images)
    assert np.array_equal(a, get_attack("badnets_colour", 1).stamp(images, 99)), "train and test trigger agree"
    b = get_attack("badnets_colour", 2).trigger(images)
    assert not np.array_equal(a, b)
    changed = np.argwhere(a[0].any(axis=2))
    assert len(changed) == 9 and np.ptp(changed[:, 0]) == 2 and np.ptp(changed[:, 1]) == 2


def test_drawn_attacks_are_reproducible_and_span_the_stated_ranges():
    draws = [draw(s, classes=10, n_train=60_000) for s in range(300)]
    assert draws[7] == draw(7, classes=10, n_train=60_000)
    rates = np.array([d.rate for d in draws])
    assert rates.min() >= RATE_LOW and rates.max() <= RATE_HIGH
    assert np.median(rates) == pytest.approx(np.sqrt(RATE_LOW * RATE_HIGH), rel=0.35), "log-uniform"
    assert {d.kind for d in draws} == {"patch", "blend"}
    assert {d.shape for d in draws} == set(SHAPES)
    assert {d.target for d in draws} == set(range(10))
    small = draw(3, classes=2, n_train=500)
    assert small.rate * 500 >= MIN_POISONS - 1e-9


def test_a_drawn_patch_changes_only_its_square_and_the_same_place_on_every_size():
    d = next(d for d in (draw(s, classes=3, n_train=1000) for s in range(50)) if d.kind == "patch" and d.alpha > 0.9)
    for side in (16, 64):
        images = np.full((2, side, side, 3), 128, np.uint8)
        out = d.stamp(images)
        diff = np.argwhere((out != images).any(axis=3)[0])
        s = d.side(side, side)
        assert len(diff) >= 1 and np.ptp(diff[:, 0]) < s and np.ptp(diff[:, 1]) < s
    assert get_attack("drawn", d.seed).trigger(images).tobytes() == d.stamp(images).tobytes()


def test_shape_masks():
    assert shape_mask("cross", 3).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert shape_mask("frame", 3).sum() == 8
    assert shape_mask("checker", 2).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="unknown patch shape"):
        shape_mask("star", 3)


def test_grey_images_take_the_colours_mean():
    d = next(d for d in (draw(s, classes=3, n_train=1000) for s in range(50)) if d.kind == "patch")
    out = d.stamp(np.zeros((1, 8, 8, 1), np.uint8))
    assert out.shape == (1, 8, 8, 1) and out.any()
