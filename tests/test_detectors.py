"""Detectors on planted NumPy data: each algorithm pinned to its paper, exact flags, one API."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from sanitize.detect import (
    REGISTRY,
    ActivationClustering,
    Detector,
    DetectorResult,
    KNNLabelDisagreement,
    SpectralSignature,
    Spectre,
    WhitenedClustering,
    combine,
    make_detector,
    run_detectors,
)
from sanitize.detect._stats import valley_ratio
from sanitize.detect.input_gap import InputGap
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.errors import DetectionError, InputError

# --- planted data ----------------------------------------------------------------------------


def gaussian_classes(
    n_classes: int = 10, n: int = 300, d: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Classes with different means and one shared covariance that barely varies along the last axis.

    Returns features (n_classes * n, d), labels, the class means (n_classes, d) and the per-axis sd (d,).
    """
    rng = np.random.default_rng(seed)
    sd = np.r_[np.ones(d - 1), 0.05]
    means = rng.normal(scale=4.0, size=(n_classes, d))
    means[:, -1] = 0.0
    x = np.concatenate([means[c] + rng.normal(size=(n, d)) * sd for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n)
    return x, y, means, sd


def with_poisons(
    x: np.ndarray, y: np.ndarray, poisons: np.ndarray, target: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append ``poisons`` labelled ``target``; return features, labels and the ground-truth mask."""
    xp = np.concatenate([x, poisons])
    yp = np.concatenate([y, np.full(len(poisons), target)])
    truth = np.r_[np.zeros(len(x), bool), np.ones(len(poisons), bool)]
    return xp, yp, truth


def dirty_label_poisons(
    means: np.ndarray, sd: np.ndarray, n: int = 60, trigger: float = 2.0, seed: int = 1
) -> np.ndarray:
    """BadNets-like poisons: samples of the other classes, shifted along the axis clean classes barely
    vary in (the trigger), to be labelled class 0."""
    rng = np.random.default_rng(seed)
    sources = rng.integers(1, len(means), size=n)
    p = means[sources] + rng.normal(size=(n, len(sd))) * sd
    p[:, -1] += trigger
    return p


def tight_poisons(means: np.ndarray, n: int = 60, trigger: float = 3.0, seed: int = 1) -> np.ndarray:
    """A tight cluster near class 0's mean, shifted along the axis clean classes barely vary in."""
    rng = np.random.default_rng(seed)
    p = means[0] + rng.normal(scale=0.05, size=(n, means.shape[1]))
    p[:, -1] = trigger
    return p


def two_blob_class(n_big: int = 400, n_small: int = 100, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One class: a big standard Gaussian blob and a small blob 12 sd away along the first axis."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(n_big, d))
    small = rng.normal(size=(n_small, d))
    small[:, 0] += 12.0
    return np.concatenate([big, small]), np.r_[np.zeros(n_big, bool), np.ones(n_small, bool)]


# --- SpectralSignature (Tran, Li and Madry 2018) -----------------------------------------------


def test_spectral_scores_are_squared_projections_on_the_top_right_singular_vector() -> None:
    rng = np.random.default_rng(3)
    # Anisotropic classes so the top singular vector is well defined.
    x = rng.normal(size=(150, 6)) * np.array([3.0, 1.0, 0.5, 0.5, 0.2, 0.1])
    y = np.repeat([0, 1, 2], 50)
    x[y == 1] += 5.0

    det = SpectralSignature().fit(x, y)
    scores = det.score_samples(x, y)

    for c in (0, 1, 2):
        xc = x[y == c]
        centred = xc - xc.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        v = vt[0]
        np.testing.assert_allclose(scores[y == c], (centred @ v) ** 2, rtol=1e-9, atol=1e-12)
        # The learned direction is that vector up to sign.
        assert abs(float(det.directions_[c] @ v)) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(det.means_[c], xc.mean(axis=0))


def test_spectral_ranks_outliers_planted_along_one_direction_first() -> None:
    rng = np.random.default_rng(4)
    clean = rng.normal(size=(200, 10))
    planted = rng.normal(size=(10, 10)) * 0.3
    planted[:, 3] += 8.0
    x = np.concatenate([clean, planted])
    y = np.zeros(len(x), dtype=np.int64)

    result = SpectralSignature().detect(x, y)

    top = set(np.argsort(-result.scores)[:10].tolist())
    assert top == set(range(200, 210))
    # Without a contamination: a robust z-score of 3.5 on |projection|, squared back.
    proj = np.sqrt(result.scores)
    med = np.median(proj)
    mad = 1.4826 * np.median(np.abs(proj - med))
    assert result.thresholds[0] == pytest.approx((med + 3.5 * mad) ** 2)
    assert result.flags[200:].all()
    # A half-normal |projection| crosses that line for under 1 % of a clean class.
    assert int(result.flags[:200].sum()) <= 4


@pytest.mark.parametrize("sizes", [(57, 101, 230), (33, 64, 171)])
def test_spectral_with_contamination_flags_ceil_of_one_and_a_half_times_the_rate_per_class(
    sizes: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(sum(sizes), 8))
    y = np.repeat(np.arange(len(sizes)), sizes)

    result = SpectralSignature(contamination=0.1).detect(x, y)

    for c, n_c in enumerate(sizes):
        expected = math.ceil(Fraction(3, 2) * Fraction(1, 10) * n_c)
        in_class = y == c
        assert int(result.flags[in_class].sum()) == expected
        # The flagged ones are the class's top scores.
        top = np.flatnonzero(in_class)[np.argsort(-result.scores[in_class])[:expected]]
        assert set(np.flatnonzero(result.flags & in_class)) == set(top)
        assert result.estimated_rate[c] == pytest.approx(expected / n_c)


def test_spectral_budget_is_exact_when_the_class_size_is_a_multiple_of_the_rate() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 8))
    y = np.repeat([0, 1], 100)

    result = SpectralSignature(contamination=0.1).detect(x, y)

    assert int(result.flags[y == 0].sum()) == 15
    assert int(result.flags[y == 1].sum()) == 15


# --- ActivationClustering (Chen et al. 2018) ---------------------------------------------------


def test_activation_clustering_flags_exactly_the_small_far_blob() -> None:
    x0, small = two_blob_class()
    rng = np.random.default_rng(7)
    x1 = rng.normal(size=(300, 16)) + 20.0  # a clean class beside it
    x = np.concatenate([x0, x1])
    y = np.r_[np.zeros(len(x0), np.int64), np.ones(len(x1), np.int64)]
    truth = np.r_[small, np.zeros(len(x1), bool)]

    det = ActivationClustering()
    result = det.detect(x, y)

    np.testing.assert_array_equal(result.flags, truth)
    assert det.small_share_[0] == pytest.approx(0.2)
    assert det.silhouette_[0] >= det.silhouette_threshold
    assert result.thresholds[1] == np.inf
    assert result.estimated_rate == {0: pytest.approx(0.2), 1: 0.0}
    # Higher = more suspicious: every small-blob sample outscores every big-blob sample.
    assert result.scores[truth].min() > result.scores[~truth & (y == 0)].max()


def test_activation_clustering_flags_nothing_in_single_gaussian_classes() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(size=(400, 16)), rng.normal(size=(400, 16)) + 10.0])
    y = np.repeat([0, 1], 400)

    det = ActivationClustering()
    result = det.detect(x, y)

    assert not result.flags.any()
    assert result.thresholds == {0: np.inf, 1: np.inf}
    assert all(s < det.silhouette_threshold for s in det.silhouette_.values())


def test_silhouette_of_two_clusters_matches_scikit_learn() -> None:
    from sklearn.metrics import silhouette_score

    from sanitize.detect.clustering import _silhouette_two

    rng = np.random.default_rng(4)
    z = np.concatenate([rng.normal(size=(70, 5)), rng.normal(size=(30, 5)) + 2.0])
    assign = np.r_[np.zeros(70, int), np.ones(30, int)]
    rng.shuffle(assign[:80])  # a split that is not the true one, so the value is not near 1
    assert _silhouette_two(z, assign) == pytest.approx(silhouette_score(z, assign), abs=1e-5)


def test_two_means_finds_the_same_split_as_scikit_learn() -> None:
    from sklearn.cluster import KMeans

    from sanitize.detect.clustering import _two_means

    z, truth = two_blob_class(n_big=300, n_small=60, d=10, seed=2)
    assign, centres = _two_means(z, np.random.default_rng(0), n_init=3)
    reference = KMeans(n_clusters=2, n_init=3, random_state=0).fit(z)
    same = (assign == reference.labels_).all() or (assign != reference.labels_).all()
    assert same
    assert ((assign == 1) == truth).all() or ((assign == 0) == truth).all()
    np.testing.assert_allclose(np.sort(centres[:, 0]), np.sort(reference.cluster_centers_[:, 0]), atol=1e-9)


# --- SPECTRE (Hayase et al. 2021) ----------------------------------------------------------------


def test_spectre_flags_a_poison_group_behind_a_gap_without_the_rate() -> None:
    # A fifth of class 0 is poisons shifted 8 sd along one axis: robust whitening keeps them out of
    # the clean estimate, QUE scores them far above the class, and the gap in the log-scores parts them.
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=(400, 12)) + 30.0 * c for c in range(5)])
    y = np.repeat(np.arange(5), 400)
    poisons = rng.normal(size=(100, 12))
    poisons[:, 3] += 8.0
    xp, yp, truth = with_poisons(x, y, poisons)

    det = Spectre(n_components=8)
    result = det.detect(xp, yp)

    assert roc_auc_score(truth, result.scores) > 0.99
    assert result.flags[truth].mean() >= 0.98
    assert int(result.flags[~truth].sum()) <= 2
    assert result.notes[0].startswith("poisoned")
    assert all(result.thresholds[c] == np.inf for c in range(1, 5))


def test_deterministic_mcd_ignores_a_group_of_outliers() -> None:
    from sanitize.detect._stats import deterministic_mcd

    rng = np.random.default_rng(13)
    inliers = rng.normal(size=(700, 6))
    # 30 % spread as much as the inliers, 8.5 sd away. (A group much *tighter* than the inliers can win
    # MCD's smallest-determinant objective with some inliers: the estimator's own limit, not this one's.)
    outliers = rng.normal(size=(300, 6)) + np.r_[6.0, 6.0, 0, 0, 0, 0]
    mu, cov = deterministic_mcd(np.concatenate([inliers, outliers]), support_fraction=0.55)

    np.testing.assert_allclose(mu, 0.0, atol=0.15)
    np.testing.assert_allclose(cov, np.eye(6), atol=0.25)


def test_spectre_flags_nothing_in_clean_classes() -> None:
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.normal(size=(400, 12)) + 30.0 * c for c in range(4)])
    y = np.repeat(np.arange(4), 400)

    result = Spectre(n_components=8).detect(x, y)

    assert not result.flags.any()
    assert all(note.startswith("clean") for note in result.notes.values())


# --- KNNLabelDisagreement (Peri et al. 2020) ---------------------------------------------------


def test_knn_flags_a_mislabelled_point_inside_another_class() -> None:
    rng = np.random.default_rng(9)
    centres = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    x = np.concatenate([c + rng.normal(size=(60, 3)) for c in centres] + [centres[1][None, :] + 0.1])
    y = np.r_[np.repeat([0, 1, 2], 60), 0]  # the last point sits in class 1's blob but says 0
    planted = len(x) - 1

    result = KNNLabelDisagreement(k=10).detect(x, y)

    assert np.flatnonzero(result.flags).tolist() == [planted]
    assert result.scores[planted] == 1.0
    assert ((result.scores >= 0.0) & (result.scores <= 1.0)).all()
    # Its neighbours in class 1 see one disagreeing label among ten at most.
    assert result.scores[y == 1].max() <= 0.1
    assert result.thresholds[0] == pytest.approx(0.6)


def test_the_torch_knn_search_finds_the_same_neighbours_as_faiss() -> None:
    # The search a CUDA torch runs beside the faiss-cpu wheel; on the CPU here, the same arithmetic.
    import faiss

    from sanitize.detect.knn import _torch_knn

    x = np.random.default_rng(3).normal(size=(3000, 32)).astype(np.float32)
    index = faiss.IndexFlatL2(32)
    index.add(x)
    want_d, want_i = index.search(x, 11)

    got_d, got_i = _torch_knn(x, 11, device="cpu")

    assert (got_i == want_i).mean() > 0.999  # ties may come back in another order
    np.testing.assert_allclose(got_d, want_d, rtol=1e-4, atol=1e-3)
    assert (got_i[:, 0] == np.arange(len(x))).all()  # each row is its own nearest


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    # Rows around 50 centres, as features of a trained model sit around their classes.
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(50, dim))
    return (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_the_approximate_knn_search_keeps_almost_all_exact_neighbours() -> None:
    from sanitize.detect.knn import knn_search

    x = _clustered(6000, 32, seed=4)
    _, exact = knn_search(x, 15, use_gpu=False, approximate=False)
    dist, approx = knn_search(x, 15, use_gpu=False, approximate=True)

    assert approx.shape == exact.shape == (6000, 15) and dist.shape == (6000, 15)
    assert (approx != np.arange(6000)[:, None]).all()  # a row is never its own neighbour
    assert (approx >= 0).all()
    overlap = np.mean([np.intersect1d(a, e).size / 15 for a, e in zip(approx, exact, strict=True)])
    assert 0.97 < overlap < 1.0  # close to exact, and really a different (inverted-file) search
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first


def test_the_knn_search_is_exact_up_to_its_row_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    from sanitize.detect import knn

    x = np.random.default_rng(5).normal(size=(3000, 16)).astype(np.float32)  # no clusters: IVF misses some
    index = faiss.IndexFlatL2(16)
    index.add(x)
    _, want = index.search(x, 11)
    _, got = knn.knn_search(x, 10, use_gpu=False)  # 3,000 rows: under EXACT_ROWS
    assert (got == want[:, 1:]).mean() > 0.999
    # Above the bound the default turns approximate: the same search as approximate=True.
    monkeypatch.setattr(knn, "EXACT_ROWS", 2000)
    _, above = knn.knn_search(x, 10, use_gpu=False)
    _, forced = knn.knn_search(x, 10, use_gpu=False, approximate=True)
    assert (above == forced).all() and (above != got).any()


# --- InputNeighbours (k-NN label disagreement on the inputs) ----------------------------------


def _pixel_classes(
    rng: np.random.Generator, per_class: int = 400, d: int = 40, lookalikes: bool | list[int] = True
) -> tuple[np.ndarray, np.ndarray]:
    """Ten well-separated blobs of "images", with a few natural look-alikes in every class (1 % of
    each, or as many as ``lookalikes`` lists per class)."""
    centres = rng.normal(scale=6.0, size=(10, d))
    x = np.concatenate([c + rng.normal(size=(per_class, d)) for c in centres])
    y = np.repeat(np.arange(10), per_class)
    if isinstance(lookalikes, list):
        # Near copies of images of the other classes (the last half of each), each image its own.
        others = rng.permutation(np.flatnonzero(np.arange(len(y)) % per_class >= per_class // 2))
        taken = 0
        for c, count in enumerate(lookalikes):
            source = [i for i in others[taken:] if y[i] != c][:count]
            taken += len(source) + 20
            x[np.flatnonzero(y == c)[:count]] = x[source] + rng.normal(scale=0.05, size=(count, d))
        return x.astype(np.float32), y
    # 1 % of each class sits among another class's images: clean data's own look-alikes.
    for c in range(10 if lookalikes else 0):
        idx = np.flatnonzero(y == c)[: per_class // 100]
        x[idx] = centres[(c + 1) % 10] + rng.normal(size=(len(idx), d))
    return x.astype(np.float32), y


def test_input_neighbours_finds_relabelled_images_of_other_classes() -> None:
    rng = np.random.default_rng(0)
    x, y = _pixel_classes(rng)
    # Dirty-label poisons: 40 images of classes 1-9, relabelled to 0, each still among its own kind.
    victims = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(1, 9)])
    y = y.copy()
    y[victims] = 0

    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    assert detector.poisoned_[0] and not any(detector.poisoned_[c] for c in range(1, 10))
    assert set(victims) <= set(np.flatnonzero(result.flags))
    assert result.flags.sum() <= 1.5 * len(victims)
    # 40 values per sample are no square image: no trigger to learn, the disagreement rule flags.
    assert detector.trigger_prob_ == {} and result.thresholds[0] == detector.flag_disagreement
    assert "poisoned" in result.notes[0] and "expected from the other classes" in result.notes[0]
    assert detector.p_value_[0] <= detector.false_alarm < min(detector.p_value_[c] for c in range(1, 10))


def test_input_neighbours_judges_a_class_against_how_much_the_others_differ() -> None:
    # Clean classes that differ in how many look-alikes they hold, as the held-out emoji's do
    # (7, 0, 33, 6, 2, 8, 14, 8, 4 of 223): class 2 holds over 4x the median (44 isolated images
    # against 10), which the ratio rule this replaced (4x) called a poisoning. Against the other
    # classes' spread it is not one.
    counts = [12, 1, 120, 11, 4, 14, 25, 14, 7, 9]
    x, y = _pixel_classes(np.random.default_rng(4), lookalikes=counts)

    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    assert detector.isolated_share_[2] >= 4 * detector.median_share_
    assert not any(detector.poisoned_.values()) and not result.flags.any()
    assert detector.false_alarm < detector.p_value_[2] < 1.0
    assert "p 0." in result.notes[2] and result.notes[2].startswith("clean")


def test_input_neighbours_passes_clean_classes_with_their_own_look_alikes() -> None:
    x, y = _pixel_classes(np.random.default_rng(1))

    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    assert not result.flags.any()
    assert all(note.startswith("clean") for note in result.notes.values())


def test_input_neighbours_needs_a_real_excess_not_a_ratio_over_nothing() -> None:
    # Only class 5 has isolated images, three of them: the other classes hold none, so their spread
    # is 0 and the count alone is unlikely, but three odd images are not a poisoning (min_excess).
    rng = np.random.default_rng(2)
    x, y = _pixel_classes(rng, per_class=200, lookalikes=False)
    lone = np.flatnonzero(y == 5)[:3]
    x[lone] = x[np.flatnonzero(y == 7)[:3]] + 0.01

    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    assert detector.median_share_ == 0.0 and 0 < detector.isolated_share_[5] <= 3 / 200
    assert not detector.poisoned_[5] and not result.flags.any()
    assert "expected from the other classes" in result.notes[5] and result.notes[5].startswith("clean")


def _stamped_images(
    rng: np.random.Generator, side: int = 12, n_poisons: int = 60, n_lookalikes: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ten classes of small images, each made of 40 prototypes; 60 images of classes 2-9 (one per
    prototype) stamped with a faint corner patch and relabelled 0; 40 clean class-0 images halfway to
    class 1 (natural look-alikes, with 100 more of them in class 1)."""
    d = side * side
    templates = rng.uniform(0.2, 0.8, size=(10, d))
    protos = templates[:, None, :] + rng.normal(scale=0.1, size=(10, 40, d))
    x = (protos[:, :, None, :] + rng.normal(scale=0.05, size=(10, 40, 10, d))).reshape(-1, d)
    y = np.repeat(np.arange(10), 400)
    lookalikes = np.flatnonzero(y == 0)[:n_lookalikes]
    mixed = np.concatenate([lookalikes, np.flatnonzero(y == 1)[:100]])
    x[mixed] = 0.5 * (templates[0] + templates[1]) + rng.normal(scale=0.1, size=(len(mixed), d))
    poisons = np.array([np.flatnonzero(y == 2 + i % 8)[41 + 10 * (i // 8)] for i in range(n_poisons)], dtype=int)
    y[poisons] = 0
    patch = np.zeros((side, side))
    patch[:3, :3] = 0.12
    x[poisons] += patch.ravel()
    return np.clip(x, 0, 1).astype(np.float32), y, poisons, lookalikes


def test_input_neighbours_learns_the_trigger_and_releases_natural_look_alikes() -> None:
    x, y, poisons, lookalikes = _stamped_images(np.random.default_rng(0))

    plain = InputNeighbours(n_components=None, learn_trigger=False).detect(x, y)
    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    # The plain rule flags the class's look-alikes whose neighbours are mostly class 1; the trigger
    # models, trained on the clearest poisons, see no patch on them.
    assert plain.flags[lookalikes].sum() >= 3
    assert detector.trigger_seeds_[0] >= 20 and set(detector.trigger_prob_) == {0}
    assert result.flags[poisons].all()
    assert not result.flags[lookalikes].any()
    assert result.thresholds[0] == 1.5 and "learnt its trigger" in result.notes[0]
    assert result.scores[poisons].min() >= 1.5 > result.scores[lookalikes].max()
    assert detector.holdout_p_[0] <= detector.trigger_false_alarm  # learnt on half the seeds, it finds the rest


def test_input_neighbours_finds_no_trigger_where_the_isolated_images_share_none() -> None:
    # No poison, but a class whose own images vary far more than the others' (as the held-out emoji's
    # class 2): 22 of its images have no neighbour of their class, where the tight other classes hold
    # none, and the count test calls it poisoned. What a model learns on half of them (class 0's
    # noisy look) does not put the other half above class 0's ordinary images: no trigger to learn.
    rng = np.random.default_rng(0)
    x, y, _, _ = _stamped_images(rng, n_poisons=0, n_lookalikes=0)
    templates = x.reshape(10, 400, -1).mean(axis=1)
    x[y == 0] = np.clip(templates[0] + rng.normal(scale=0.3, size=((y == 0).sum(), x.shape[1])), 0, 1)

    plain = InputNeighbours(n_components=None, learn_trigger=False).fit(x, y)
    detector = InputNeighbours(n_components=None)
    result = detector.detect(x, y)

    assert plain.poisoned_[0] and plain.isolated_share_[0] >= 0.04
    assert detector.holdout_p_[0] > 0.5 and not detector.poisoned_[0]
    assert detector.trigger_prob_ == {} and not result.flags.any()
    assert result.notes[0].startswith("clean") and "scores the other half above its ordinary images" in result.notes[0]


class _JudgesClassZero(Detector):
    """A stand-in voter that judges class 0 poisoned and flags nothing."""

    name = "judges_zero"

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        pass

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.zeros(len(labels))

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        return (1.0, "poisoned") if label == 0 else (np.inf, "clean")


def test_fallback_voters_run_last_and_learn_no_trigger_where_a_voter_found_the_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y, _, _ = _stamped_images(np.random.default_rng(0))
    monkeypatch.setitem(REGISTRY, "judges_zero", _JudgesClassZero)
    reads = []

    def inputs() -> np.ndarray:
        reads.append(1)
        return x

    names = ["input_neighbours", "judges_zero", "input_gap"]
    results, seconds = run_detectors(
        names, x, y, inputs, voters=("judges_zero", "input_gap"), fallback=("input_neighbours",)
    )

    assert list(results) == names and set(seconds) == set(names)
    assert len(reads) == 1  # the inputs are read once for both input-space detectors
    neighbours = results["input_neighbours"]
    assert neighbours.params["known_poisoned"] == (0,)
    assert "learnt its trigger" not in neighbours.notes[0]  # class 0 was the voter's: nothing learnt


def test_a_crashing_detector_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class Crashes(_JudgesClassZero):
        def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
            raise ZeroDivisionError("boom")

    monkeypatch.setitem(REGISTRY, "judges_zero", Crashes)
    x, y = _pixel_classes(np.random.default_rng(0))
    with pytest.raises(DetectionError, match="detector judges_zero failed: boom"):
        run_detectors(["judges_zero"], x, y, lambda: x, voters=("judges_zero",))


def test_input_neighbours_projects_wide_inputs_before_the_search() -> None:
    rng = np.random.default_rng(3)
    x, y = _pixel_classes(rng, d=200)
    victims = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(2, 10)])
    y = y.copy()
    y[victims] = 1

    result = InputNeighbours(n_components=16).detect(x, y)

    assert set(victims) <= set(np.flatnonzero(result.flags))
    assert set(np.unique(y[result.flags])) == {1}


# --- WhitenedClustering (after SCAn, Tang et al. 2021) -----------------------------------------


def test_whitened_clustering_finds_dirty_label_poisons_in_the_target_class() -> None:
    x, y, means, sd = gaussian_classes()
    xp, yp, truth = with_poisons(x, y, dirty_label_poisons(means, sd))

    det = WhitenedClustering()
    result = det.detect(xp, yp)

    assert result.flags[truth].all()  # recall 1.0
    assert int(result.flags[~truth].sum()) <= 3
    assert {c for c, poisoned in det.poisoned_.items() if poisoned} == {0}
    assert all(result.thresholds[c] == np.inf for c in range(1, 10))
    assert roc_auc_score(truth, result.scores) > 0.99


def test_whitened_clustering_flags_nothing_in_clean_data() -> None:
    x, y, _, _ = gaussian_classes()

    det = WhitenedClustering()
    result = det.detect(x, y)

    assert not any(det.poisoned_.values())
    assert int(result.flags.sum()) == 0
    assert all(t == np.inf for t in result.thresholds.values())
    assert all(r == 0.0 for r in result.estimated_rate.values())


def test_whitened_clustering_finds_a_tight_poison_cluster() -> None:
    x, y, means, _ = gaussian_classes()
    xp, yp, truth = with_poisons(x, y, tight_poisons(means))

    result = WhitenedClustering().detect(xp, yp)

    assert result.flags[truth].all()
    assert int(result.flags[~truth].sum()) <= 3
    assert roc_auc_score(truth, result.scores) > 0.99


def test_whitened_clustering_finds_poisons_that_spread_like_the_clean_class_behind_a_gap() -> None:
    # Blend-like: the trigger moves every poison the same way, so the poison cluster spreads as much as
    # the clean one (no spread-ratio evidence); what tells them apart is the empty space between.
    x, y, means, sd = gaussian_classes()
    rng = np.random.default_rng(5)
    poisons = means[0] + rng.normal(size=(90, len(sd))) * sd
    poisons[:, -1] += 1.0  # 20 clean sd along the axis clean classes barely vary in
    xp, yp, truth = with_poisons(x, y, poisons)

    det = WhitenedClustering()
    result = det.detect(xp, yp)

    assert abs(math.log(det.spread_ratio_[0])) < math.log(det.min_spread_ratio)
    assert det.valley_[0] <= det.max_valley
    assert result.flags[truth].all()
    assert int(result.flags[~truth].sum()) <= 3
    assert "valley" in result.notes[0]


def test_whitened_clustering_asks_a_tighter_suspect_part_for_a_valley() -> None:
    # A clean class's tight sub-population (sandals in one run: 2.6x tighter, valley 0.52) is not a
    # second population on its spread alone; a wider suspect part (poisons from many classes) is.
    det = WhitenedClustering()
    assert det._two_populations(spread_ratio=3.0, valley=0.6)
    assert not det._two_populations(spread_ratio=1 / 2.6, valley=0.52)
    assert det._two_populations(spread_ratio=1 / 2.6, valley=0.05)
    assert not det._two_populations(spread_ratio=1.2, valley=0.3)


def test_whitened_clustering_finds_a_small_poison_group_in_a_class_of_two_halves() -> None:
    # The target class has two natural halves; 2-means cuts it along them, and only a third cluster
    # isolates the poisons (as with Blend at 1 % on Fashion-MNIST).
    x, y, means, sd = gaussian_classes()
    target = np.flatnonzero(y == 0)
    x[target, 1] += np.where(target % 2 == 0, -2.5, 2.5)
    rng = np.random.default_rng(7)
    poisons = means[0] + rng.normal(size=(30, len(sd))) * sd
    poisons[:, 1] += rng.choice([-2.5, 2.5], size=30)
    poisons[:, -1] += 0.4  # 8 clean sd: splitting the halves lowers 2-means' cost more than this does
    xp, yp, truth = with_poisons(x, y, poisons)

    only_two = WhitenedClustering(max_clusters=2).detect(xp, yp)
    det = WhitenedClustering()
    result = det.detect(xp, yp)

    assert not only_two.flags[truth].any()
    assert result.flags[truth].all()
    assert int(result.flags[~truth].sum()) <= 3
    assert {c for c, poisoned in det.poisoned_.items() if poisoned} == {0}


def test_whitened_clustering_finds_a_second_poison_group_in_a_later_round() -> None:
    """Two poison groups in one class, each apart along its own quiet axis: the first round splits
    off the farther one, the second round finds the other among the samples left, the third stops."""
    rng = np.random.default_rng(5)
    x, y, means, sd = gaussian_classes(d=32, seed=0)
    x[:, -2] = rng.normal(scale=0.05, size=len(x))  # a second axis the classes barely vary in
    means[:, -2], sd[-2] = 0.0, 0.05
    groups = []
    for axis, shift, seed in ((-2, 4.0, 3), (-1, 2.0, 2)):
        g = dirty_label_poisons(means, sd, n=60, trigger=0.0, seed=seed)
        g[:, axis] += shift
        groups.append(g)
    xp, yp, truth = with_poisons(x, y, np.concatenate(groups))

    one = WhitenedClustering(max_rounds=1).detect(xp, yp)
    detector = WhitenedClustering()
    rounds = detector.detect(xp, yp)

    assert (one.flags & truth).sum() == 60
    assert (rounds.flags & truth).sum() == 120 and (rounds.flags & ~truth).sum() <= 3
    assert [set(r) for r in detector.rounds_] == [{0}, {0}, set()]
    assert "round 2, on the samples left: poisoned" in rounds.notes[0]
    assert detector.poisoned_[0]  # the fitted attributes are the first round's


def test_whitened_clustering_stops_after_one_round_on_clean_data() -> None:
    x, y, _, _ = gaussian_classes(seed=7)
    detector = WhitenedClustering()
    assert not detector.detect(x, y).flags.any()
    assert detector.rounds_ == [{}]


def test_whitened_clustering_later_rounds_flag_only_classes_found_before() -> None:
    # Round 1 finds class 0's poisons. With them set aside, every other class's yardstick changes; a
    # class that only then looks poisoned (a digits run's clean "1"s did) is noted, not flagged.
    class Scripted(WhitenedClustering):
        calls = 0

        def flag(self, scores, labels):  # type: ignore[no-untyped-def]
            flags, thresholds, notes = super().flag(scores, labels)
            Scripted.calls += 1
            if Scripted.calls == 2:  # round 2: pretend class 1 now looks poisoned
                flags = flags | (labels == 1) & (scores >= np.quantile(scores[labels == 1], 0.8))
                thresholds[1], notes[1] = 0.0, "poisoned: scripted"
            return flags, thresholds, notes

    x, y, means, sd = gaussian_classes()
    xp, yp, truth = with_poisons(x, y, tight_poisons(means))

    det = Scripted()
    result = det.detect(xp, yp)

    assert result.flags[truth].all()
    assert not result.flags[yp == 1].any()
    assert "so it flags nothing" in result.notes[1]
    assert len(det.rounds_) >= 2 and 1 not in det.rounds_[1]


def test_whitened_clustering_ignores_the_valley_of_a_small_class() -> None:
    # 28 + 109 samples (a digits class of "9"s): one sample a bin between the parts read as a valley
    # of 0.085. Below min_valley_samples the valley is no evidence; above it, it counts as before.
    rng = np.random.default_rng(14)
    clean, suspect = rng.normal(size=28), rng.normal(10.0, 1.0, size=109)
    bridge = np.linspace(1.5, 8.5, 6)
    det = WhitenedClustering()
    assert valley_ratio(np.r_[clean, bridge], suspect) <= det.max_valley
    assert det._valley_at(np.r_[clean, bridge], suspect)[0] == 1.0
    big_clean, big_suspect = rng.normal(size=300), rng.normal(10.0, 1.0, size=200)
    ratio, at = det._valley_at(big_clean, big_suspect)
    assert ratio == valley_ratio(big_clean, big_suspect) <= det.max_valley
    assert big_clean.max() < at < big_suspect.min() + 1.0  # the emptiest point is between the two


def test_whitened_clustering_draws_the_border_in_an_empty_valley() -> None:
    # Poisons behind an empty valley: the border is in it, above the fixed 2.5 sd, so the clean
    # samples of the class's own upper tail stay unflagged (Blend 1 % on Fashion-MNIST: 105 of them).
    x, y, means, sd = gaussian_classes()
    rng = np.random.default_rng(5)
    poisons = means[0] + rng.normal(size=(90, len(sd))) * sd
    poisons[:, -1] += 1.0
    xp, yp, truth = with_poisons(x, y, poisons)

    det = WhitenedClustering()
    result = det.detect(xp, yp)

    assert det.poisoned_[0] and result.thresholds[0] > det.flag_z and "(in the valley)" in result.notes[0]
    assert result.flags[truth].all()
    at_flag_z = int(((result.scores >= det.flag_z) & (yp == 0) & ~truth).sum())
    assert int(result.flags[~truth].sum()) <= at_flag_z


def test_valley_ratio_tells_two_populations_from_one_tailing_off() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(size=3000)
    apart = rng.normal(loc=12.0, size=1000)
    tail = rng.exponential(scale=3.0, size=4000)  # one skewed population, cut in two by 2-means
    low, high = tail[tail < 2 * np.median(tail)], tail[tail >= 2 * np.median(tail)]

    assert valley_ratio(clean, apart) < 0.02
    assert valley_ratio(low - np.median(low), high - np.median(low)) > 0.3
    assert valley_ratio(clean, -apart) == 1.0  # the suspect cluster must lie above the clean one


def test_whitened_clustering_contamination_caps_the_flags() -> None:
    x, y, means, sd = gaussian_classes()
    xp, yp, truth = with_poisons(x, y, dirty_label_poisons(means, sd))
    n = len(yp)

    result = WhitenedClustering(contamination=0.005).detect(xp, yp)

    cap = math.ceil(Fraction(3, 2) * Fraction(5, 1000) * n)  # 23 of 3060
    assert int(result.flags.sum()) == cap
    # The cap keeps the highest scores, and they are poisons.
    assert set(np.flatnonzero(result.flags)) == set(np.argsort(-result.scores)[:cap].tolist())
    assert result.flags[~truth].sum() == 0


# --- the common API --------------------------------------------------------------------------


# --- InputGap (pixel space) ----------------------------------------------------------------


def pixel_classes(n_classes: int = 6, n: int = 400, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image-like inputs: classes of smooth random means plus noise, with the first 8 "border pixels"
    always 0 in every class (natural images leave them black)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.2, 0.8, size=(n_classes, d))
    x = np.concatenate([means[c] + rng.normal(scale=0.1, size=(n, d)) for c in range(n_classes)])
    x[:, :8] = 0.0
    return np.clip(x, 0.0, 1.0), np.repeat(np.arange(n_classes), n)


def test_input_gap_flags_exactly_a_clean_label_group_with_a_shared_faint_pattern() -> None:
    x, y = pixel_classes()
    pattern = 0.05 * np.sin(np.arange(x.shape[1]) * 2 * np.pi * 6 / x.shape[1])
    victims = np.flatnonzero(y == 2)[:40]  # SIG-like: target-class images, labels kept
    x[victims] = np.clip(x[victims] + pattern, 0.0, 1.0)
    truth = np.zeros(len(y), bool)
    truth[victims] = True

    detector = InputGap()
    result = detector.detect(x, y)

    np.testing.assert_array_equal(result.flags, truth)
    assert [c for c, p in detector.poisoned_.items() if p] == [2]
    assert roc_auc_score(truth, result.scores) == 1.0
    assert result.notes[2].startswith("poisoned: separation")


def test_input_gap_flags_dirty_label_poisons_that_outnumber_their_class() -> None:
    x, y = pixel_classes(n=200)
    rng = np.random.default_rng(5)
    victims = rng.choice(np.flatnonzero(y != 0), size=260, replace=False)  # more than class 0's 200
    x[victims, :4] = 1.0  # a white patch in the black border
    y = y.copy()
    y[victims] = 0

    result = InputGap().detect(x, y)

    np.testing.assert_array_equal(np.flatnonzero(result.flags), np.sort(victims))


def test_input_gap_flags_nothing_in_clean_data_and_says_why() -> None:
    x, y = pixel_classes(seed=3)
    detector = InputGap()
    result = detector.detect(x, y)
    assert not result.flags.any()
    assert all(note.startswith("clean:") for note in result.notes.values())
    assert all(np.isinf(t) for t in result.thresholds.values())


def test_input_gap_ignores_a_handful_of_odd_images() -> None:
    x, y = pixel_classes()
    x[np.flatnonzero(y == 1)[:5], :4] = 1.0  # five images touch the border: odd, not a poisoning
    assert not InputGap().detect(x, y).flags.any()


def test_input_gap_leaves_a_natural_group_nearer_than_min_separation() -> None:
    """A class made of two real groups (two ways of writing a "1"): a gap, but a modest one."""
    x, y = pixel_classes()
    ones = np.flatnonzero(y == 1)[:60]
    x[ones, 8:24] += 0.3  # brighter in pixels that every class varies in: about 12 sd away

    detector = InputGap()
    assert not detector.detect(x, y).flags.any()
    assert 5 < detector.separation_[1] < 30 and detector.valley_[1] <= 0.1
    assert InputGap(min_separation=5).detect(x, y).flags.sum() == 60


def small_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(90, 5)), np.repeat([0, 1, 2], 30)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_fit_returns_the_detector(name: str) -> None:
    x, y = small_data()
    det = make_detector(name, knn_k=5)
    assert det.fit(x, y) is det
    assert det.fitted_ is True


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_scoring_before_fit_raises_detection_error(name: str) -> None:
    x, y = small_data()
    with pytest.raises(DetectionError, match="not fitted"):
        make_detector(name).score_samples(x, y)


def _detector_classes() -> list[type[Detector]]:
    """Every concrete Detector subclass defined in a module of sanitize.detect, found by importing them
    all (not from the registry, so a detector left out of it is caught)."""
    import sanitize.detect as package

    found: set[type[Detector]] = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Detector) and obj.__module__ == module.__name__ and not inspect.isabstract(obj):
                found.add(obj)
    return sorted(found, key=lambda cls: cls.__name__)


DETECTOR_CLASSES = _detector_classes()


def test_every_detector_class_is_registered_once_under_its_own_name() -> None:
    assert len(DETECTOR_CLASSES) >= 7
    assert set(REGISTRY.values()) == set(DETECTOR_CLASSES)
    names = [cls.name for cls in DETECTOR_CLASSES]
    assert len(set(names)) == len(names), f"two detectors share a name: {sorted(names)}"
    assert all(REGISTRY[cls.name] is cls for cls in DETECTOR_CLASSES)


@pytest.mark.parametrize("cls", DETECTOR_CLASSES, ids=lambda cls: cls.name)
def test_every_detector_follows_the_estimator_contract(cls: type[Detector]) -> None:
    det = make_detector(cls.name, knn_k=5)
    assert type(det) is cls
    params = det.get_params()
    # Every __init__ parameter is a stored hyper-parameter with declared constraints, and they round-trip.
    assert list(params) == [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert set(cls._parameter_constraints) == set(params)
    assert set(cls.run_settings.values()) <= set(params)
    assert cls(**params).get_params() == params
    x, y = small_data()
    with pytest.raises(DetectionError, match="not fitted"):
        det.score_samples(x, y)
    with pytest.raises(DetectionError, match="not fitted"):
        det.flag(np.zeros(len(y)), y)
    assert det.fit(x, y) is det
    assert det.get_params() == params  # fitting changes no hyper-parameter
    # What fit learns ends in "_": the training scores, and each class's threshold and note.
    assert det.training_scores_.shape == y.shape and det.training_scores_.dtype == np.float64
    assert set(det.thresholds_) == set(det.notes_) == {0, 1, 2}
    np.testing.assert_array_equal(det.score_samples(x, y), det.training_scores_)
    result = make_detector(cls.name, knn_k=5).detect(x, y)
    np.testing.assert_array_equal(result.scores, det.training_scores_)
    assert result.thresholds == det.thresholds_ and result.notes == det.notes_
    # Every hyper-parameter is checked when fitting (not when constructing), and the error names the
    # class, the parameter and the value.
    for name in params:
        bad = cls(**{**params, name: "nonsense"})
        with pytest.raises(
            ValueError, match=rf"^The '{name}' parameter of {cls.__name__} must be .+\. Got 'nonsense' instead\.$"
        ):
            bad.fit(x, y)


@pytest.mark.parametrize(
    ("detector", "message"),
    [
        # One cluster is no split: this detector would never find anything.
        (
            WhitenedClustering(max_clusters=1),
            r"'max_clusters' parameter of WhitenedClustering must be an int in the range \[2, inf\)\. Got 1 instead",
        ),
        (WhitenedClustering(max_rounds=0), r"'max_rounds' .* Got 0 instead"),
        (
            SpectralSignature(contamination=0.6),
            r"'contamination' parameter of SpectralSignature must be None or a float in the range "
            r"\(0\.0, 0\.5\]\. Got 0\.6 instead",
        ),
        (SpectralSignature(contamination=0.0), r"'contamination' .* Got 0\.0 instead"),
        (
            Spectre(random_state=-1),
            r"'random_state' parameter of Spectre must be an int in the range \[0, 4294967295\]",
        ),
        (KNNLabelDisagreement(k=True), r"'k' parameter of KNNLabelDisagreement must be an int .* Got True instead"),
        (KNNLabelDisagreement(k=2.0), r"'k' .* Got 2\.0 instead"),
        (ActivationClustering(silhouette_threshold=float("nan")), r"'silhouette_threshold' .* Got nan instead"),
        (ActivationClustering(max_poison_share=0.6), r"'max_poison_share' .* \(0\.0, 0\.5\]"),
        (InputGap(floor=0.0), r"'floor' parameter of InputGap must be a float in the range \(0\.0, 1\.0\]"),
        (InputGap(min_group_share=0.8, max_group_share=0.5), r"'min_group_share' .* must not exceed max_group_share"),
        (InputNeighbours(device="gpu"), r"'device' .* a str matching .* Got 'gpu' instead"),
        (
            InputNeighbours(learn_trigger=1),
            r"'learn_trigger' parameter of InputNeighbours must be a bool\. Got 1 instead",
        ),
        (InputNeighbours(known_poisoned=[0]), r"'known_poisoned' .* a tuple .* Got \[0\] instead"),
        (InputNeighbours(min_disagreement=0.2), r"clean_disagreement < min_disagreement <= seed_disagreement"),
        (InputNeighbours(n_components=64, fit_sample=10), r"'fit_sample' .* at least n_components \(64\)"),
        (
            Spectre(robust_sample=50),
            r"'robust_sample' parameter of Spectre must be at least 2 \* n_components \+ 3 = 67",
        ),
    ],
)
def test_a_bad_hyper_parameter_is_refused_when_fitting(detector: Detector, message: str) -> None:
    x, y = small_data()
    with pytest.raises(ValueError, match=message):
        detector.fit(x, y)
    with pytest.raises(ValueError, match=message):
        detector.detect(x, y)
    assert not getattr(detector, "fitted_", False)


def test_numbers_of_any_kind_and_none_where_allowed_are_accepted() -> None:
    x, y = small_data()
    KNNLabelDisagreement(k=np.int64(5), contamination=np.float64(0.1), random_state=np.int32(3)).fit(x, y)
    InputGap(min_separation=5).fit(x, y)  # an int for a float
    InputNeighbours(n_components=None, known_poisoned=(np.int64(1), 2), random_state=np.int64(2)).fit(x, y)


def test_make_detector_passes_each_shared_setting_only_to_detectors_that_take_it() -> None:
    # knn_k is k-NN's k (its run_settings), not input neighbours' own k; known_poisoned goes to the
    # detector with that parameter and is dropped for the others.
    assert make_detector("knn", knn_k=7).k == 7
    assert make_detector("input_neighbours", knn_k=7, known_poisoned=(3,)).get_params()["k"] == InputNeighbours().k
    assert make_detector("input_neighbours", known_poisoned=(3,)).known_poisoned == (3,)
    spectral = make_detector("spectral", contamination=0.1, random_state=4, knn_k=7, known_poisoned=(3,))
    assert spectral.get_params() == {"contamination": 0.1, "z": 3.5, "random_state": 4}


def test_thresholds_are_learnt_when_fitting_and_flag_applies_them() -> None:
    x, y = small_data()
    for det in (SpectralSignature(), SpectralSignature(contamination=0.1)):
        det.fit(x, y)
        learnt = dict(det.thresholds_)
        flags, thresholds, notes = det.flag(det.training_scores_, y)
        np.testing.assert_array_equal(flags, det.training_scores_ >= np.array([learnt[c] for c in y]))
        # Other scores are judged by the same thresholds, not by new ones estimated from them.
        high = det.flag(det.training_scores_ + 1e6, y)
        assert high[0].all() and high[1] == learnt == thresholds and notes == det.notes_
    with pytest.raises(DetectionError, match="was not fitted on class 5"):
        det.flag(np.zeros(3), np.array([0, 1, 5]))


def test_whitened_clustering_learns_its_thresholds_and_caps_the_flags_it_is_given() -> None:
    x, y, means, sd = gaussian_classes()
    xp, yp, _ = with_poisons(x, y, dirty_label_poisons(means, sd))
    det = WhitenedClustering(contamination=0.005)
    result = det.detect(xp, yp)
    # The learnt threshold is the class's test (flag_z, or its empty valley); the cap of 23 flags
    # raised the result's.
    assert det.flag_z <= det.thresholds_[0] == det.cut_[0] < result.thresholds[0]
    assert "capped at 23 flags" in result.notes[0] and "capped" not in det.notes_[0]


@pytest.mark.parametrize(
    "detector", [KNNLabelDisagreement(k=5), InputNeighbours(n_components=None)], ids=["knn", "input_neighbours"]
)
def test_neighbour_detectors_score_only_the_samples_they_were_fitted_on(detector: Detector) -> None:
    x, y = small_data()
    detector.fit(x, y)
    # The fitted samples' scores, like LocalOutlierFactor's negative_outlier_factor_; the same data
    # in another array scores the same.
    np.testing.assert_array_equal(detector.score_samples(x.copy(), y.copy()), detector.training_scores_)
    np.testing.assert_array_equal(detector.training_scores_, detector.disagreement_)
    for other_x, other_y in ((x[:60], y[:60]), (x + 1.0, y), (x, np.roll(y, 1))):
        with pytest.raises(DetectionError, match="scores only the samples it was fitted on"):
            detector.score_samples(other_x, other_y)


def test_hyper_parameters_are_recorded_with_the_result() -> None:
    x, y = small_data()
    det = make_detector("knn", contamination=0.2, random_state=5, knn_k=7)

    assert det.get_params() == {"contamination": 0.2, "k": 7, "random_state": 5}
    assert det.detect(x, y).params == {"contamination": 0.2, "k": 7, "random_state": 5}
    assert WhitenedClustering(min_separation=3.0).get_params()["min_separation"] == 3.0


def test_make_detector_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown detector 'spectrall'"):
        make_detector("spectrall")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_nan_features_are_an_input_error(name: str) -> None:
    x, y = small_data()
    x[[4, 17], 2] = np.nan
    with pytest.raises(InputError, match=r"2 samples are NaN or infinite \(first rows: \[4, 17\]\)"):
        make_detector(name).detect(x, y)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_labels_of_another_length_are_an_input_error(name: str) -> None:
    x, y = small_data()
    with pytest.raises(InputError, match=r"90 feature rows but labels of shape \(89,\)"):
        make_detector(name).detect(x, y[:-1])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_class_with_one_sample_is_an_input_error(name: str) -> None:
    x, y = small_data()
    y = y.copy()
    y[0] = 7
    with pytest.raises(InputError, match=r"class\(es\) \[7\] have fewer than 2 samples"):
        make_detector(name).detect(x, y)


def test_non_finite_scores_are_a_detection_error() -> None:
    class Broken(Detector):
        name = "broken"

        def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
            pass

        def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
            return np.full(len(labels), np.nan)

    x, y = small_data()
    with pytest.raises(DetectionError, match="broken produced invalid scores"):
        Broken().detect(x, y)


def test_result_table_is_keyed_by_sample_id() -> None:
    x, y = small_data()
    ids = [f"s{i:03d}" for i in range(len(y))]

    result = SpectralSignature(contamination=0.1).detect(x, y)
    table = result.to_table(ids, y)

    assert table.column_names == [
        "sample_id",
        "spectral_score",
        "spectral_flag",
        "spectral_threshold",
        "spectral_rank",
    ]
    assert table.column("sample_id").to_pylist() == ids
    np.testing.assert_array_equal(table.column("spectral_score").to_numpy(), result.scores)
    np.testing.assert_array_equal(table.column("spectral_flag").to_numpy(zero_copy_only=False), result.flags)
    thresholds = table.column("spectral_threshold").to_numpy()
    np.testing.assert_array_equal(thresholds, [result.thresholds[int(c)] for c in y])
    ranks = table.column("spectral_rank").to_numpy()
    for c in (0, 1, 2):
        in_class = y == c
        assert sorted(ranks[in_class].tolist()) == list(range(1, 31))
        assert ranks[in_class][np.argmax(result.scores[in_class])] == 1
    # The budget: ceil(1.5 * 0.1 * 30) = 5 per class, the 5 best ranks.
    assert set(ranks[result.flags].tolist()) == {1, 2, 3, 4, 5}


def _planted_for_permutation() -> tuple[np.ndarray, np.ndarray]:
    x, y, means, sd = gaussian_classes(n_classes=6, n=120, d=12, seed=11)
    xp, yp, _ = with_poisons(x, y, dirty_label_poisons(means, sd, n=25, seed=12))
    return xp, yp


PERMUTED_X, PERMUTED_Y = _planted_for_permutation()


@pytest.mark.parametrize(
    "detector",
    [WhitenedClustering(), SpectralSignature(), SpectralSignature(contamination=0.05)],
    ids=["whitened_clustering", "spectral", "spectral-contamination"],
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_flags_do_not_depend_on_row_order(detector: Detector, seed: int) -> None:
    x, y = PERMUTED_X, PERMUTED_Y
    perm = np.random.default_rng(seed).permutation(len(y))

    base = detector.detect(x, y)
    permuted = detector.detect(x[perm], y[perm])

    assert base.flags.sum() > 0
    assert set(perm[permuted.flags].tolist()) == set(np.flatnonzero(base.flags).tolist())


def _planted_pixels() -> tuple[np.ndarray, np.ndarray]:
    x, y = pixel_classes(n=150, d=32, seed=4)
    x[np.flatnonzero(y == 3)[:20], :3] = 0.6
    return x, y


PIXELS_X, PIXELS_Y = _planted_pixels()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_input_gap_flags_do_not_depend_on_row_order(seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(len(PIXELS_Y))
    base = InputGap().detect(PIXELS_X, PIXELS_Y)
    permuted = InputGap().detect(PIXELS_X[perm], PIXELS_Y[perm])
    assert base.flags.sum() == 20
    assert set(perm[permuted.flags].tolist()) == set(np.flatnonzero(base.flags).tolist())


# --- combining votes ---------------------------------------------------------------------------


def _result(name: str, flags: list[bool], scores: list[float]) -> DetectorResult:
    return DetectorResult(name, np.array(scores, float), np.array(flags, bool), {0: 1.0, 1: 1.0}, {0: 0.0, 1: 0.0}, {})


def test_combine_quarantines_what_any_voter_flags() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    results = {
        "a": _result("a", [True, False, False, False, False], [2.0, 0.0, 0.5, 0.1, 0.0]),
        "b": _result("b", [False, False, True, False, False], [0.1, 0.2, 3.0, 0.0, 9.0]),
        "evidence": _result("evidence", [False, True, False, True, True], [0.0] * 5),
    }

    verdict = combine(results, ("a", "b"), labels)

    assert verdict.quarantine.tolist() == [True, False, True, False, False]
    np.testing.assert_array_equal(verdict.suspicion_score, [2.0, 0.2, 3.0, 0.1, 9.0])
    assert verdict.estimated_rate == {0: 0.5, 1: pytest.approx(1 / 3)}
    assert verdict.flagged_by() == ["a", "evidence", "b", "evidence", "evidence"]
    table = verdict.to_table([f"s{i}" for i in range(5)], labels)
    assert table.column("quarantine").to_pylist() == [True, False, True, False, False]
    assert {"a_score", "b_flag", "evidence_rank"} <= set(table.column_names)


def test_combine_with_a_missing_voter_is_a_detection_error() -> None:
    labels = np.array([0, 1])
    results = {"a": _result("a", [True, False], [1.0, 0.0])}
    with pytest.raises(DetectionError, match=r"voting detector\(s\) \['b'\] produced no result"):
        combine(results, ("a", "b"), labels)


def test_combine_without_voters_is_a_detection_error() -> None:
    labels = np.array([0, 1])
    with pytest.raises(DetectionError, match="no voting detector"):
        combine({"a": _result("a", [True, False], [1.0, 0.0])}, (), labels)


def test_combine_rejects_a_result_of_the_wrong_length() -> None:
    labels = np.array([0, 1, 1])
    with pytest.raises(DetectionError, match="detector a scored"):
        combine({"a": _result("a", [True, False], [1.0, 0.0])}, ("a",), labels)


def test_a_fallback_voter_decides_only_where_no_voter_judged_the_class_poisoned() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    # The voter judged class 0 poisoned and flagged one sample; class 1 it judged clean.
    voter = DetectorResult(
        "v", np.array([5.0, 1.0, 0.0, 2.0, 1.0, 0.0]), np.array([1, 0, 0, 0, 0, 0], bool), {0: 3.0, 1: np.inf}, {}, {}
    )
    # The fallback judged both classes poisoned and flagged two samples in each.
    fallback = DetectorResult(
        "f",
        np.array([0.9, 0.9, 0.1, 0.95, 0.85, 0.0]),
        np.array([1, 1, 0, 1, 1, 0], bool),
        {0: 0.8, 1: 0.8},
        {0: 2 / 3, 1: 2 / 3},
        {0: "poisoned", 1: "poisoned"},
    )

    verdict = combine({"v": voter, "f": fallback}, ("v",), labels, ("f",))

    # In class 0 the voter's border stands (the fallback's second flag is withdrawn); in class 1,
    # which the voter passed, the fallback's flags quarantine.
    assert verdict.quarantine.tolist() == [True, False, False, True, True, False]
    assert verdict.voters == ("v", "f") and verdict.fallback == ("f",)
    deferred = verdict.results["f"]
    assert deferred.flags.tolist() == [False, False, False, True, True, False]
    assert deferred.thresholds[0] == np.inf and "defers to v" in deferred.notes[0]
    assert deferred.estimated_rate[0] == 0.0
    assert verdict.flagged_by() == ["v", "", "", "f", "f", ""]
    # Each class ranks by the score of whoever decided there.
    np.testing.assert_array_equal(verdict.suspicion_score, [5.0, 1.0, 0.0, 0.95, 0.85, 0.0])
    assert "f flagged" in verdict.reasons(labels)[3]


def test_a_missing_fallback_voter_is_a_detection_error() -> None:
    labels = np.array([0, 1])
    with pytest.raises(DetectionError, match=r"\['f'\] produced no result"):
        combine({"a": _result("a", [True, False], [1.0, 0.0])}, ("a",), labels, ("f",))


def test_combine_ranks_by_the_voters_that_judged_the_class_poisoned() -> None:
    """Voters score on their own scales: a voter's score counts only in the classes it judged
    poisoned (finite threshold); where none did, the first voter's score ranks the samples, below
    every class judged poisoned."""
    labels = np.array([0, 0, 1, 1])
    a = DetectorResult("a", np.array([1.0, 0.0, 5.0, 4.0]), np.zeros(4, bool), {0: 3.0, 1: np.inf}, {}, {})
    b = DetectorResult(
        "b", np.array([80.0, 2.0, 99.0, 1.0]), np.array([1, 0, 0, 0], bool), {0: 50.0, 1: np.inf}, {}, {}
    )
    verdict = combine({"a": a, "b": b}, ("a", "b"), labels)
    # Class 0 (judged by b) ranks above class 1 (judged by none): lifted by 5 - 2 + 1.
    np.testing.assert_array_equal(verdict.suspicion_score, [84.0, 6.0, 5.0, 4.0])
    assert verdict.quarantine.tolist() == [True, False, False, False]


def test_whitened_takes_no_part_too_large_to_be_poisons_for_the_suspect(monkeypatch) -> None:
    """TaCT: the poisons are one source class's images, so they sit by it, and the class's clean part
    lies farther from the other classes than they do. The clean part (300 of 1,575, over 1.5x 10 %)
    cannot be a poisoning; the 75 poisons are the suspect."""
    import sanitize.detect.whitened as whitened

    rng = np.random.default_rng(0)
    means = np.zeros((5, 16))
    means[np.arange(5), np.arange(5)] = 6.0
    means[0, 0] = 20.0  # the target class lies far from every other class
    x = np.vstack([rng.normal(0, 1, (300, 16)) + means[c] for c in range(5)])
    poisons = rng.normal(0, 1, (75, 16)) + means[1]
    poisons[:, 10] += 5.0  # class 1's images, moved a little by the trigger
    x = np.vstack([x, poisons])
    labels = np.concatenate([np.repeat(np.arange(5), 300), np.zeros(75, dtype=int)])
    r = make_detector("whitened_clustering").detect(x, labels)
    assert r.flags[-75:].all() and not r.flags[:-75].any()
    # Without the bound, the side read from the other classes' means is the clean part.
    monkeypatch.setattr(whitened, "MAX_POISON_RATE", 1.0)
    r = make_detector("whitened_clustering").detect(x, labels)
    assert not r.flags[-75:].any() and r.flags[:300].sum() == 300
