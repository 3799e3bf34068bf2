"""Input gap's trigger search: a faint additive trigger under every input-space bar is found when the
model obeys it, and only then; a clean dataset gives nothing."""

import numpy as np

from sanitize.detect import InputGap
from sanitize.detect._trigger import refine

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
