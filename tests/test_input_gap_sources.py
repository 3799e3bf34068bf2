"""Input gap's decisions from the data (issue 15): a bar from the other classes' splits, and a group that
one source supplied judged a poisoning below the fixed separation."""

import numpy as np
import pytest

from sanitize.detect import make_detector
from sanitize.detect.input_gap import source_concentration


def planted(seed=0, n_per=200, d=48, n_planted=18, offset=6.0):
    """Five classes of Gaussian pixels from three suppliers; supplier "b" adds a small group to class 0
    that sits apart along a few pixels (a patch), far enough to be seen but under the fixed bar."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.05, size=(5 * n_per, d))
    labels = np.repeat(np.arange(5), n_per)
    x += labels[:, None] * 0.01
    sources = rng.choice(["a", "b", "c"], size=len(labels))
    extra = rng.normal(0.5, 0.05, size=(n_planted, d))
    extra[:, :3] += offset * 0.05
    x = np.vstack([x, extra])
    labels = np.concatenate([labels, np.zeros(n_planted, int)])
    sources = np.concatenate([sources, np.full(n_planted, "b")])
    truth = np.zeros(len(labels), bool)
    truth[-n_planted:] = True
    return x.astype(np.float32), labels, sources, truth


def test_a_group_from_one_source_is_quarantined_and_the_source_named():
    x, labels, sources, truth = planted()
    det = make_detector("input_gap")
    r = det.detect(x, labels, groups=sources)
    assert det.bar_[0] < det.separation_[0] < det.min_separation, "the case the sources decide"
    assert (r.flags == truth).all()
    assert det.source_[0][0] == "b" and det.source_[0][1] < 1e-6
    assert "'b'" in r.notes[0]


def test_the_same_group_from_every_source_alike_is_not_enough():
    x, labels, sources, truth = planted()
    rng = np.random.default_rng(1)
    sources[truth] = rng.choice(["a", "b", "c"], size=truth.sum())
    r = make_detector("input_gap").detect(x, labels, groups=sources)
    assert not r.flags.any()
    r = make_detector("input_gap").detect(x, labels)
    assert not r.flags.any(), "without sources only the fixed separation decides"


def test_the_null_bar_comes_from_the_other_classes():
    x, labels, sources, _ = planted(n_planted=0)
    det = make_detector("input_gap")
    r = det.detect(x, labels, groups=sources)
    assert not r.flags.any(), "clean Gaussian classes: nothing flagged"
    for c, bar in det.bar_.items():
        assert 2.0 < bar < 6.0, (c, bar)


def test_source_concentration():
    sources = np.array(["a"] * 50 + ["b"] * 50, dtype=object)
    name, p = source_concentration(sources, np.arange(50, 70))
    assert name == "b" and p < 1e-5
    name, p = source_concentration(sources, np.array([0, 1, 50, 51]))
    assert p == pytest.approx(1.0)
    assert source_concentration(np.array(["a"] * 10, dtype=object), np.arange(5)) == ("", 1.0)


def test_sources_must_match_the_samples():
    x, labels, sources, _ = planted()
    with pytest.raises(ValueError, match="sources for"):
        make_detector("input_gap").detect(x, labels, groups=sources[:-1])
