"""Whitened clustering: split each class in a space whitened by the *other* classes' variation.

The idea follows SCAn (Tang et al., "Demon in the Variant", USENIX Security 2021): clean classes
share a common within-class variation, and a poisoned class is a mixture of two groups whose
difference lies along directions that clean classes barely vary in. SCAn estimates that variation
from a trusted clean set; we need no trusted data. For each class ``c`` the within-class
covariance is pooled over all *other* classes (a poisoned target class cannot inflate its own
yardstick), the class is whitened with it and split by 2-means, and the split's separation is
compared with the other classes' splits. No poison rate is needed.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from sanitize.detect._evidence import MINORITY, clusters_by_dynamics, value_beyond_other_classes
from sanitize.detect._params import Interval
from sanitize.detect._response import Responder, ResponseTest, SubsetResponder, response_tests
from sanitize.detect._rounds import detect_in_rounds
from sanitize.detect._stats import (
    EIGENVALUE_FLOOR,
    TINY,
    class_scatters,
    mad_sd,
    others_covariance,
    robust_sd,
    valley,
    whitener,
)
from sanitize.detect.base import (
    MAX_POISON_RATE,
    Detector,
    DetectorResult,
    cap_flags,
    class_indices,
    flag_budget,
)

# Guards of the split, set with the code they guard and not tuned (the hyper-parameters below were):
#: Principal components: at most one per this many samples of the smallest class, and at least this
#: many (d88bf70), so a class's split is not fitted in more dimensions than its samples support.
SAMPLES_PER_COMPONENT = 8
MIN_COMPONENTS = 2
#: Fewest samples of a class to split at all (a8a4592).
MIN_SPLIT_SAMPLES = 10
#: Smallest k-means cluster to suspect: 0.2 % of the class, at least 3 samples (a8a4592, where 3-means
#: found Blend 1 %'s 600 poisons in a Fashion-MNIST class of 6,600).
MIN_SUSPECT_SHARE = 0.002
MIN_SUSPECT_SIZE = 3
#: k-means restarts per split (ba5c40b).
KMEANS_N_INIT = 3
#: With fewer classes a robust z means little: a class must be apart by this times ``min_separation`` (5d851ef).
FEW_CLASSES = 5
FEW_CLASSES_SEPARATION = 1.5


class WhitenedClustering(Detector):
    """Leave-one-class-out whitened 2-means with a cross-class test.

    Per class ``c``:

    1. Project all features on their top ``n_components`` principal components.
    2. Whiten class ``c`` (centred on its mean) with the within-class covariance pooled over the
       other classes.
    3. Split it with k-means, k = 2 .. ``max_clusters``; the *suspect* part is one cluster against
       the rest of the class (see :meth:`_suspect`): one farther than the rest from where the other
       classes' means sit along the line joining them (the trigger moves poisons to a place no
       clean sample of any class goes, while the clean part stays where clean samples are, also
       when poisons are most of their class, as at 10 %), preferring one that passes the tests below.
    4. ``separation_`` = distance between the cluster medians along the line joining them, in
       robust standard deviations (``MAD_TO_SD`` x MAD) of the clean cluster.

    A class is judged poisoned when all three hold:

    - its separation is at least ``min_separation``;
    - the two clusters are two populations, not one cut in two: the suspect cluster spreads wider
      than the other by a factor of at least ``min_spread_ratio``, *or* the density between them
      falls to at most ``max_valley`` of the density at the suspect cluster (:func:`valley_ratio`).
      A natural sub-population (bags with handles) varies about as much as the rest of its class,
      or less, and is joined to it by a continuum. Poisons either vary more (BadNets: one patch on
      many classes) or sit apart behind an empty gap (Blend: the pattern moves them all the same
      way, so their spread matches the clean cluster's). A suspect part *tighter* than the rest
      must show the gap: a clean run's sandals were 2.6x tighter than the rest of their class;
    - its robust z-score among the classes' separations is at least ``min_class_z`` (with fewer
      than five classes, where a z-score means little, a separation of ``1.5 * min_separation``).

    Where the first and last hold but the clusters look like one population cut in two, the run's
    training dynamics (where it recorded them) can still decide: the class is judged poisoned when
    the suspect cluster (at most half its class: ``MINORITY``) fell in training loss against its
    class more than random groups of its size did (:func:`~sanitize.detect._evidence.loss_crossing`, at
    ``false_alarm``, Bonferroni over the classes so tested), and the class's separation stands beyond
    the other classes' at ``apart_false_alarm``
    (:func:`~sanitize.detect._evidence.value_beyond_other_classes`). On the real icons (2,004 images,
    6 classes) BadNets 5 %'s suspect cluster had separation 12.5 (p 0.001 among the classes) but a
    valley of 0.50 and a spread ratio of 1.18; its loss fell 13.8 (log) against its class's, p 0.005.
    Where the run hands over the reference model (``response``), such a cluster must then carry a
    pattern the model obeys (:func:`~sanitize.detect._response.response_tests`, as in input gap): a
    natural cluster of the emoji whose loss fell as fast had quarantined 25 clean images. Where it
    does not, the cluster's fall must instead exceed every other class's suspect cluster's
    (:func:`~sanitize.detect._evidence.clusters_by_dynamics`).

    On Fashion-MNIST and digits runs (bench/RESULTS.md), clean classes reached separations up to 8.7
    but then spread ratios below 2 and valleys of 0.09 or more (the digits' "1"s; 0.14 the lowest of
    any clean class); BadNets-poisoned classes had separations 6.6 to 49, spread ratios 2.8 to 5.3;
    Blend-poisoned ones, spread ratios 1.06 to 1.98 but valleys 0.00 (60k) to 0.08 (10k, 2 epochs).
    The class z is the weakest test: a WaNet-poisoned class (separation 8.8) reached z 2.8 only.

    The suspicion score of a sample is its position along the split direction, in standard
    deviations of the clean cluster from the clean cluster's mean: higher = more suspicious.
    In a poisoned class, samples scoring at least ``flag_z`` are flagged.

    The defaults were set on about 20 Fashion-MNIST and digits runs (bench/RESULTS.md, "How the
    voter's thresholds were set"); each entry names its own evidence.

    Parameters
    ----------
    n_components : int, default 64
        Most principal components kept before whitening (half the package CNN's 128 features; set
        with the first version, ba5c40b); fewer (one per ``SAMPLES_PER_COMPONENT`` samples of the
        smallest class, at least ``MIN_COMPONENTS``) when classes are small.
    min_separation : float, default 6.0
        Smallest separation for a class to count as poisoned (set with the first version, ba5c40b):
        the poisoned classes measured start just above it (figures above); the clean classes above it
        (up to 8.7, digits' "1"s) are stopped by the two-population test.
    min_class_z : float, default 2.0
        Smallest robust z-score of the separation among classes. A WaNet 5 %-poisoned class of
        Fashion-MNIST reached 2.8 only, under the first floor of 3 (75b3ca1).
    min_spread_ratio : float, default 2.5
        Smallest factor by which the suspect cluster's spread exceeds the other's (5d851ef):
        BadNets-poisoned classes showed 2.8 or more, clean classes with large separations stayed
        within 2x (figures above).
    max_valley : float, default 0.1
        Largest valley ratio for a gap between the clusters (when the spreads are alike): Blend-poisoned
        classes reached 0.00 (60k) to 0.08 (10k images, a 2-epoch model), the lowest clean class 0.14
        (6570001).
    max_clusters : int, default 3
        Largest k of the k-means splits searched for the suspect cluster: at 2, Blend 1 % on
        Fashion-MNIST went unseen (2-means cut the T-shirts along their own two halves; a8a4592).
    min_valley_samples : int, default 300
        Fewest samples in a class for the valley to count. A histogram of ``sqrt(n)`` bins holds about
        ``sqrt(n)`` samples a bin, so in a class of 137 digits a thin continuum of one sample a bin
        read as a valley of 0.085 and passed (a clean class of "9"s judged poisoned, 4dcff4c); such a
        class must show the spread instead.
    flag_z : float, default 2.5
        Threshold on the score inside a poisoned class, or the valley's emptiest point where an empty
        valley parts the clusters and lies higher: low, to favour recall (ba5c40b; Fashion-MNIST
        BadNets 1/5/10 %: every poison at 1.00-1.08x their count). Blend 1 % at 2.5: 105 clean flagged.
    max_rounds : int, default 3
        Most rounds of :meth:`detect`: after each, the flagged samples are set aside and the rest is
        whitened, split and tested again, until a round flags nothing, in the classes an earlier round
        flagged. A trigger the model maps to several places (a patch at random positions) leaves a
        second group once the first is gone (BadNets-random 5 %: recall 0.46 with one round, 0.94 with
        these; 8e8e06d).
    false_alarm : float, default 0.01
        The level of the training-dynamics test (above).
    apart_false_alarm : float, default 0.1
        The level of the dynamics route's test of the separation among the classes, set seeing
        Fashion-MNIST SIG 0.5 %'s clean bags (p 0.24; 3,028 quarantined without it) and WaNet 5 %'s
        poisons (p 0.084, beside the bags' natural split, 7.5), icons' and emoji's BadNets 5 % (p
        0.001, 0.005) and shapes-5's random-colour patch (0.023).
    contamination : float, optional
        Not needed. When given it caps the flags: at most ``1.5 * contamination * n_samples`` of the
        highest-scoring samples in poisoned classes.
    """

    name = "whitened_clustering"

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_components: int = 64,
        min_separation: float = 6.0,
        min_class_z: float = 2.0,
        min_spread_ratio: float = 2.5,
        max_valley: float = 0.1,
        max_clusters: int = 3,
        min_valley_samples: int = 300,
        flag_z: float = 2.5,
        max_rounds: int = 3,
        false_alarm: float = 0.01,
        apart_false_alarm: float = 0.1,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_components = n_components
        self.min_separation = min_separation
        self.min_class_z = min_class_z
        self.min_spread_ratio = min_spread_ratio
        self.max_valley = max_valley
        self.max_clusters = max_clusters
        self.min_valley_samples = min_valley_samples
        self.max_rounds = max_rounds
        self.flag_z = flag_z
        self.false_alarm = false_alarm
        self.apart_false_alarm = apart_false_alarm

    _parameter_constraints = {
        **Detector._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "min_separation": [Interval(Real, 0.0, None, closed="left")],
        "min_class_z": [Interval(Real, None, None, closed="neither")],
        "min_spread_ratio": [Interval(Real, 0.0, None, closed="left")],
        "max_valley": [Interval(Real, 0.0, None, closed="left")],
        # k = 1 is no split: the detector would never find anything.
        "max_clusters": [Interval(Integral, 2, None, closed="left")],
        "min_valley_samples": [Interval(Integral, 0, None, closed="left")],
        "flag_z": [Interval(Real, None, None, closed="neither")],
        "max_rounds": [Interval(Integral, 1, None, closed="left")],
        "false_alarm": [Interval(Real, 0.0, 1.0, closed="neither")],
        "apart_false_alarm": [Interval(Real, 0.0, 1.0, closed="right")],
    }
    #: Side inputs a run hands over where it has them (see :func:`sanitize.detect.run_detectors`).
    side_inputs: ClassVar[tuple[str, ...]] = ("dynamics", "response")

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        classes, sizes = np.unique(labels, return_counts=True)
        k = max(
            1,
            min(
                self.n_components,
                max(MIN_COMPONENTS, int(sizes.min()) // SAMPLES_PER_COMPONENT),
                features.shape[1],
                features.shape[0] - 1,
            ),
        )
        self.pca_ = PCA(n_components=k, random_state=self.random_state).fit(features)
        z = self.pca_.transform(features)
        means, scatters, total = class_scatters(z, labels, [int(c) for c in classes])
        counts = {int(c): int(n) for c, n in zip(classes, sizes, strict=True)}
        n = len(labels)
        largest = flag_budget(MAX_POISON_RATE, n)  # the most samples a poisoning can be
        self.whiteners_: dict[int, np.ndarray] = {}
        self.means_ = means
        self.direction_: dict[int, np.ndarray] = {}
        self.clean_center_: dict[int, float] = {}
        self.clean_scale_: dict[int, float] = {}
        self.separation_: dict[int, float] = {}
        self.suspect_share_: dict[int, float] = {}
        self.spread_ratio_: dict[int, float] = {}
        self.valley_: dict[int, float] = {}
        self.cut_: dict[int, float] = {}
        splits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in classes:
            c = int(c)
            if len(classes) > 1:
                pooled = others_covariance(total, scatters[c], n - counts[c], len(classes) - 1)
            else:
                pooled = scatters[c]
            self.whiteners_[c] = whitener(pooled, floor=EIGENVALUE_FLOOR)
            zc = (z[labels == c] - means[c]) @ self.whiteners_[c]
            suspect = self._suspect(zc, c, means, largest) if len(zc) >= MIN_SPLIT_SAMPLES else None
            if suspect is None:
                # Too few samples to split, or no cluster to suspect: score along nothing, never flag.
                self.direction_[c] = np.zeros(zc.shape[1])
                self.clean_center_[c], self.clean_scale_[c] = 0.0, 1.0
                self.separation_[c], self.suspect_share_[c], self.spread_ratio_[c] = 0.0, 0.0, 1.0
                self.valley_[c] = 1.0
                continue
            splits[c] = (zc, suspect)
        for c, (zc, inside) in splits.items():
            diff = zc[inside].mean(axis=0) - zc[~inside].mean(axis=0)
            u = diff / (float(np.linalg.norm(diff)) or 1.0)
            p = zc @ u
            p_clean, p_suspect = p[~inside], p[inside]
            self.direction_[c] = u
            # Median and MAD: poisons that k-means left in the clean part must not widen its yardstick.
            centre = float(np.median(p_clean))
            self.clean_center_[c] = centre
            self.clean_scale_[c] = robust_sd(p_clean, centre, fallback=1.0)
            self.separation_[c] = float((np.median(p_suspect) - centre) / self.clean_scale_[c])
            self.suspect_share_[c] = float(len(p_suspect) / len(p))
            spread_in, spread_out = (float(np.var(zc[m], axis=0).sum()) for m in (inside, ~inside))
            self.spread_ratio_[c] = spread_in / spread_out if spread_out > 0 else float("inf")
            self.valley_[c], at = self._valley_at(p_clean - centre, p_suspect - centre)
            # Where an empty valley parts the clusters, the border is in it (never below flag_z).
            gap = self.valley_[c] <= self.max_valley and np.isfinite(at)
            self.cut_[c] = max(self.flag_z, at / self.clean_scale_[c]) if gap else self.flag_z
        seps = np.array([self.separation_[int(c)] for c in classes])
        med = float(np.median(seps))
        mad = mad_sd(seps, med) or TINY
        self.class_z_ = {int(c): float((self.separation_[int(c)] - med) / mad) for c in classes}
        apart = {
            int(c): self.separation_[int(c)] >= self.min_separation
            and (
                self.class_z_[int(c)] >= self.min_class_z
                if len(classes) >= FEW_CLASSES
                # Too few classes for a robust z-score: ask for a larger separation instead.
                else self.separation_[int(c)] >= FEW_CLASSES_SEPARATION * self.min_separation
            )
            for c in classes
        }
        two = {c: self._two_populations(self.spread_ratio_[c], self.valley_[c]) for c in apart}
        self.poisoned_ = {c: apart[c] and two[c] for c in apart}
        # Where the two clusters look like one population cut in two, the model's training can still
        # tell them apart (:func:`clusters_by_dynamics`), in a class whose separation stands beyond
        # the other classes' at ``apart_false_alarm`` (the class z alone let Fashion-MNIST's bags by).
        self.dynamics_test_: dict[int, tuple[float, float]] = {}
        self.response_test_: dict[int, ResponseTest] = {}
        self.apart_p_ = {
            int(c): min(1.0, value_beyond_other_classes(seps, i) * len(seps)) for i, c in enumerate(classes)
        }
        dynamics: np.ndarray | None = getattr(self, "_round_dynamics", None)
        self._round_dynamics: np.ndarray | None = None
        tested = [c for c in apart if apart[c] and not two[c] and c in splits and self.suspect_share_[c] <= MINORITY]
        if dynamics is not None and len(dynamics) == n and tested:
            rng = np.random.default_rng(self.random_state)
            members = {c: inside for c, (_, inside) in splits.items()}
            # Where the model can be asked, its answer, not the other classes' falls, tells a natural
            # cluster from a trigger's (clusters_by_dynamics).
            responder: Responder | None = getattr(self, "_round_response", None)
            judged = clusters_by_dynamics(
                dynamics, labels, members, tested, rng, self.false_alarm, against_others=responder is None
            )
            for c, (drop, p, passed) in judged.items():
                self.dynamics_test_[c] = (drop, p)
                self.poisoned_[c] = passed and self.apart_p_[c] <= self.apart_false_alarm
            # As in input gap, a cluster only its training loss passed must carry a pattern the model obeys.
            asked = [c for c in judged if self.poisoned_[c]]
            if responder is not None and asked:
                groups = {c: np.flatnonzero(labels == c)[inside] for c, (_, inside) in splits.items()}
                self.response_test_ = response_tests(responder, labels, groups, asked, rng, self.false_alarm)
                self.poisoned_.update({c: t.passed for c, t in self.response_test_.items()})

    def _valley_at(self, clean: np.ndarray, suspect: np.ndarray) -> tuple[float, float]:
        """:func:`valley` (ratio, where), or (1.0, nan): no evidence in a class under ``min_valley_samples``."""
        if len(clean) + len(suspect) < self.min_valley_samples:
            return 1.0, float("nan")
        return valley(clean, suspect)

    def _two_populations(self, spread_ratio: float, valley: float) -> bool:
        """The suspect part spreads wider than the rest, or an empty valley parts them.

        Only a *wider* suspect part counts on its spread: dirty-label poisons come from many classes
        and vary more than the clean part. A *tighter* one is what a natural, uniform sub-population
        looks like too (a run's clean sandals: 2.6x tighter, separation 12.8, valley 0.52), so it must
        show the valley as well; every tight poison group measured so far had a valley of 0.1 or less.
        """
        return bool(spread_ratio >= self.min_spread_ratio or valley <= self.max_valley)

    def _suspect(self, zc: np.ndarray, c: int, means: dict[int, np.ndarray], largest: int) -> np.ndarray | None:
        """The suspect part (n_c,) bool of whitened class ``c``: the most separated k-means cluster
        (None when no cluster qualifies).

        Every cluster of k-means with k = 2 .. ``max_clusters`` is a candidate against the rest of
        the class, if it lies farther than the rest from where the other classes' means sit along
        the line joining the two (a trigger moves its samples where no clean sample of any class
        goes; the clean part stays where clean samples are, even when poisons are most of the class),
        unless the rest is more than ``largest``, too many for poisons at ``MAX_POISON_RATE`` (1.5x 10 %:
        TaCT's poisons sit by their source class, and the rule took shapes-5's clean target for them);
        a cluster that large is no candidate. One that passes the separation and two-population tests
        beats one that does not, then the larger separation wins. k = 2 alone misses a small poison
        group in a class of two groups (Blend 1 %: 2-means splits the class, 3-means isolates them).
        """
        best: np.ndarray | None = None
        best_key: tuple[bool, float] = (False, -np.inf)
        minimum = max(MIN_SUSPECT_SIZE, int(MIN_SUSPECT_SHARE * len(zc)))
        for k in range(2, self.max_clusters + 1):
            assign = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=self.random_state).fit(zc).labels_
            for j in range(k):
                inside = assign == j
                if inside.sum() < minimum or (~inside).sum() < minimum:
                    continue
                joining = zc[inside].mean(axis=0) - zc[~inside].mean(axis=0)
                joining /= np.linalg.norm(joining) or 1.0
                along = [(means[o] - means[c]) @ self.whiteners_[c] @ joining for o in means if o != c]
                others_at = float(np.median(along)) if along else 0.0
                at_in, at_out = float(zc[inside].mean(axis=0) @ joining), float(zc[~inside].mean(axis=0) @ joining)
                # More than a poisoning at MAX_POISON_RATE could be is not the suspect; where the rest
                # is, it cannot be the poisons either, and the side need not be read from the others.
                if inside.sum() > largest or (
                    (~inside).sum() <= largest and abs(at_in - others_at) < abs(at_out - others_at)
                ):
                    continue
                p = zc @ joining
                centre = float(np.median(p[~inside]))
                scale = robust_sd(p[~inside], centre, fallback=1.0)
                sep = (float(np.median(p[inside])) - centre) / scale
                spread_in, spread_out = (float(np.var(zc[m], axis=0).sum()) for m in (inside, ~inside))
                ratio = spread_in / spread_out if spread_out > 0 else float("inf")
                two = self._two_populations(ratio, self._valley_at(p[~inside] - centre, p[inside] - centre)[0])
                # A candidate that is apart and behaves like a second population beats one that is only apart.
                key = (two and sep >= self.min_separation, sep)
                if best is None or key > best_key:
                    best, best_key = inside, key
        return best

    def detect(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        dynamics: np.ndarray | None = None,
        response: Responder | None = None,
    ) -> DetectorResult:
        """Fit, score and flag in rounds (``max_rounds``), each on the samples no earlier round flagged;
        ``dynamics`` (n, E), each sample's training loss per epoch, and ``response``, the reference
        model's (:class:`~sanitize.detect._response.Responder`), where the run recorded them.

        A sample's score is from the round that flagged it, else the first; thresholds, notes and fitted
        attributes are the first round's (later findings appended); ``rounds_``: each round's flags.
        """
        # Many small k-means and PCA fits: on 60k x 128 one thread takes 1.1-1.3 s, two 1.9-2.4 s, sixteen 9.9 s.
        if dynamics is not None and (np.ndim(dynamics) != 2 or len(dynamics) != len(labels)):
            raise ValueError(f"training dynamics of shape {np.shape(dynamics)} for {len(labels)} samples")

        def prepare(rest: np.ndarray) -> None:  # the side inputs of the round's samples, for _fit
            self._round_dynamics = None if dynamics is None else np.asarray(dynamics, np.float64)[rest]
            self._round_response = None if response is None else SubsetResponder(response, rest)

        with threadpool_limits(limits=1):
            return detect_in_rounds(self, features, labels, prepare)

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Position (n,) along the class's split direction in clean-cluster sd; higher = more suspicious."""
        self._check_fitted()
        z = self.pca_.transform(features)
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            c = int(c)
            idx = labels == c
            p = ((z[idx] - self.means_[c]) @ self.whiteners_[c]) @ self.direction_[c]
            scores[idx] = (p - self.clean_center_[c]) / self.clean_scale_[c]
        return scores

    def _fit_thresholds(self, scores: np.ndarray, labels: np.ndarray) -> tuple[dict[int, float], dict[int, str]]:
        """Each class's threshold from its tests (:meth:`_auto_threshold`), contamination or not: a
        contamination caps the flags over all classes instead (:meth:`flag`)."""
        thresholds: dict[int, float] = {}
        notes: dict[int, str] = {}
        for c, idx in class_indices(labels):
            thresholds[c], notes[c] = self._auto_threshold(scores[idx], c)
        return thresholds, notes

    def flag(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[int, float], dict[int, str]]:
        """:meth:`Detector.flag`; with ``contamination`` given, only the ``flag_budget(contamination, n)``
        highest-scoring flags stay, over all classes, and a capped class's threshold is its lowest kept score."""
        flags, thresholds, notes = super().flag(scores, labels)
        if self.contamination is not None:
            cap_flags(flags, scores, labels, thresholds, notes, self.contamination)
        return flags, thresholds, notes

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        sep, cz, ratio = self.separation_[label], self.class_z_[label], self.spread_ratio_[label]
        stats = (
            f"separation {sep:.2f}, spread ratio {ratio:.2f}, valley {self.valley_[label]:.2f}, "
            f"robust z {cz:.1f} among classes"
        )
        if label in self.dynamics_test_:
            drop, p = self.dynamics_test_[label]
            stats += f", the suspect cluster's training loss fell {drop:.2f} (log) against its class (p {p:.2g})"
            stats += f", separation beyond the other classes' p {self.apart_p_[label]:.2g}"
        if label in self.response_test_:
            stats += f", {self.response_test_[label].describe()}"
        if self.poisoned_[label]:
            cut = self.cut_.get(label, self.flag_z)
            where = "" if cut == self.flag_z else " (in the valley)"
            return cut, f"poisoned: {stats}; flags score >= {cut:.3g}{where}"
        return np.inf, f"clean: {stats}"
