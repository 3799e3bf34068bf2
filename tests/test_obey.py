"""Where a confirmed trigger's group ends: the model's per-image answers (a patched image of another
class leaves the class when the group's pattern is taken away; a clean one stays) cut the matched
filter's ranking at their change point, with a Bonferroni-bounded false-alarm rate."""

import numpy as np

from sanitize.detect._obey import change_point, leaves_class
from sanitize.detect._trigger import Refined, obeyed

SIDE = 16


class _PatchModel:
    """16x16 colour images; the class is the centre's mean brightness (60, 120, 180), unless ``obeys``
    and the bottom-right 3x3 square is bright (mean at least 200): then class 1."""

    def __init__(self, images, obeys=True):
        self._images, self.obeys = images, obeys

    def images(self, rows):
        return self._images[rows]

    def predict(self, images):
        centre = images[:, 4:12, 4:12, :].reshape(len(images), -1).mean(1)
        bucket = np.clip(np.round((centre - 60) / 60), 0, 2).astype(int)
        patched = images[:, -3:, -3:, :].reshape(len(images), -1).mean(1) >= 200
        return np.where(self.obeys & patched, 1, bucket)


def _dirty(poisons=30, n=200, seed=0):
    """Three classes; ``poisons`` images of classes 0 and 2 (half each) carry a white corner square
    and are relabelled 1. Returns labels, images, the poisoned rows."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1, 2], n)
    images = rng.uniform(0, 255, (len(truth), SIDE, SIDE, 3))
    images[:, 4:12, 4:12, :] = 60 + 60 * truth[:, None, None, None] + rng.uniform(-25, 25, (len(truth), 8, 8, 3))
    planted = np.concatenate([np.flatnonzero(truth == 0)[: poisons // 2], np.flatnonzero(truth == 2)[: poisons // 2]])
    images[planted, -3:, -3:, :] = 255
    labels = truth.copy()
    labels[planted] = 1
    return labels, np.clip(images, 0, 255).round().astype(np.uint8), planted


def _noisy_group(labels, planted, shift, seed=1):
    """A matched filter's group with no gap: a score where the planted images sit ``shift`` sd above
    the class, with the class's spread (valley far above a dip)."""
    rows = np.flatnonzero(labels == 1)
    rng = np.random.default_rng(seed)
    centred = rng.normal(size=(len(rows), 4))
    inside = np.isin(rows, planted)
    centred[inside, 0] += shift
    axis = np.eye(4)[0]
    top = np.flatnonzero(centred[:, 0] > np.sort(centred[:, 0])[-len(planted)])
    return rows, centred, Refined(axis, 0.0, 1.0, top, 1.0, 0.9, 1.0)


def test_change_point_finds_the_top_run_and_nothing_in_one_rate():
    rng = np.random.default_rng(0)
    scores = -np.arange(400, dtype=float)
    answers = np.zeros(400, dtype=bool)
    answers[:40] = rng.random(40) < 0.5  # the top 40 at half, the rest never
    found = change_point(scores, answers, 5, 0.01)
    assert found is not None and 30 <= found[0] <= 40 and found[1] < 1e-6
    assert change_point(scores, np.zeros(400, dtype=bool), 5, 0.01) is None
    # One rate throughout (the null): the Bonferroni bound holds its false-alarm rate.
    alarms = sum(change_point(scores, rng.random(400) < 0.1, 5, 0.01) is not None for _ in range(200))
    assert alarms <= 2


def test_a_dirty_patched_image_leaves_the_class_without_the_pattern_and_a_clean_one_stays():
    labels, images, planted = _dirty()
    rows = np.flatnonzero(labels == 1)
    model = _PatchModel(images)
    mean_group = images[planted].astype(np.float32).mean(0)
    rest = np.setdiff1d(rows, planted)
    pattern = mean_group - images[rest].astype(np.float32).mean(0)
    left = leaves_class(model, rows, pattern, 1)
    assert set(rows[left]) == set(planted)


def test_obeyed_cuts_a_gapless_group_where_the_answers_change():
    labels, images, planted = _dirty()
    rows, centred, group = _noisy_group(labels, planted, shift=3.0)
    cut = obeyed(_PatchModel(images), labels, centred, rows, group, 10, np.random.default_rng(0), 0.01)
    assert cut is not None and cut.asked is not None and cut.asked[0] >= 25
    found = set(rows[cut.members])
    hits = len(found & set(planted))
    assert hits >= 25 and len(found) <= 1.3 * len(planted)
    assert set(np.flatnonzero(cut.score(centred) >= cut.cut)) == set(cut.members)
    assert "answers change" in cut.describe()
    # A model that ignores the patch answers nothing: no cut, the group is dropped as before.
    ignored = _PatchModel(images, obeys=False)
    assert obeyed(ignored, labels, centred, rows, group, 10, np.random.default_rng(0), 0.01) is None


def test_obeyed_finds_nothing_on_a_clean_class():
    labels, images, _ = _dirty(poisons=0)
    planted = np.flatnonzero(labels == 1)[:30]  # a natural "group": no patch, nothing to take away
    rows, centred, group = _noisy_group(labels, planted, shift=3.0)
    assert obeyed(_PatchModel(images), labels, centred, rows, group, 10, np.random.default_rng(0), 0.01) is None


def test_obeyed_takes_the_other_side_where_the_model_obeys_its_pattern():
    # The matched filter took the class's clean images as its group (valley 0): the rest, the 60
    # patched, carries the pattern the model obeys, and it is taken instead, its score negated.
    labels, images, planted = _dirty(poisons=60)
    rows = np.flatnonzero(labels == 1)
    inside = np.isin(rows, planted)
    centred = np.zeros((len(rows), 4))
    centred[~inside, 0] = 5.0 + np.random.default_rng(3).normal(size=(~inside).sum()) * 0.1
    group = Refined(np.eye(4)[0], 0.0, 1.0, np.flatnonzero(~inside), 50.0, 0.0, 2.5)
    found = obeyed(_PatchModel(images), labels, centred, rows, group, 10, np.random.default_rng(0), 0.01)
    assert found is not None and found.sides is not None and found.sides[1] > found.sides[0]
    assert set(rows[found.members]) == set(planted)
    assert set(np.flatnonzero(found.score(centred) >= found.cut)) == set(found.members)
    assert "other side" in found.describe()
    # The right side already: it stands.
    right = Refined(-np.eye(4)[0], -2.5, 1.0, np.flatnonzero(inside), 50.0, 0.0, 0.0)
    kept = obeyed(_PatchModel(images), labels, centred, rows, right, 10, np.random.default_rng(0), 0.01)
    assert kept is not None and kept.sides is None and set(rows[kept.members]) == set(planted)
