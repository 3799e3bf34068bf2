"""The class-against-the-other-classes tests (:func:`count_beyond_other_classes`,
:func:`value_beyond_other_classes`): their stated false-alarm rates hold on simulated clean datasets,
and they find a class far beyond the others."""

from __future__ import annotations

import numpy as np
import pytest

from sanitize.detect._evidence import count_beyond_other_classes, value_beyond_other_classes


def _clean_counts(rng: np.random.Generator, classes: int, size: int, spread: float) -> np.ndarray:
    # Classes differ in how much of "it" they hold (log-normal shares), then counting adds Poisson noise.
    shares = np.exp(np.log(0.01) + spread * rng.normal(size=classes))
    return rng.poisson(np.minimum(shares, 1.0) * size).astype(float)


def _alarm(counts: np.ndarray, sizes: np.ndarray, rate: float) -> bool:
    k = len(counts)
    return any(count_beyond_other_classes(counts, sizes, c)[0] * k <= rate for c in range(k))


def test_clean_datasets_raise_an_alarm_at_most_at_the_stated_rate() -> None:
    rng = np.random.default_rng(0)
    for classes, size, spread in ((10, 6000, 0.6), (5, 300, 1.0), (3, 500, 0.4)):
        sizes = np.full(classes, size)
        alarms = [_alarm(_clean_counts(rng, classes, size, spread), sizes, 0.05) for _ in range(200)]
        # 5 % stated; 200 draws put the share within about 3 points of it.
        assert np.mean(alarms) <= 0.09, (classes, size, spread, np.mean(alarms))


def test_a_class_holding_ten_times_the_others_is_found() -> None:
    rng = np.random.default_rng(1)
    sizes = np.full(10, 6000)
    found = 0
    for _ in range(50):
        counts = _clean_counts(rng, 10, 6000, 0.3)
        counts[0] += 540  # 9 % of the class more: about ten times the others' 1 %
        p = count_beyond_other_classes(counts, sizes, 0)[0] * 10
        found += p <= 0.05
    assert found >= 45


def test_without_two_other_classes_there_is_no_null() -> None:
    p, centre, spread = count_beyond_other_classes(np.array([50.0, 0.0]), np.array([300, 300]), 0)
    assert p == 1.0 and np.isnan(centre) and np.isnan(spread)


def test_when_the_others_hold_none_the_count_alone_decides() -> None:
    sizes = np.array([300, 300, 300, 300])
    low = count_beyond_other_classes(np.array([1.0, 0, 0, 0]), sizes, 0)[0]
    high = count_beyond_other_classes(np.array([30.0, 0, 0, 0]), sizes, 0)[0]
    assert low > 0.1 and high < 1e-10


def test_a_value_beyond_the_others_holds_its_rate_on_clean_classes() -> None:
    # Separations of clean classes: log-normal, so the largest of K is judged at the stated rate.
    rng = np.random.default_rng(2)
    for classes in (3, 5, 10, 50):
        alarms = 0
        for _ in range(400):
            seps = np.exp(np.log(3.0) + 0.2 * rng.normal(size=classes))
            alarms += min(value_beyond_other_classes(seps, c) for c in range(classes)) * classes <= 0.05
        # 5 % stated (Bonferroni: at most); 400 draws put the share within about 2 points of it.
        assert alarms / 400 <= 0.075, (classes, alarms / 400)


def test_a_value_far_beyond_the_others_is_found_and_a_near_one_is_not() -> None:
    # Fashion-MNIST SIG 0.5 %: the bags' 6.2 among 2.3-5.2; icons BadNets 5 %: 12.5 among 2.5-3.5.
    bags = np.array([2.3, 2.5, 2.5, 2.6, 3.0, 3.0, 3.0, 4.7, 5.2, 6.2])
    assert value_beyond_other_classes(bags, 9) * 10 == pytest.approx(0.244, abs=0.005)
    icons = np.array([12.5, 2.5, 2.9, 3.0, 3.0, 3.5])
    assert value_beyond_other_classes(icons, 0) * 6 < 0.002
    assert value_beyond_other_classes(np.array([5.0, 1.0, 0.0]), 0) == 1.0, "one other class with a split: no null"
    assert value_beyond_other_classes(np.array([5.0, 2.0, 2.0]), 0) == 0.0, "others agree exactly: beyond"
    assert value_beyond_other_classes(np.array([0.0, 2.0, 3.0]), 0) == 1.0, "no split in the class"
