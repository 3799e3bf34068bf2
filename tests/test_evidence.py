"""The class-against-the-other-classes count test (:func:`count_beyond_other_classes`): its stated
false-alarm rate holds on simulated clean datasets, and it finds a class holding far more."""

from __future__ import annotations

import numpy as np

from sanitize.detect._evidence import count_beyond_other_classes


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
