"""The training-dynamics signal (issue 15): the per-sample loss recorded while the reference model
trains, the loss-dynamics detector, and input gap's permutation test on a group's losses."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from sanitize.detect import make_detector, run_detectors
from sanitize.detect._evidence import crossing, loss_crossing, relative_log_loss
from sanitize.training import load_dynamics, write_dynamics
from tests.test_input_gap_sources import planted


def losses(n, epochs=12, group=(), seed=0, kind="poison"):
    """Log-loss curves falling with training; ``group`` samples are hard first and easy later
    (poisons) or hard throughout (``kind="hard"``, a natural group)."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    base = 1.0 - 0.5 * t  # log loss falling
    log = base[None, :] + rng.normal(0, 0.4, size=(n, epochs))
    g = np.asarray(group, int)
    if len(g):
        shift = np.where(t < 3, 1.2, -2.5) if kind == "poison" else np.full(epochs, 1.2)
        log[g] += shift[None, :]
    return np.exp(log)


def test_crossing_is_the_largest_fall_through_the_class_median():
    assert crossing(np.array([0.0, 2.0, 1.0, 3.0, -1.0])) == 4.0
    assert crossing(np.array([0.0, 1.0, 2.0])) == 0.0
    assert crossing(np.array([3.0, 0.5, 2.0, 0.1])) == 0.0, "harder than the class throughout"
    assert crossing(np.array([0.0, -3.0, -1.0])) == 3.0, "learnt first"


def test_the_detector_ranks_samples_learnt_late_then_fast_first():
    labels = np.repeat([0, 1], 200)
    group = np.arange(10)
    d = losses(400, group=group)
    r = make_detector("loss_dynamics").detect(d, labels)
    top = np.argsort(-r.scores[:200])[:10]
    assert set(top.tolist()) == set(group.tolist())
    assert r.flags[group].all() and r.flags[10:].sum() <= 4


def test_a_hard_group_is_not_a_crossing():
    d = losses(400, group=np.arange(20), kind="hard")
    rel = relative_log_loss(d[:200])
    _, p = loss_crossing(rel, np.arange(20), np.random.default_rng(0))
    assert p > 0.05
    poisoned = relative_log_loss(losses(400, group=np.arange(20))[:200])
    _, p = loss_crossing(poisoned, np.arange(20), np.random.default_rng(0))
    assert p <= 0.005


def test_without_recorded_dynamics_it_abstains():
    labels = np.repeat([0, 1], 5)
    r = make_detector("loss_dynamics").detect(None, labels)
    assert not r.flags.any() and "no training dynamics" in r.notes[0]


def test_input_gap_decides_a_group_under_the_fixed_bar_on_its_losses():
    x, labels, sources, truth = planted()
    rng = np.random.default_rng(1)
    sources[truth] = rng.choice(["a", "b", "c"], size=truth.sum())  # sources say nothing
    n = len(labels)
    order = np.flatnonzero(labels == 0)
    crossing_group = [int(np.flatnonzero(order == i)[0]) for i in np.flatnonzero(truth)]
    d = np.ones((n, 12))
    d[labels == 0] = losses(len(order), group=crossing_group)
    for c in range(1, 5):
        d[labels == c] = losses(int((labels == c).sum()), seed=c)
    det = make_detector("input_gap")
    r = det.detect(x, labels, groups=sources, dynamics=d)
    assert (r.flags == truth).all()
    assert det.dynamics_test_[0][1] <= 0.01
    assert "training loss fell" in r.notes[0]
    # Hard throughout (a natural group): the same pixels are not enough.
    d[labels == 0] = losses(len(order), group=crossing_group, kind="hard")
    assert not make_detector("input_gap").detect(x, labels, groups=sources, dynamics=d).flags.any()


def test_run_detectors_hands_the_dynamics_to_who_reads_them():
    x, labels, sources, truth = planted()
    d = losses(len(labels))
    calls = []

    def dyn():
        calls.append(1)
        return d

    results, _ = run_detectors(
        ["input_gap", "loss_dynamics"], x, labels, lambda: x, sources=lambda: sources, dynamics=dyn
    )
    assert len(calls) == 1, "loaded once for both"
    assert results["loss_dynamics"].scores.shape == (len(labels),)


def test_dynamics_are_written_and_read_in_the_samples_order(tmp_path):
    path = tmp_path / "d.parquet"
    write_dynamics(path, {"b": np.array([1.0, 0.5], np.float32), "a": np.array([2.0, 0.1], np.float32)}, 2)
    assert pq.read_table(path).column_names == ["sample_id", "loss_1", "loss_2"]
    got = load_dynamics(path, ["b", "a"])
    assert np.allclose(got, [[1.0, 0.5], [2.0, 0.1]])
    assert load_dynamics(path, ["a", "c"]) is None, "a sample without dynamics: none for the run"
    assert load_dynamics(tmp_path / "none.parquet", ["a"]) is None


def _bridged_class():
    """Six classes of 400 in 16 dimensions; class 0's first 60 split far along dimension 0 (by 9) and
    bridged to the rest by 40 more spread between them. (x, labels, the 60, the generator, for more)."""
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, size=(400, 16)) + c * 0.3 for c in range(6)])
    labels = np.repeat(np.arange(6), 400)
    group = np.arange(60)
    x[group, 0] += 9.0
    x[np.arange(60, 100), 0] += rng.uniform(2, 7, size=40)
    return x, labels, group, rng


def _judged_by_the_model(x, labels, d, group):
    """With the model asked: class 0's cluster kept where the model obeys its pattern, dropped where not."""
    det = make_detector("whitened_clustering")
    r = det.detect(x, labels, dynamics=d, response=_FeatureModel(x, obeys=True))
    assert r.flags[group].all() and not r.flags[400:].any()
    assert det.response_test_[0].passed and "its pattern turns" in r.notes[0]
    det = make_detector("whitened_clustering")
    r = det.detect(x, labels, dynamics=d, response=_FeatureModel(x, obeys=False))
    assert not r.flags.any() and not det.response_test_[0].passed


def test_whitened_clustering_decides_one_population_cut_in_two_on_the_losses():
    """A class split far from the rest (separation 8, robust z 40 among classes) but bridged to it
    (valley 0.3, alike spreads) is judged clean on its features alone, and poisoned when its
    suspect cluster was learnt late and then fast."""
    x, labels, group, rng = _bridged_class()
    det = make_detector("whitened_clustering")
    assert not det.detect(x, labels).flags.any()
    d = np.vstack([losses(400, group=list(range(60)) if c == 0 else [], seed=c) for c in range(6)])
    det = make_detector("whitened_clustering")
    r = det.detect(x, labels, dynamics=d)
    assert r.flags[group].all() and not r.flags[400:].any()
    assert det.dynamics_test_[0][1] <= 0.01 and "training loss fell" in r.notes[0]
    hard = np.vstack([losses(400, group=list(range(60)) if c == 0 else [], seed=c, kind="hard") for c in range(6)])
    assert not make_detector("whitened_clustering").detect(x, labels, dynamics=hard).flags.any()
    assert det.apart_p_[0] < 0.001 and "separation beyond the other classes' p" in r.notes[0]


def test_whitened_clustering_asks_the_dynamics_only_of_a_class_apart_from_the_others():
    """The same class and losses, but another class split almost as far: the class is not
    beyond them (Fashion-MNIST's bags on SIG 0.5 %), and its falling cluster is left to other voters."""
    x, labels, _, rng = _bridged_class()
    for c in (1,):  # a natural group, bridged to its class, split nearly as far
        x[400 * c + np.arange(60), 1] += 7.0
        x[400 * c + np.arange(60, 100), 1] += rng.uniform(2, 6, size=40)  # separation 5.8 against 8.2
    d = np.vstack([losses(400, group=list(range(60)) if c == 0 else [], seed=c) for c in range(6)])
    det = make_detector("whitened_clustering")
    r = det.detect(x, labels, dynamics=d)
    assert det.dynamics_test_[0][1] <= 0.01, "the losses alone would judge it"
    assert det.apart_p_[0] > 0.1 and not r.flags.any()


def test_a_fall_must_be_beyond_every_other_classes_group():
    from sanitize.detect._evidence import beyond_other_classes

    bar, ok = beyond_other_classes(1.67, [0.84, 0.03, 0.59, 0.28, 0.18, 0.15, 1.83, 0.54, 0.0], 0.01)
    assert bar == 1.83 and not ok, "Fashion-MNIST's bags: under the shirts' natural fall"
    bar, ok = beyond_other_classes(13.8, [2.92, 2.29, 0.99, 5.09, 1.76], 0.01)
    assert ok and bar >= 5.09
    bar, ok = beyond_other_classes(0.5, [0.1, 0.1, 0.1], 0.01)
    assert bar == pytest.approx(1.1 * np.exp(2.3263 * 0.1) - 1, rel=1e-3), "agreeing others: the floor of the spread"
    assert ok
    assert beyond_other_classes(3.0, [], 0.01) == (float("inf"), False)


class _Model:
    """Rows of pixels as 1 x d images; ``obeys`` a bright first three pixels as class 0's trigger, or not."""

    def __init__(self, x, obeys):
        self.x = np.clip(np.round(x * 255), 0, 255).astype(np.uint8).reshape(len(x), 1, -1, 1)
        self.obeys = obeys

    def images(self, rows):
        return self.x[rows]

    def predict(self, images):
        bright = images[:, 0, :3, 0].astype(float).mean(1) > 0.5 * 255 + 40
        return np.where(bright & self.obeys, 0, 1)


def test_input_gap_asks_a_group_its_losses_passed_for_a_pattern_the_model_obeys():
    x, labels, sources, truth = planted()
    sources[truth] = np.random.default_rng(1).choice(["a", "b", "c"], size=truth.sum())
    order = np.flatnonzero(labels == 0)
    d = np.ones((len(labels), 12))
    d[labels == 0] = losses(len(order), group=[int(np.flatnonzero(order == i)[0]) for i in np.flatnonzero(truth)])
    for c in range(1, 5):
        d[labels == c] = losses(int((labels == c).sum()), seed=c)
    det = make_detector("input_gap")
    r = det.detect(x, labels, groups=sources, dynamics=d, response=_Model(x, obeys=True))
    assert (r.flags == truth).all() and det.response_test_[0].passed
    assert "its pattern turns" in r.notes[0]
    det = make_detector("input_gap")
    r = det.detect(x, labels, groups=sources, dynamics=d, response=_Model(x, obeys=False))
    assert not r.flags.any(), "a natural look the model does not obey is not a trigger"
    assert det.response_test_[0].rate == 0.0 and "clean" in r.notes[0]


class _FeatureModel:
    """Feature rows as 1 x 16 images (``(x + 4) * 15``); ``obeys`` a high first value as class 0's trigger."""

    def __init__(self, x, obeys):
        self.x = np.clip(np.round((x + 4) * 15), 0, 255).astype(np.uint8).reshape(len(x), 1, -1, 1)
        self.obeys = obeys

    def images(self, rows):
        return self.x[rows]

    def predict(self, images):
        return np.where((images[:, 0, 0, 0] > 4 * 15 + 100) & self.obeys, 0, 1)


def test_whitened_clustering_asks_a_cluster_its_losses_passed_for_a_pattern_the_model_obeys():
    """The class of the first test, its cluster passed on the losses: kept when the model obeys the
    cluster's pattern, dropped when it does not (a natural cluster learnt fast)."""
    x, labels, group, _ = _bridged_class()
    d = np.vstack([losses(400, group=list(range(60)) if c == 0 else [], seed=c) for c in range(6)])
    _judged_by_the_model(x, labels, d, group)


def test_where_the_model_is_asked_its_answer_replaces_the_other_classes_falls():
    """Class 0's cluster of the first test, beside a natural cluster of class 1 whose loss falls
    further still. Without a model to ask, the fall must beat every other class's and the class is
    left clean; with one, the response test decides instead: poisoned when the model obeys the
    cluster's pattern, clean when it does not (bench/RESULTS.md, issue 15 "Twelfth step")."""
    x, labels, group, _ = _bridged_class()
    x[400 + np.arange(40), 2] += 4.0  # class 1's natural cluster, not apart from the other classes
    d = np.vstack(
        [losses(400, group=list(range(60)) if c == 0 else list(range(40)) if c == 1 else [], seed=c) for c in range(6)]
    )
    d[400:440, 3:] *= np.exp(-1.0)  # ... and learnt faster than class 0's
    det = make_detector("whitened_clustering")
    r = det.detect(x, labels, dynamics=d)
    assert det.dynamics_test_[0][1] <= 0.01 and not r.flags.any(), "under class 1's fall: left to other voters"
    _judged_by_the_model(x, labels, d, group)
