"""Input gap's trigger search: a faint additive trigger under every input-space bar is found when the
model obeys it, and only then; a clean dataset gives nothing. A patch gives its class a group of one
colour at one position, confirmed by the model that obeys it and by no other."""

from dataclasses import replace

import numpy as np
import pytest

from sanitize.detect import InputGap
from sanitize.detect._border import pool
from sanitize.detect._stats import shrunk_whitener
from sanitize.detect._trigger import pixel_candidates, refine, settle, trigger_groups

SIDE = 16
PATTERN = np.where(np.random.default_rng(99).random((SIDE, SIDE, 1)) > 0.5, 1.0, -1.0)


class _Model:
    """16x16 grey images; the class is read from the mean brightness (60, 120, 180), unless
    ``obeys`` and the image correlates with the trigger pattern: then class 1 (its backdoor)."""

    def __init__(self, images, obeys=True):
        self._images, self.obeys = images, obeys

    def images(self, rows):
        return self._images[rows]

    def predict(self, images):
        flat = images.reshape(len(images), -1).astype(np.float64)
        bucket = np.clip(np.round((flat.mean(1) - 60) / 60), 0, 2).astype(int)
        corr = (flat - flat.mean(1, keepdims=True)) @ PATTERN.ravel() / flat.shape[1]
        return np.where(self.obeys & (corr > 4), 1, bucket)


def _data(poisons=12, seed=0, n=200):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n)
    images = 60 + 60 * labels[:, None, None, None] + rng.uniform(-30, 30, (len(labels), SIDE, SIDE, 1))
    planted = np.flatnonzero(labels == 1)[:poisons]
    images[planted] += 8 * PATTERN  # clean-label: class-1 images, a faint trigger added
    return labels, np.clip(images, 0, 255).round().astype(np.uint8), planted


def _x(images):
    return images.reshape(len(images), -1).astype(np.float32) / 255


def test_a_faint_trigger_the_model_obeys_is_found():
    labels, images, planted = _data()
    detector = InputGap()
    result = detector.detect(_x(images), labels, response=_Model(images))
    assert set(np.flatnonzero(result.flags)) == set(planted)
    test = detector.response_test_[1]
    assert test.passed and test.rate > 0.9
    # Without the model's word, no input-space route passes it: the separation is under every bar.
    alone = InputGap().detect(_x(images), labels)
    assert not alone.flags.any()
    assert "turns" in result.notes[1] and result.notes[1].startswith("poisoned")


def test_a_trigger_the_model_ignores_is_not_found():
    labels, images, _ = _data()
    detector = InputGap()
    result = detector.detect(_x(images), labels, response=_Model(images, obeys=False))
    assert not result.flags.any()
    assert not detector.response_test_[1].passed


def test_clean_data_gives_nothing():
    labels, images, _ = _data(poisons=0, seed=3)
    detector = InputGap()
    result = detector.detect(_x(images), labels, response=_Model(images))
    assert not result.flags.any()
    assert all(not t.passed for t in detector.response_test_.values())


def test_a_parted_group_that_does_not_carry_the_pattern_is_dropped(monkeypatch):
    # The candidate (the top images along a direction) carries the trigger, but the matched filter
    # parts a broad side of the class without it: the group's own pattern must pass the test too.
    import sanitize.detect._trigger as trigger

    labels, images, planted = _data()
    real = trigger.refine

    def broad(centred, white, start):
        group = real(centred, white, start)
        clean = np.setdiff1d(np.arange(len(centred)), np.arange(len(planted)))
        return None if group is None else replace(group, members=clean[: len(centred) // 2])

    monkeypatch.setattr(trigger, "refine", broad)
    detector = InputGap()
    result = detector.detect(_x(images), labels, response=_Model(images))
    assert not result.flags.any()
    test = detector.response_test_[1]
    assert test.passed and test.parted is not None and not test.parted.passed
    assert "the group it parted does not carry it" in result.notes[1]
    # The group the filter really parts carries it, and the note says so.
    monkeypatch.setattr(trigger, "refine", real)
    kept = InputGap()
    found = kept.detect(_x(images), labels, response=_Model(images))
    assert set(np.flatnonzero(found.flags)) == set(planted)
    assert kept.response_test_[1].parted.passed and "the group it parted carries it" in found.notes[1]


def test_refine_parts_the_group_from_a_rough_start():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 20))
    x[:15, 0] += 6.0  # a group along the first axis
    start = np.concatenate([np.arange(8), [100, 101]])  # most of the group and two others
    group = refine(x - x.mean(0), np.eye(20), start)
    assert group is not None and set(group.members) == set(range(15))
    assert group.valley <= 0.5 and group.separation > 4
    scores = ((x - x.mean(0)) @ group.axis - group.centre) / group.scale
    assert set(np.flatnonzero(scores >= group.cut)) == set(range(15))


class _PatchModel:
    """16x16 colour images; the class is read from the mean brightness of the centre (60, 120, 180),
    unless ``obeys`` and the bottom-right 3x3 square is bright (mean at least 200): then class 1."""

    def __init__(self, images, obeys=True):
        self._images, self.obeys = images, obeys

    def images(self, rows):
        return self._images[rows]

    def predict(self, images):
        centre = images[:, 4:12, 4:12, :].reshape(len(images), -1).mean(1)
        bucket = np.clip(np.round((centre - 60) / 60), 0, 2).astype(int)
        patched = images[:, -3:, -3:, :].reshape(len(images), -1).mean(1) >= 200
        return np.where(self.obeys & patched, 1, bucket)


def _patch_data(poisons=12, seed=0, n=200):
    """Every class on the same random colour background; the class is in the centre's mean brightness,
    its pixels spread over most of each class's range (no colour at one position is a class's own)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n)
    images = rng.uniform(0, 255, (len(labels), SIDE, SIDE, 3))
    images[:, 4:12, 4:12, :] = 60 + 60 * labels[:, None, None, None] + rng.uniform(-60, 60, (len(labels), 8, 8, 3))
    planted = np.flatnonzero(labels == 1)[5 : 5 + poisons]
    images[planted, -3:, -3:, :] = 255  # a white square in the corner, label kept
    return labels, np.clip(images, 0, 255).round().astype(np.uint8), planted


def test_a_patch_gives_its_class_a_group_of_one_colour_at_one_position():
    labels, images, planted = _patch_data()
    least, most = {0: 10, 1: 10, 2: 10}, {0: 150, 1: 150, 2: 150}
    found = pixel_candidates(_PatchModel(images), labels, least, most)
    ones = [cand for cand in found if cand.label == 1]
    # The first holds every planted image, and the few whose background is white there by chance.
    assert ones and set(planted) <= set(ones[0].rows) and len(ones[0].rows) <= len(planted) + 3


def _patch_search(obeys, poisons=12):
    labels, images, planted = _patch_data(poisons=poisons)
    x = _x(images).astype(np.float64)
    classes = [0, 1, 2]
    means = {c: x[labels == c].mean(0) for c in classes}

    def white_of(c):
        rest = x[labels != c] - np.stack([means[o] for o in labels[labels != c]])
        return shrunk_whitener(np.cov(rest.T), len(rest))

    least = {c: 10 for c in classes}
    rng = np.random.default_rng(0)
    model = _PatchModel(images, obeys=obeys)
    return trigger_groups(model, x, labels, means, {}, least, 0.75, classes, white_of, rng, 0.01), planted


def test_a_patch_the_model_obeys_is_confirmed_and_parted():
    found, planted = _patch_search(obeys=True)
    group, test = found[1]
    assert test.passed and test.rate > 0.5
    class_rows = np.flatnonzero(np.repeat([0, 1, 2], 200) == 1)
    assert group is not None and set(class_rows[group.members]) == set(planted)
    assert not found[0][1].passed and not found[2][1].passed


def test_a_patch_the_model_ignores_is_not_confirmed_nor_clean_data():
    found, _ = _patch_search(obeys=False)
    assert not any(test.passed for _, test in found.values())
    # Clean data: the groups of one colour at one position are natural; none turns images to its class.
    found, _ = _patch_search(obeys=True, poisons=0)
    assert not any(test.passed for _, test in found.values())


def test_settle_finds_a_patch_where_the_group_agrees_with_itself():
    # A class of 300 images of 48 inputs in [0, 1]; 15 carry a patch: inputs 0-3 at exactly 1. A
    # quarter of the class is bright (1.0) at input 0 by nature, so no single input tells them apart.
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (300, 48)).round(3)
    x[rng.random(300) < 0.25, 0] = 1.0
    x[:15, :4] = 1.0
    start = np.concatenate([np.arange(9), [200, 201]])  # most of the patched and two others
    centred = x - x.mean(0)
    group = settle(centred, start, 0.01)
    assert group is not None and set(group.members) == set(range(15))
    assert set(group.support) == {0, 1, 2, 3} and group.valley <= 0.5
    assert set(np.flatnonzero(group.score(centred) >= group.cut)) == set(range(15))
    # A group of natural images agrees with itself nowhere beyond chance: no support, no group.
    assert settle(centred, np.arange(100, 120), 0.01) is None


def test_a_patch_on_fewer_images_than_the_share_floor_is_found_when_the_model_obeys_it():
    # 12 patched of 200 in class 1 (6 %), under a share floor of 8 % (16 images), which bounds the
    # groups the geometry decides. Six more class-1 images are white at the patch's corner pixel only
    # (the model does not obey that), so the group of that colour there is a candidate of 18; the
    # model's response decides, and the group parted (the 12) needs min_group (10), not 16.
    labels, images, planted = _patch_data(poisons=12)
    look_alikes = np.flatnonzero(labels == 1)[40:46]
    images[look_alikes, -1, -1, :] = 255
    detector = InputGap(min_group_share=0.08)
    result = detector.detect(_x(images), labels, response=_PatchModel(images))
    assert detector.response_test_[1].passed
    assert set(np.flatnonzero(result.flags)) == set(planted)
    # The share floor still bounds the geometry's groups: without the model, nothing.
    assert not InputGap(min_group_share=0.08).detect(_x(images), labels).flags.any()
    # Nothing where the model does not obey the patch, nor on clean data.
    ignored = _PatchModel(images, obeys=False)
    assert not InputGap(min_group_share=0.08).detect(_x(images), labels, response=ignored).flags.any()
    labels, images, _ = _patch_data(poisons=0)
    assert not InputGap(min_group_share=0.08).detect(_x(images), labels, response=_PatchModel(images)).flags.any()


def _framed(poisons=24, seed=3, at=(5, 1), colour=(200.0, 40.0, 90.0), alpha=0.8):
    """The patch data's classes, with class 1's first ``poisons`` images carrying a 3x3 frame (its 8
    border pixels) in one colour at ``alpha`` over the image's own pixels, its corner at ``at``."""
    labels, images, _ = _patch_data(poisons=0, seed=seed)
    planted = np.flatnonzero(labels == 1)[:poisons]
    frame = np.ones((3, 3), bool)
    frame[1, 1] = False
    where = np.s_[planted, at[0] : at[0] + 3, at[1] : at[1] + 3, :]
    patch = images[where].astype(np.float64)
    patch[:, frame] = alpha * np.array(colour) + (1 - alpha) * patch[:, frame]
    images[where] = patch.round().astype(np.uint8)
    return labels, images, planted


def test_settle_on_images_reads_a_blended_patch_off_the_pixels():
    from sanitize.detect._border import settle_on_images
    from sanitize.errors import DetectionError

    labels, images, _ = _framed()
    rows = np.flatnonzero(labels == 1)
    start = np.r_[np.arange(10), [150]]  # ten of the 24 framed images and a clean one: a colour candidate
    group = settle_on_images(_PatchModel(images), rows, start, 0.01, dims=SIDE * SIDE * 3)
    assert group is not None and set(group.members) == set(range(24)) and group.valley <= 0.5
    scores = group.score(np.zeros((len(rows), SIDE * SIDE * 3)))
    assert set(np.flatnonzero(scores >= group.cut)) == set(range(24))
    with pytest.raises(DetectionError, match="scores only them"):
        group.score(np.zeros((5, SIDE * SIDE * 3)))
    # Pooled 2x2, as the input-space voters' inputs are, each frame pixel is averaged with the image's
    # own: the same start finds no such group there.
    pooled = pool(images, 2).reshape(len(images), -1) / 255
    centred = pooled[rows] - pooled[rows].mean(0)
    found = settle(centred, start, 0.01)
    assert found is None or set(found.members) != set(range(24))
    # A natural group of the class agrees with itself on no pixel beyond chance.
    assert settle_on_images(_PatchModel(images), rows, np.arange(100, 120), 0.01, dims=1) is None


class _FrameModel(_PatchModel):
    """As :class:`_PatchModel`, but its backdoor is the frame of :func:`_framed` (at (5, 1)): class 1
    when the frame's pixels are far redder than green on average, as a stamped pattern also makes them."""

    def predict(self, images):
        frame = np.ones((3, 3), bool)
        frame[1, 1] = False
        px = images[:, 5:8, 1:4, :].astype(np.float64)[:, frame]
        bucket = np.clip(np.round((images[:, 4:12, 4:12, :].reshape(len(images), -1).mean(1) - 60) / 60), 0, 2)
        return np.where((px[..., 0] - px[..., 1]).mean(1) > 100, 1, bucket.astype(int))


def test_input_gap_scores_a_patch_group_found_on_the_images_only_on_its_fitted_samples():
    from sanitize.errors import DetectionError

    labels, images, planted = _framed(alpha=0.9)
    x = pool(images, 2).reshape(len(images), -1).astype(np.float32) / 255
    detector = InputGap()
    result = detector.detect(x, labels, response=_FrameModel(images))
    assert set(np.flatnonzero(result.flags)) == set(planted)
    assert detector.rule_[1].fitted is not None
    with pytest.raises(DetectionError, match="fitted on"):
        detector.score_samples(x[:100], labels[:100])
    assert np.array_equal(detector.score_samples(x, labels), result.scores)
