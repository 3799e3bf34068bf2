"""The model-response test: a group's pattern that the model obeys passes, a natural look does not."""

import numpy as np

from sanitize.detect import InputGap
from sanitize.detect._response import response_tests


class _Fake:
    """8x8 grey images; the model calls a bright top-left pixel class 1 (its backdoor), and otherwise
    reads the class from the mean brightness (40, 100, 160 for classes 0, 1, 2)."""

    def __init__(self, images):
        self._images = images

    def images(self, rows):
        return self._images[rows]

    def predict(self, images):
        bucket = np.clip(np.round((images.reshape(len(images), -1).mean(1) - 40) / 60), 0, 2).astype(int)
        return np.where(images[:, 0, 0, 0] > 180, 1, bucket)


def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n)
    base = 40 + 60 * labels
    images = (base[:, None, None, None] + rng.integers(-10, 11, (len(labels), 8, 8, 1))).astype(np.uint8)
    poisons = np.flatnonzero(labels == 1)[:20]
    images[poisons] = (40 + rng.integers(-10, 11, (20, 8, 8, 1))).astype(np.uint8)  # class-0 looks, relabelled
    images[poisons, 0, 0, 0] = 255  # the trigger
    natural = np.flatnonzero(labels == 0)[:20]
    images[natural] = np.clip(images[natural].astype(int) + 15, 0, 255).astype(np.uint8)  # a brighter kind of 0
    groups = {0: natural, 1: poisons, 2: np.flatnonzero(labels == 2)[:20]}
    return labels, images, groups


def test_a_trigger_passes_and_a_natural_group_does_not():
    labels, images, groups = _data()
    fake = _Fake(images)
    rng = np.random.default_rng(0)
    tests = response_tests(fake, labels, groups, [1, 0], rng, 0.01)
    trigger = tests[1]
    assert trigger.passed and trigger.rate > 0.9 and trigger.p < 1e-6
    assert set(trigger.others) == {0, 2} and max(trigger.others.values()) < 0.2
    natural = tests[0]
    assert not natural.passed and natural.rate < 0.05


def test_no_other_group_to_compare_with_does_not_pass():
    labels, images, groups = _data()
    result = response_tests(_Fake(images), labels, {1: groups[1]}, [1], np.random.default_rng(0), 0.01)[1]
    assert not result.passed and result.others == {}


def test_input_gap_takes_the_response_side_input():
    labels, images, _ = _data()
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    detector = InputGap()
    result = detector.detect(x, labels, response=_Fake(images))
    # No training dynamics: the loss route never runs. The planted group passes on its separation, so
    # only the other classes are searched for a trigger, and neither has one.
    assert detector.poisoned_ == {0: False, 1: True, 2: False}
    assert set(detector.response_test_) == {0, 2} and not any(t.passed for t in detector.response_test_.values())
    assert "response" in InputGap.side_inputs and len(result.scores) == len(labels)
