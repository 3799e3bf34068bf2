"""Input gap: a group of samples parted from the rest of its class by an empty gap, in input space,
along a direction the other classes hardly vary in.

Feature-space detectors see a trigger only as far as the model learned it. A clean-label trigger
(SIG: target-class images with a faint sinusoid, labels kept) or a trigger at a low rate can leave
the poisons inside their class's feature cloud while the pixels still carry a pattern that no
clean image has. Natural images vary little along many pixel directions (borders that are always
black, high-frequency stripes), and an additive trigger (a patch, a blended pattern, a sinusoid)
moves every poison the same way along them.

The method borrows two ideas: SCAn's (Tang et al., USENIX Security 2021) yardstick, the
within-class variation of the *other* classes, so that a poisoned class cannot inflate its own;
and spectral signatures' (Tran et al., NeurIPS 2018) search along the top singular directions of
the centred class, here after whitening by that yardstick. What it does not borrow is a budget:
a class is judged poisoned only when a direction splits it into two groups with an empty gap
between them, far apart, and the smaller group is not a handful of odd images.

Warping triggers (WaNet) and triggers at random positions leave no shared direction: this detector
does not see them. It complements the feature-space voter; it does not replace it.
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral, Real
from typing import ClassVar, Self

import numpy as np
from scipy.stats import norm

from sanitize.detect._evidence import (
    MINORITY,
    check_side_inputs,
    loss_crossing,
    relative_log_loss,
    source_concentration,
)
from sanitize.detect._params import Interval
from sanitize.detect._response import Responder, ResponseTest, response_tests
from sanitize.detect._split import MIN_SIDE, Split, contrast, disowned_bar, disowned_shares
from sanitize.detect._split import splits as splits_along
from sanitize.detect._stats import (
    EIGENVALUE_FLOOR,
    class_scatters,
    mad_sd,
    others_covariance,
    shrunk_whitener,
    whitener,
)
from sanitize.detect._trigger import DIP_VALLEY, Refined, trigger_groups
from sanitize.detect.base import Detector, DetectorResult, check_fitted_samples

#: Fewest separations in the null to fit a log-normal to (a median and a MAD need a few; with fewer,
#: no class is judged poisoned by this voter).
NULL_MIN_VALUES = 3
#: Smallest spread (sd of the log separation) the null may have: a physical bound on a null whose
#: values happen to agree (five directions of one other class), so the bar is not set by rounding.
NULL_MIN_LOG_SD = 0.1
#: The mean share of a group's input neighbours that must carry other labels for the disowned route:
#: a majority, as the k-NN rule asks of one sample (Peri et al., ECCV Workshops 2020), here of the group.
DISOWNED_MAJORITY = 0.5


class InputGap(Detector):
    """Leave-one-class-out whitening of raw inputs, then a 1-D split along the top directions.

    Per class ``c``:

    1. Whiten the class (centred on its mean) with the within-class covariance pooled over the
       other classes; eigenvalues below ``floor`` x the largest are raised to it, so pixels that
       never vary elsewhere weigh heavily but finitely.
    2. Take the top ``n_directions`` eigenvectors of the whitened class covariance: the directions
       along which class ``c`` varies most *compared with the other classes*.
    3. Along each, split the projections in two with exact 1-D 2-means, call the side farther
       from the other classes' means the suspect group, and measure its separation (median
       distance from the rest, in robust standard deviations of the rest) and the valley between
       the two (:func:`valley_ratio`).

    The class is judged poisoned when some direction gives a valley of at most ``max_valley``, a
    suspect group of at least ``min_group`` samples (and ``min_group_share`` of the class) and at
    most ``max_group_share`` of it, and a separation that is

    - beyond the dataset's own null (``bar_``): the ``1 - false_alarm / K`` quantile of a
      log-normal fitted (median, MAD) to the separations every direction gives in the *other*
      classes. A class of one population splits at about 2.5 (the five classes of the synthetic
      shapes: 2.3 to 2.9), so the bar is about 3 there, 4 to 6 on digits and Fashion-MNIST; and
    - either at least ``min_separation`` (30), or the group comes from one source far more than its
      class does (:func:`source_concentration`, hypergeometric, at most ``false_alarm``). Real
      classes hold natural groups beyond their null bar: 26 of the 145 training "1"s of digits sit
      apart in pixel space (separation 13.8, valley 0), small groups of Fashion-MNIST shirts, bags
      and boots (separation 31 to 58, but 0.6 % to 2.2 % of their class). What tells a supplier's
      planted images from such a group is where they came from: the 18 images one supplier of
      the synthetic shapes patched (separation 27.3) came all from it, p = 2e-8. Where the data has
      one source, only ``min_separation`` decides, as before: 30, set on Fashion-MNIST and digits.

    - or, whatever its separation under ``min_separation`` (the null bar included), a group with at
      least a dip (valley at most ``DIP_VALLEY``) whose training loss fell to easier than its class,
      more than random groups of its size did (:func:`~sanitize.detect._evidence.loss_crossing`, a
      permutation test at ``false_alarm``, Bonferroni over every split so tested). The dynamics are
      a null of their own, independent of how the pixels look: on the real icons, renders of one
      icon sit far apart in pixel space and set the null bar at 66 to 353, above Blend's and SIG's
      poison groups (13.9, 8.5), which their losses tell apart (p 0.001-0.002).
      Where the run hands over the reference model (``response``), such a group must also carry a
      pattern the model obeys (:func:`~sanitize.detect._response.response_tests`, Fisher's exact test
      at ``false_alarm``): natural groups whose loss fell as fast as poisons' do not (emoji's, and
      Fashion-MNIST's at 96 px, which had quarantined 10 and 27 clean images).

    The direction with the largest separation among those that pass wins. In a class none passes,
    the side of a split *nearer* the other classes may be a dirty-label group that looks like where
    it came from: it passes where its input neighbours disown it by a majority and far more than the
    rest of its class, beyond the other classes' nearer sides (:meth:`_disowned`; digits with 95 such
    poisons, 40 % of their class: 0.80 against 0.00). In a class none of these passes,
    the model is asked (``response``): the pattern of the class's top ``least`` images along a
    direction, or of its images of one colour at one position (a patch), that turns other classes'
    images to it far more than any other class's such group does is a trigger
    (:func:`~sanitize.detect._trigger.trigger_groups`, Fisher at ``false_alarm``, Bonferroni over the
    classes); its matched filter parts the group (SIG at 1 % on the emoji: 20 of 20), or for a patch
    the pixels where the group agrees with itself (:func:`~sanitize.detect._border.settle_on_images`).
    The model's word decides there, so the group parted needs ``min_group`` images, not ``min_group_share``
    (the candidates asked of the model still hold ``least``: a lower floor let a clean class's natural
    colour group of 10 icons pass the response test, bench/RESULTS.md "Ninth step, second part").

    The suspicion score of a sample is its position along the class's best direction, oriented
    towards the suspect group, in robust sd of the rest from the rest's median: higher = more
    suspicious; in a poisoned class the threshold is midway across the widest gap below the group.

    Figures below: bench/RESULTS.md, "The second voter, input gap, and how its thresholds were set".

    Parameters
    ----------
    n_directions : int, default 5
        How many top whitened directions of each class are searched (5613a8c; Fashion-MNIST's clean
        60k images showed no valley below 0.65 along their top 8 either).
    min_separation : float, default 30.0
        Separation that decides without the sources' evidence: between 13.8 (26 clean digits "1"s
        apart in pixel space) and 63 (SIG 1 % on 8,000 Fashion-MNIST images, the nearest poison
        group measured). An empirical bound, set on Fashion-MNIST and digits.
    false_alarm : float, default 0.01
        The false-alarm rate of each statistical test: the null bar (per dataset, Bonferroni over
        the classes), the source concentration (per group, Bonferroni over the sources), the
        disowned route's bar and the response tests.
    max_valley : float, default 0.1
        Largest valley ratio: the density in the gap over the density at the suspect group. Whitened
        clustering's floor; every additive trigger's group measured showed a valley of 0.
    min_group : int, default 10
        Fewest samples in a suspect group; fewer are odd images, not a poisoning (5613a8c).
    min_group_share : float, default 0.03
        Smallest share of the class in a suspect group the geometry decides: between 2.2 % (the largest
        small clean group, Fashion-MNIST boots) and 4.9 % (BadNets at 0.5 %; 863ab05).
    max_group_share : float, default 0.75
        Largest share of the class in the suspect group (5613a8c, not tuned): dirty-label poisons at
        10 % are half of their target class, and a "group" of three quarters is the class itself.
    floor : float, default ``EIGENVALUE_FLOOR`` (1e-6)
        Smallest eigenvalue of the yardstick, relative to its largest.
    contamination : float, optional
        Not needed. When given, it caps the flags at ``1.5 * contamination`` of each class.
    """

    name = "input_gap"
    input_space: ClassVar[bool] = True
    float32_ok = True

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_directions: int = 5,
        min_separation: float = 30.0,
        false_alarm: float = 0.01,
        max_valley: float = 0.1,
        min_group: int = 10,
        min_group_share: float = 0.03,
        max_group_share: float = 0.75,
        floor: float = EIGENVALUE_FLOOR,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_directions = n_directions
        self.min_separation = min_separation
        self.false_alarm = false_alarm
        self.max_valley = max_valley
        self.min_group = min_group
        self.min_group_share = min_group_share
        self.max_group_share = max_group_share
        self.floor = floor

    _parameter_constraints = {
        **Detector._parameter_constraints,
        "n_directions": [Interval(Integral, 1, None, closed="left")],
        "min_separation": [Interval(Real, 0.0, None, closed="left")],
        "false_alarm": [Interval(Real, 0.0, 1.0, closed="neither")],
        "max_valley": [Interval(Real, 0.0, None, closed="left")],
        "min_group": [Interval(Integral, 1, None, closed="left")],
        "min_group_share": [Interval(Real, 0.0, 1.0, closed="both")],
        "max_group_share": [Interval(Real, 0.0, 1.0, closed="right")],
        # Above 0, or directions that never vary would be divided by zero.
        "floor": [Interval(Real, 0.0, 1.0, closed="right")],
    }

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.min_group_share > self.max_group_share:
            raise ValueError(
                f"The 'min_group_share' parameter of {type(self).__name__} must not exceed max_group_share "
                f"({self.max_group_share!r}): no group could pass. Got {self.min_group_share!r} instead."
            )

    #: Side inputs a run hands over where it has them (see :func:`sanitize.detect.run_detectors`).
    side_inputs: ClassVar[tuple[str, ...]] = ("groups", "dynamics", "response")

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray | None = None,
        dynamics: np.ndarray | None = None,
        response: Responder | None = None,
    ) -> Self:
        """:meth:`Detector.fit`, with each sample's source (``groups``, (n,) str), its training loss
        in every epoch of the reference model (``dynamics``, (n, E)) and the reference model's response
        to the training images (``response``, :class:`~sanitize.detect._response.Responder`), where known."""
        self._side = (*check_side_inputs(len(labels), groups, dynamics), response)
        return super().fit(features, labels)

    def detect(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray | None = None,
        dynamics: np.ndarray | None = None,
        response: Responder | None = None,
    ) -> DetectorResult:
        """:meth:`Detector.detect`, with the side inputs where known (see :meth:`fit`)."""
        side = (*check_side_inputs(len(labels), groups, dynamics), response)
        # The base class's detect calls fit(features, labels): hand the side inputs over through it.
        self._pending: tuple[np.ndarray | None, np.ndarray | None, Responder | None] | None = side
        return super().detect(features, labels)

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        # The side inputs handed to this fit (by fit, or by detect through fit), used once.
        pending = getattr(self, "_pending", None)
        side = pending if pending is not None else getattr(self, "_side", (None, None, None))
        self._pending = None
        self.groups_: np.ndarray | None = side[0]
        self.dynamics_: np.ndarray | None = side[1]
        responder: Responder | None = side[2]
        self.dynamics_test_: dict[int, tuple[float, float]] = {}
        self.response_test_: dict[int, ResponseTest] = {}
        self.rule_: dict[int, Refined] = {}
        self._fitted_samples, rng = (features, labels.copy()), np.random.default_rng(self.random_state)
        classes = [int(c) for c in np.unique(labels)]
        x = features.astype(np.float64, copy=False)
        means, scatters, total = class_scatters(x, labels, classes)
        n = len(labels)
        self.means_ = means
        self.axis_: dict[int, np.ndarray] = {}
        self.centre_: dict[int, float] = {}
        self.scale_: dict[int, float] = {}
        self.separation_: dict[int, float] = {}
        self.valley_: dict[int, float] = {}
        self.group_share_: dict[int, float] = {}
        self.cut_: dict[int, float] = {}
        self.poisoned_: dict[int, bool] = {}
        self.bar_: dict[int, float] = {}
        self.source_: dict[int, tuple[str, float]] = {}
        self.disowned_: dict[int, tuple[float, float, float]] = {}
        splits: dict[int, list[Split]] = {}
        nears: dict[int, list[Split]] = {}
        least: dict[int, int] = {}
        for c in classes:
            xc = x[labels == c] - means[c]
            size = len(xc)
            if len(classes) > 1:
                pooled = others_covariance(total, scatters[c], n - size, len(classes) - 1)
            else:
                pooled = scatters[c] / max(size - 1, 1)
            white = whitener(pooled, self.floor)
            offsets = np.stack([means[o] - means[c] for o in classes if o != c]) if len(classes) > 1 else None
            least[c] = max(self.min_group, int(np.ceil(self.min_group_share * size)), MIN_SIDE)
            splits[c], nears[c] = splits_along(xc, self._axes(white, scatters[c] / size), offsets)
        for c in classes:
            self.bar_[c] = self._bar(c, splits)
        # The splits whose groups the dynamics will be tested on: the level is shared among them.
        n_tested = sum(
            sp.count >= least[c]
            and sp.share <= self.max_group_share
            and sp.valley <= DIP_VALLEY
            and sp.share <= MINORITY
            and sp.separation < self.min_separation
            for c in classes
            for sp in splits[c]
        )
        chosen: dict[int, Split | None] = {}
        for c in classes:
            own = None if self.groups_ is None else self.groups_[labels == c]
            losses = None if self.dynamics_ is None else relative_log_loss(self.dynamics_[labels == c])
            chosen[c] = self._choose(splits[c], self.bar_[c], least[c], own, losses, rng, n_tested)
        # A group that only its training loss passed must also carry a pattern the model obeys.
        asked = {c: sp for c, sp in chosen.items() if sp is not None and sp.ok and sp.by == "dynamics"}
        if responder is not None and asked:
            found = {c: np.flatnonzero(labels == c)[sp.members] for c, sp in chosen.items() if sp is not None}
            self.response_test_ = response_tests(responder, labels, found, list(asked), rng, self.false_alarm)
            for c, sp in asked.items():
                chosen[c] = replace(sp, ok=self.response_test_[c].passed)
        self._disowned(x, labels, nears, least, chosen)
        # A class no route passed: its top images along a direction may carry a trigger the model obeys.
        searched = [c for c in classes if chosen[c] is None or not chosen[c].ok]  # type: ignore[union-attr]
        if responder is not None and searched and len(classes) > 1:

            def white_of(c: int) -> np.ndarray:
                size = int((labels == c).sum())
                return shrunk_whitener(others_covariance(total, scatters[c], n - size, len(classes) - 1), n - size)

            axes = {c: [sp.axis for sp in splits[c]] for c in classes}
            share, alarm = self.max_group_share, self.false_alarm
            found = trigger_groups(responder, x, labels, means, axes, least, share, searched, white_of, rng, alarm)
            for c, (group, test) in found.items():
                self.response_test_[c] = test
                size, fewest = int((labels == c).sum()), self.min_group
                parts = group is not None and (group.valley <= DIP_VALLEY or group.asked is not None)
                if group is None or not parts or not fewest <= len(group.members) <= share * size:
                    continue
                k = len(group.members)
                chosen[c] = Split(
                    (True, group.separation), True, group.axis, group.centre, group.scale, group.separation,
                    group.valley, k / size, group.cut, k, group.members, by="response",
                )  # fmt: skip
                self.rule_[c] = group  # the group's own score (for a patch: its closeness where it agrees)
        for c in classes:
            best = chosen[c]
            if best is None:
                self.axis_[c] = np.zeros(x.shape[1])
                self.centre_[c], self.scale_[c], self.separation_[c] = 0.0, 1.0, 0.0
                self.valley_[c], self.group_share_[c], self.cut_[c] = 1.0, 0.0, np.inf
                self.poisoned_[c] = False
                continue
            self.axis_[c] = best.axis
            self.centre_[c], self.scale_[c], self.cut_[c] = best.centre, best.scale, best.cut
            self.separation_[c], self.valley_[c], self.group_share_[c] = best.separation, best.valley, best.share
            self.poisoned_[c] = best.ok
            self.source_[c] = best.source
            if best.dynamics is not None:
                self.dynamics_test_[c] = best.dynamics

    def _disowned(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        nears: dict[int, list[Split]],
        least: dict[int, int],
        chosen: dict[int, Split | None],
    ) -> None:
        """The disowned route, for the classes no other route passed (``chosen``, updated): the side
        of a split nearer the other classes, with a dip, at least ``least`` and at most half of its
        class, whose images' input neighbours carry other labels far more than the rest of the class's
        do (:func:`~sanitize.detect._split.contrast`) passes when that contrast is beyond the other
        classes' nearer sides' (:func:`~sanitize.detect._split.disowned_bar`, Bonferroni over every
        such side tested). The null is every nearer side of the other classes, not only those with a
        dip and a size that would be tested: the level is that of a side drawn from them, approximate
        for the selected ones. A class this route passes is not asked of the model. Dirty-label
        poisons look like the classes they came from: on digits, 95 of
        a class's 237 images (a 3x3 patch, 40 % of the class) sit on the side nearer the other digits,
        disowned 0.80 against the rest's 0.00; clean classes' nearer sides reach 0.25 there. The
        group's neighbours must also disown it by a majority (``DISOWNED_MAJORITY``): where two classes
        overlap, the larger one's look-alikes are disowned only by the smaller one's share."""
        most = min(MINORITY, self.max_group_share)
        sizes = {c: int((labels == c).sum()) for c in nears}

        def fits(c: int, sp: Split) -> bool:  # sized on the group flagged (beyond the widest gap)
            return least[c] <= len(sp.members) <= most * sizes[c] and sp.valley <= DIP_VALLEY

        unpassed = [c for c, sp in chosen.items() if sp is None or not sp.ok]
        tested = {c: [i for i, sp in enumerate(nears[c]) if fits(c, sp)] for c in unpassed}
        n_tested = sum(len(found) for found in tested.values())
        if n_tested == 0 or len(nears) < 2:
            return
        shares = disowned_shares(x, labels)
        rows = {c: np.flatnonzero(labels == c) for c in nears}
        gives = {c: [contrast(shares[rows[c]], sp.members) for sp in nears[c]] for c in nears}
        for c, found in tested.items():
            if not found:
                continue
            bar = disowned_bar([v for o in nears if o != c for v in gives[o]], self.false_alarm / n_tested)
            i = max(found, key=gives[c].__getitem__)  # the first of the largest, in the sides' order
            best, value = nears[c][i], gives[c][i]
            held = float(shares[rows[c]][best.members].mean())
            self.disowned_[c] = (value, bar, held)
            if value >= bar and held >= DISOWNED_MAJORITY:
                chosen[c] = replace(best, key=(True, best.separation), ok=True, by="disowned")
                self.response_test_.pop(c, None)  # a test of another group (the loss route's), not this one's

    def _bar(self, label: int, splits: dict[int, list[Split]]) -> float:
        """The separation a class's split must reach to be evidence at all: the ``1 - false_alarm / K``
        quantile (K classes: Bonferroni) of a log-normal fitted robustly (median, MAD) to the
        separations of every direction's split in the *other* classes, the dataset's own null of what
        splitting a class gives. With one class, its own directions other than the widest are the null."""
        null = [sp.separation for o, found in splits.items() if o != label for sp in found]
        if not null:
            own = sorted((sp.separation for sp in splits[label]), reverse=True)
            null = own[1:]
        logs = np.log([v for v in null if v > 0])
        if len(logs) < NULL_MIN_VALUES:
            return np.inf
        centre = float(np.median(logs))
        spread = max(mad_sd(logs, centre), NULL_MIN_LOG_SD)
        z = float(norm.isf(self.false_alarm / max(len(splits), 1)))
        return float(np.exp(centre + z * spread))

    def _axes(self, white: np.ndarray, covariance: np.ndarray) -> np.ndarray:
        """The top ``n_directions`` directions (d, k) of ``covariance`` in whitened coordinates,
        mapped back to input space."""
        _, vectors = np.linalg.eigh(white.T @ covariance @ white)
        k = min(self.n_directions, vectors.shape[1])
        return white @ vectors[:, ::-1][:, :k]

    def _choose(
        self,
        splits: list[Split],
        bar: float,
        least: int,
        sources: np.ndarray | None,
        losses: np.ndarray | None,
        rng: np.random.Generator,
        n_tested: int = 1,
    ) -> Split | None:
        """The best of a class's splits: a passing one first, then the largest separation among the
        groups large enough. A split passes with an empty valley, a group of at least ``least`` samples
        and at most ``max_group_share``, a separation of at least ``bar`` (the dataset's null), and one
        of: a separation of at least ``min_separation``; a group drawn from one source far more than
        its class is (:func:`source_concentration` at most ``false_alarm``); a group whose training
        loss fell against its class's more than random groups of its size did (:func:`loss_crossing`,
        permutation p at most ``false_alarm``). Natural groups of a class (26 digits "1"s apart,
        separation 13.8) have neither reason to come from one supplier nor to be learnt late and
        then fast, as a trigger on images of other classes is."""
        best: Split | None = None
        alpha = self.false_alarm / max(n_tested, 1)  # Bonferroni over every split tested
        for sp in splits:
            size_ok = sp.count >= least and sp.share <= self.max_group_share
            gap = sp.valley <= self.max_valley
            # A dip (the gap at most half as dense as the group) is enough where a test on other
            # evidence decides; alone, the separation needs an empty gap.
            dip = sp.valley <= DIP_VALLEY
            evidence = size_ok and dip and sp.separation >= bar
            if evidence and sources is not None:
                sp = replace(sp, source=source_concentration(sources, sp.members))
            # The dynamics are a test of their own, with its own null: they may decide a group that
            # the dataset's null bar leaves open (real icons, whose renders of one icon sit far apart,
            # set the bar at 66 to 353, above Blend's and SIG's groups at 13.9 and 8.5).
            tested = size_ok and dip and sp.share <= MINORITY and sp.separation < self.min_separation
            if tested and losses is not None:
                sp = replace(sp, dynamics=loss_crossing(losses, sp.members, rng, alpha))
            routes = {
                "separation": evidence and gap and sp.separation >= self.min_separation,
                "source": evidence and sp.source[1] <= self.false_alarm,
                "dynamics": tested and sp.dynamics is not None and sp.dynamics[1] <= alpha,
            }
            ok = any(routes.values())
            key = (ok, sp.separation if sp.count >= least else -np.inf)
            if best is None or key > best.key:
                best = replace(sp, key=key, ok=ok, by=next((r for r, v in routes.items() if v), ""))
        return best

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Position (n,) along the class's best direction, in robust sd of the rest; higher = more suspicious."""
        self._check_fitted()
        if any(rule.fitted is not None for rule in self.rule_.values()):  # a patch read off the images
            check_fitted_samples(self, features, labels, self._fitted_samples)
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            c = int(c)
            idx = labels == c
            centred = features[idx].astype(np.float64, copy=False) - self.means_[c]
            rule = self.rule_.get(c)
            scores[idx] = rule.score(centred) if rule else (centred @ self.axis_[c] - self.centre_[c]) / self.scale_[c]
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        stats = (
            f"separation {self.separation_[label]:.1f}, valley {self.valley_[label]:.2f}, "
            f"group {self.group_share_[label]:.1%} of the class"
        )
        name, p = self.source_.get(label, ("", 1.0))
        if name:
            stats += f", the group mostly from source {name!r} (p {p:.2g})"
        if label in self.dynamics_test_:
            drop, p = self.dynamics_test_[label]
            stats += f", the group's training loss fell {drop:.2f} (log) against its class (permutation p {p:.2g})"
        if label in self.disowned_:
            value, bar, held = self.disowned_[label]
            stats += f", its side nearer the other classes: {held:.0%} of its input neighbours labelled otherwise"
            stats += f", {value:+.2f} more than the rest's (bar {bar:.2f})"
        if label in self.response_test_:
            stats += f", {self.response_test_[label].describe()}"
        stats += self.rule_[label].describe() if label in self.rule_ else ""
        stats += f", null bar {self.bar_[label]:.3g}"
        if self.poisoned_[label]:
            cut = self.cut_[label]
            return cut, f"poisoned: {stats}; flags beyond the gap, score >= {cut:.3g}"
        return np.inf, f"clean: {stats}"
