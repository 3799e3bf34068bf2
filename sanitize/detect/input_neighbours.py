"""Input neighbours: a class that holds too many images whose nearest images, pixel for pixel, all
carry other labels.

A dirty-label poison is an image of some other class, stamped with a trigger and relabelled to the
target. When the model learns the trigger only partly (WaNet's warps at a 1 % rate), the poisons
sit inside the target class in feature space and the feature-space detectors see nothing. In the
pixels they still look like where they came from: a warped sneaker's nearest images are sneakers.
This is the k-NN label-disagreement test of Peri et al. (ECCV Workshops 2020), moved from the
model's features to the inputs, where the trigger has not been learned and cannot pull the poisons
together.

Clean data has such images too: sandals that look like sneakers, shirts that look like T-shirts, a
class of emoji that borrows the others' shapes. So a sample is not judged alone. A class is judged
poisoned when it holds more *isolated* images (none of their ``k`` nearest images carries their
label) than the other classes let one expect: the other classes' log shares of isolated images are
the null (a normal, so the tested class's log share follows their predictive Student t, and its
count a Poisson at that share; :func:`sanitize.detect._evidence.count_beyond_other_classes`), and the
class's p-value, times the number of classes, must be at most ``false_alarm`` (20 %). It must also hold at
least ``min_excess`` isolated images more than the other classes' mean share predicts.

In a poisoned class, the disagreement alone cannot draw the border: a poison made from a shirt looks
like a T-shirt, and a T-shirt that looks like a shirt is clean. What tells them apart is the
trigger. So the class's clearest poisons (at least ``seed_disagreement`` of their neighbours labelled
otherwise; mostly poisons) teach small CNNs what they share, against clean-looking images of every
class: both sides hold other classes' content, so what is left to learn is the trigger. The images
with at least ``min_disagreement`` of their neighbours labelled otherwise are flagged when the models
find the trigger on them, and the seeds are flagged. Inputs that are not square images, or too few
seeds, fall back to flagging at ``flag_disagreement``.

Before that, the class must show that its seeds share a trigger at all: models trained on half the
seeds score the other half above the class's own ordinary images (one-sided Mann-Whitney, p at most
``trigger_false_alarm``), else the class is judged clean. A trigger is one pattern, learnt from half
the poisons and found on the rest; the isolated images of a clean class share only their class's look,
which its ordinary images carry more. On two held-out clean emoji builds the count test passed a class
(p 0.13, 0.11) whose seeds scored p 0.99 and 1.0 here; Fashion-MNIST's WaNet 1 %, 0.5 % and
Adaptive-Blend 5 % target classes score 1e-297, 6e-175 and 0 (bench/RESULTS.md, "Fourteenth step").

It votes as a *fallback* (:func:`sanitize.detect.verdict.combine`): only in classes that no other
voter judged poisoned. Where whitened clustering or input gap found a poisoning, they also drew its
border, and no trigger is learnt there (``known_poisoned``).

What it cannot see: clean-label poisons (their label is their class), and dirty-label poisons at
rates where they are each other's nearest images (a blended pattern, or a patch at 5 % of the data):
there they are not isolated. Both are the other voters' ground.

The class decision was first a ratio to the median class (4x) set on Fashion-MNIST; on the held-out
emoji (bench/RESULTS.md, "Input neighbours' decision from the data") a clean class stood at 4.7x and
was quarantined, and on 10,200 icons a clean class at 4.3x. The test above puts those at p 0.60 and
0.56 (times the classes), and Fashion-MNIST's poisoned target classes at 0.014-0.17. Learning the
trigger, WaNet 1 % is flagged with recall 0.970 at 1.24x the poison count, and on two more draws of
the poisons 0.978 at 1.35x and 0.987 at 1.44x.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from torch import nn

from sanitize.detect._evidence import count_beyond_other_classes
from sanitize.detect._params import Interval, Pattern, TupleOf
from sanitize.detect.base import Detector, check_fitted_samples, share_by_class
from sanitize.detect.knn import knn_search
from sanitize.models import pick_device

#: An image is *isolated* when this share of its neighbours (all of them) carries another label.
ISOLATED = 1.0
#: Smallest side of a square image to learn a trigger on (the models pool it by 2; digits are 8x8).
MIN_IMAGE_SIDE = 4

# The score in a class where a trigger was learnt (a7f3549): a band per kind of image, plus the trigger
# models' probability p in [0, 1], so the bands never overlap.
#: The seeds (at least ``seed_disagreement`` of their neighbours labelled otherwise): 2 + p.
SEED_BAND = 2.0
#: The images with at least ``min_disagreement`` labelled otherwise: 1 + p.
DISOWNED_BAND = 1.0
#: A disowned image is flagged when the models give even odds or more that it carries the trigger: the
#: models' own even odds, not a tuned cut (bench/RESULTS.md, "Input neighbours").
TRIGGER_ODDS = 0.5
#: Hence the class's threshold, 1.5: every seed, and the disowned images that carry the trigger.
TRIGGER_THRESHOLD = DISOWNED_BAND + TRIGGER_ODDS

# How the trigger models train (a7f3549, on Fashion-MNIST's WaNet 1 % run): Adam's default rate, steps
# of 128 images, and the class scored 4,096 images at a time.
LEARNING_RATE = 1e-3
BATCH = 128
SCORING_BATCH = 4096


class InputNeighbours(Detector):
    """k-NN label disagreement among the raw inputs, judged per class by its share of isolated images.

    It scores only the samples it was fitted on (each one's neighbours are the others, and the
    trigger models are trained on them): ``score_samples`` returns their scores (``training_scores_``)
    and raises :class:`~sanitize.errors.DetectionError` for any other data.

    The defaults were set on Fashion-MNIST (bench/RESULTS.md, "Input neighbours", and
    ``bench/probes/pixel_neighbours.py``); each entry names its evidence.

    Parameters
    ----------
    k : int, default 30
        Neighbours per sample. With 30 the most isolated clean class (shirts) sat at 2.0-2.5x the
        median class over 28 runs, against up to 2.8x with 20 (0e0c791).
    n_components : int or None, default 32
        The inputs are projected on their top principal components first (fit on at most
        ``fit_sample`` rows) for speed; None searches the raw inputs. 16 or 64 moved the plain rule's
        count by at most 0.06x on WaNet 1 % (bench/RESULTS.md, "Tried beside it").
    fit_sample : int, default 10000
        Rows the principal components are fit on (2a2f900, not tuned).
    false_alarm : float, default 0.2
        The share of clean datasets in which some class would be judged poisoned, were the classes'
        log shares of isolated images normal: each class's p-value times the number of classes is
        held to it. A high rate for a voter, and so stated: it decides only where no other voter
        judged a class poisoned, and the poisoned classes it is there for sit at p 0.014-0.17 on
        Fashion-MNIST (WaNet 1 % 0.024, WaNet 0.5 % 0.073, Adaptive-Blend 5 % 0.17), beside a log-share
        spread of 0.6 among its classes that no test at 5 % could pass them over. The clean classes
        measured sit at p 0.5 or more (emoji's 0.57-0.62, icons' 0.50-0.56, Fashion-MNIST's 0.96):
        bench/RESULTS.md, "Input neighbours' decision from the data".
    min_excess : int, default 10
        Fewest isolated images beyond what the other classes' mean share predicts: the fewest poisons
        the red team and the randomised attacks plant. When the other classes hold none, their spread
        is 0 and the Poisson count alone would call six odd images a poisoning.
    flag_disagreement : float, default 0.83
        In a poisoned class where no trigger is learnt, the share of the neighbours with another
        label from which a sample is flagged: 25 of 30, WaNet 1 % at recall 0.952 for 1.45x the
        poisons (0e0c791).
    learn_trigger : bool, default True
        In a poisoned class of square images (grey or colour), learn the trigger from the class's
        clearest poisons and flag by it (see ``score_samples``); otherwise, ``flag_disagreement``.
    seed_disagreement : float, default 0.95
        The clearest poisons, the trigger models' positives: at least this share of the neighbours
        labelled otherwise (29 or 30 of 30: on WaNet 1 %, 553-596 images, 85-90 % of them poisons).
        They are flagged.
    min_disagreement : float, default 0.5
        Below this share of neighbours labelled otherwise (half), an image is not flagged, trigger or not.
    clean_disagreement : float, default 0.3
        Images of the poisoned class with at most this share (9 of 30) join the negatives (with the
        images of every class not judged poisoned).
    min_seeds : int, default 20
        Fewest seeds to learn a trigger from; with fewer, ``flag_disagreement`` flags.
    negatives_per_seed : int, default 10
        Negatives drawn per seed.
    trigger_false_alarm : float, default 0.001
        The held-out test's level: the seeds' trigger, learnt on half of them, must put the other half
        above the class's own ordinary images (disagreement at most the class's median) at a one-sided
        Mann-Whitney p of at most this. A necessary condition, not a calibrated rate: where a clean
        class's look-alikes share a look (Fashion-MNIST's trousers like dresses) its p reaches 1e-14 to
        1e-37, and only the class test above stops it; the voter's stated rate stays ``false_alarm``.
    trigger_models, trigger_epochs, trigger_steps : int, default 2, 8 and 400
        Small CNNs trained (their logits are averaged), each for ``trigger_epochs`` epochs and at
        least ``trigger_steps`` steps of ``BATCH`` images (at 0.5 %'s ~350 seeds, 14 epochs). With
        these, WaNet 1 % was flagged at recall 0.970 for 1.24x the poisons, and 0.978 and 0.987 on two
        more draws (a7f3549, d08b93e); min_seeds and negatives_per_seed are from the same runs.
    device : str, default "auto"
        Where they train: ``auto`` (CUDA when present), ``cpu`` or ``cuda`` (``cuda:N``).
    known_poisoned : tuple of int, default ()
        Classes another voter already judged poisoned (given by :func:`sanitize.detect.run_detectors`
        to a fallback voter, through :func:`~sanitize.detect.make_detector`): the verdict defers to
        that voter there, so no trigger is learnt.
    contamination : float, optional
        Not needed. When given, the top ``1.5 * contamination`` of each class by disagreement.
    """

    name = "input_neighbours"
    input_space: ClassVar[bool] = True
    float32_ok = True

    def __init__(
        self,
        *,
        contamination: float | None = None,
        k: int = 30,
        n_components: int | None = 32,
        fit_sample: int = 10_000,
        false_alarm: float = 0.2,
        min_excess: int = 10,
        flag_disagreement: float = 0.83,
        learn_trigger: bool = True,
        seed_disagreement: float = 0.95,
        min_disagreement: float = 0.5,
        clean_disagreement: float = 0.3,
        min_seeds: int = 20,
        negatives_per_seed: int = 10,
        trigger_false_alarm: float = 0.001,
        trigger_models: int = 2,
        trigger_epochs: int = 8,
        trigger_steps: int = 400,
        device: str = "auto",
        known_poisoned: tuple[int, ...] = (),
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.k = k
        self.n_components = n_components
        self.fit_sample = fit_sample
        self.false_alarm = false_alarm
        self.min_excess = min_excess
        self.flag_disagreement = flag_disagreement
        self.learn_trigger = learn_trigger
        self.seed_disagreement = seed_disagreement
        self.min_disagreement = min_disagreement
        self.clean_disagreement = clean_disagreement
        self.min_seeds = min_seeds
        self.negatives_per_seed = negatives_per_seed
        self.trigger_false_alarm = trigger_false_alarm
        self.trigger_models = trigger_models
        self.trigger_epochs = trigger_epochs
        self.trigger_steps = trigger_steps
        self.device = device
        self.known_poisoned = known_poisoned

    _parameter_constraints = {
        **Detector._parameter_constraints,
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "fit_sample": [Interval(Integral, 1, None, closed="left")],
        "false_alarm": [Interval(Real, 0.0, 1.0, closed="neither")],
        "min_excess": [Interval(Integral, 0, None, closed="left")],
        "flag_disagreement": [Interval(Real, 0.0, 1.0, closed="right")],
        "learn_trigger": [bool],
        "seed_disagreement": [Interval(Real, 0.0, 1.0, closed="right")],
        "min_disagreement": [Interval(Real, 0.0, 1.0, closed="right")],
        "clean_disagreement": [Interval(Real, 0.0, 1.0, closed="left")],
        "min_seeds": [Interval(Integral, 1, None, closed="left")],
        "negatives_per_seed": [Interval(Integral, 1, None, closed="left")],
        "trigger_false_alarm": [Interval(Real, 0.0, 1.0, closed="neither")],
        "trigger_models": [Interval(Integral, 1, None, closed="left")],
        "trigger_epochs": [Interval(Integral, 1, None, closed="left")],
        "trigger_steps": [Interval(Integral, 0, None, closed="left")],
        # As ModelConfig.device.
        "device": [Pattern(r"auto|cpu|cuda(:\d+)?")],
        "known_poisoned": [TupleOf(Interval(Integral, None, None, closed="neither"))],
    }

    def _validate_params(self) -> None:
        super()._validate_params()
        owner = type(self).__name__
        if not self.clean_disagreement < self.min_disagreement <= self.seed_disagreement:
            raise ValueError(
                f"The disagreement parameters of {owner} must be ordered clean_disagreement < min_disagreement "
                f"<= seed_disagreement (a negative is never flagged, a seed always is). Got "
                f"{self.clean_disagreement!r}, {self.min_disagreement!r} and {self.seed_disagreement!r} instead."
            )
        if self.n_components is not None and self.fit_sample < self.n_components:
            raise ValueError(
                f"The 'fit_sample' parameter of {owner} must be at least n_components ({self.n_components}): "
                f"the principal components are fitted on that many rows. Got {self.fit_sample!r} instead."
            )

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        x_raw = np.asarray(features, dtype=np.float32)
        x = self._project(x_raw)
        _, neighbours = knn_search(x, min(self.k, len(x) - 1))
        self.disagreement_ = (labels[neighbours] != labels[:, None]).mean(axis=1)
        self.isolated_share_ = share_by_class(self.disagreement_ >= ISOLATED, labels)
        shares = np.array(list(self.isolated_share_.values()))
        self.median_share_ = float(np.median(shares))
        classes = list(self.isolated_share_)
        sizes = np.bincount(labels)[classes]
        counts = np.bincount(labels, weights=self.disagreement_ >= ISOLATED)[classes]
        self.p_value_: dict[int, float] = {}
        self.expected_: dict[int, float] = {}
        self.poisoned_: dict[int, bool] = {}
        for i, c in enumerate(classes):
            p, centre, _ = count_beyond_other_classes(counts, sizes, i)
            self.p_value_[c] = min(1.0, p * len(classes))
            self.expected_[c] = float(sizes[i] * np.exp(centre)) if np.isfinite(centre) else float("nan")
            excess = counts[i] - self.expected_[c]
            self.poisoned_[c] = bool(self.p_value_[c] <= self.false_alarm and excess >= self.min_excess)
        # In each poisoned class, learn what its clearest poisons share (the trigger) and score the rest.
        self.trigger_prob_: dict[int, np.ndarray] = {}
        self.trigger_seeds_: dict[int, int] = {}
        self.holdout_p_: dict[int, float] = {}
        shape = _image_shape(x_raw.shape[1])
        for c, poisoned in list(self.poisoned_.items()):
            # Where a voter already judged the class poisoned, this voter defers to it: no trigger to learn.
            learn = poisoned and self.learn_trigger and c not in self.known_poisoned
            learnt = self._learn_trigger(x_raw, labels, c, shape) if learn and shape is not None else None
            if learnt is not None:
                self.trigger_prob_[c], self.trigger_seeds_[c] = learnt
            if self.holdout_p_.get(c, 0.0) > self.trigger_false_alarm:
                # Its isolated images share nothing a model learns on half of them and finds on the others.
                self.poisoned_[c] = False
        self._fitted_samples = (features, labels.copy())

    def _learn_trigger(
        self, x: np.ndarray, labels: np.ndarray, label: int, shape: tuple[int, int, int]
    ) -> tuple[np.ndarray, int] | None:
        """Train small CNNs to tell the class's clearest poisons (its images with at least
        ``seed_disagreement`` of their neighbours labelled otherwise) from clean-looking images (other
        classes not judged poisoned, and the class's own images with at most ``clean_disagreement``).
        Both sides hold other classes' content, so what separates them is what the poisons add: the
        trigger. Returns the models' mean probability for each image of the class, and the seed count."""
        inside = labels == label
        seeds = np.flatnonzero(inside & (self.disagreement_ >= self.seed_disagreement))
        if len(seeds) < self.min_seeds:
            return None
        judged = np.isin(labels, [c for c, poisoned in self.poisoned_.items() if poisoned])
        pool = np.flatnonzero(~judged | (inside & (self.disagreement_ <= self.clean_disagreement)))
        rng = np.random.default_rng(self.random_state)
        negatives = rng.choice(pool, size=min(len(pool), self.negatives_per_seed * len(seeds)), replace=False)
        self.holdout_p_[label] = self._holdout_test(x, shape, seeds, negatives, inside, rng)
        if self.holdout_p_[label] > self.trigger_false_alarm:
            return None
        members = np.flatnonzero(inside)
        return self._trigger_prob(x, shape, seeds, negatives, members), len(seeds)

    def _holdout_test(
        self,
        x: np.ndarray,
        shape: tuple[int, int, int],
        seeds: np.ndarray,
        negatives: np.ndarray,
        inside: np.ndarray,
        rng: np.random.Generator,
    ) -> float:
        """Is there a trigger to learn? The seeds and negatives are split in two folds; models trained
        on one fold score the other fold's seeds and the class's own ordinary images (disagreement at
        most the class's median) they were not trained on. A trigger is one pattern: learnt on half the
        poisons, it finds the other half, and the class's own images do not carry it. Clean isolated
        images share only their class's look, which its ordinary images carry more. The one-sided
        Mann-Whitney p-value (held-out seeds above the ordinary images) is returned."""
        inside_dis = self.disagreement_[inside]
        ordinary = np.flatnonzero(inside & (self.disagreement_ <= np.median(inside_dis)))
        seed_fold = rng.permutation(len(seeds)) % 2
        negative_fold = rng.permutation(len(negatives)) % 2
        held = np.zeros(len(seeds))
        own_sum, own_count = np.zeros(len(ordinary)), np.zeros(len(ordinary))
        for fold in (0, 1):
            train_seeds, train_negatives = seeds[seed_fold == fold], negatives[negative_fold == fold]
            scored = np.concatenate([seeds[seed_fold != fold], ordinary])
            prob = self._trigger_prob(x, shape, train_seeds, train_negatives, scored)
            held[seed_fold != fold] = prob[: len(scored) - len(ordinary)]
            unseen = ~np.isin(ordinary, train_negatives)
            own_sum[unseen] += prob[len(scored) - len(ordinary) :][unseen]
            own_count[unseen] += 1
        own = own_sum[own_count > 0] / own_count[own_count > 0]
        if len(own) == 0:
            return 1.0
        return float(mannwhitneyu(held, own, alternative="greater").pvalue)

    def _trigger_prob(
        self, x: np.ndarray, shape: tuple[int, int, int], seeds: np.ndarray, negatives: np.ndarray, scored: np.ndarray
    ) -> np.ndarray:
        """Train ``trigger_models`` small CNNs on ``seeds`` (1) against ``negatives`` (0); their mean
        probability that each row of ``scored`` carries what the seeds share."""
        rows = np.concatenate([seeds, negatives])
        target = np.r_[np.ones(len(seeds)), np.zeros(len(negatives))].astype(np.float32)
        dev = pick_device(self.device)
        h, w, ch = shape

        def images(idx: np.ndarray) -> torch.Tensor:
            # Channels-last (NHWC, as the rows are stored): on the CPU, oneDNN's convolutions and
            # pooling run about 1.6x faster on it than on NCHW for this small net (20 -> 12 ms a step).
            nhwc = torch.from_numpy(x[idx].reshape(len(idx), h, w, ch)).permute(0, 3, 1, 2)
            return nhwc.to(dev).contiguous(memory_format=torch.channels_last)

        train_x, train_y = images(rows), torch.from_numpy(target).to(dev)
        pos_weight = torch.tensor(len(negatives) / len(seeds), device=dev)
        logits = np.zeros(len(scored))
        # At least trigger_steps steps: few seeds (a 0.5 % rate, a small dataset) get more epochs.
        epochs = max(self.trigger_epochs, math.ceil(self.trigger_steps / math.ceil(len(rows) / BATCH)))
        for m in range(self.trigger_models):
            torch.manual_seed(int(self.random_state) + m)
            order = torch.Generator().manual_seed(int(self.random_state) + m)
            net = _trigger_net(ch).to(dev, memory_format=torch.channels_last)
            opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
            net.train()
            for _ in range(epochs):
                perm = torch.randperm(len(rows), generator=order).to(dev)
                for start in range(0, len(rows), BATCH):
                    batch = perm[start : start + BATCH]
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        net(train_x[batch]).squeeze(1), train_y[batch], pos_weight=pos_weight
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                for start in range(0, len(scored), SCORING_BATCH):
                    part = scored[start : start + SCORING_BATCH]
                    logits[start : start + len(part)] += net(images(part)).squeeze(1).cpu().numpy()
        return 1.0 / (1.0 + np.exp(-logits / self.trigger_models))

    def _project(self, x: np.ndarray) -> np.ndarray:
        if self.n_components is None or x.shape[1] <= self.n_components:
            return x
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(self.random_state)
        rows = rng.choice(len(x), size=min(self.fit_sample, len(x)), replace=False)
        pca = PCA(n_components=self.n_components, svd_solver="randomized", random_state=self.random_state)
        pca.fit(x[rows])
        return np.ascontiguousarray(pca.transform(x), dtype=np.float32)

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Suspicion (n,) of each fitted sample: the share of its k nearest inputs that carry another
        label (0-1). Only the fitted samples: any other data raises ``DetectionError``.

        In a class where a trigger was learnt, two bands above it: ``SEED_BAND + p`` (2 + p) for the
        seeds (at least ``seed_disagreement`` of the neighbours labelled otherwise) and
        ``DISOWNED_BAND + p`` (1 + p) for the images with at least ``min_disagreement``, where ``p`` is
        the trigger models' probability. The class's threshold is ``TRIGGER_THRESHOLD`` (1.5): the
        seeds, and the images most neighbours disown that carry the trigger.
        """
        self._check_fitted()
        check_fitted_samples(self, features, labels, self._fitted_samples)
        scores = self.disagreement_.astype(np.float64)
        for c, prob in self.trigger_prob_.items():
            members = np.flatnonzero(labels == c)
            dis = self.disagreement_[members]
            band = np.where(
                dis >= self.seed_disagreement, SEED_BAND, np.where(dis >= self.min_disagreement, DISOWNED_BAND, 0.0)
            )
            scores[members] = np.where(band > 0, band + prob, dis)
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        share, expected, p = self.isolated_share_[label], self.expected_[label], self.p_value_[label]
        stats = f"{share:.1%} of its images have no input neighbour with its label"
        stats += (
            f", {expected:.1f} expected from the other classes, p {p:.2g} over the classes "
            f"(at most {self.false_alarm:g})"
            if np.isfinite(expected)
            else ", too few other classes to compare with"
        )
        held = self.holdout_p_.get(label)
        if held is not None:
            stats += (
                f"; a trigger learnt on half its images with >= {self.seed_disagreement:.0%} labelled otherwise scores "
                f"the other half above its ordinary images at p {held:.2g} (at most {self.trigger_false_alarm:g})"
            )
        if self.poisoned_[label] and label in self.trigger_prob_:
            return TRIGGER_THRESHOLD, (
                f"poisoned: {stats}; learnt its trigger from the {self.trigger_seeds_[label]} images with >= "
                f"{self.seed_disagreement:.0%} of {self.k} neighbours labelled otherwise, and flags them and the "
                f"images with >= {self.min_disagreement:.0%} labelled otherwise that carry it "
                f"(score >= {TRIGGER_THRESHOLD:g})"
            )
        if self.poisoned_[label]:
            thr = self.flag_disagreement
            return thr, f"poisoned: {stats}; flags images with >= {thr:.0%} of {self.k} neighbours labelled otherwise"
        return np.inf, f"clean: {stats}"


def _image_shape(d: int) -> tuple[int, int, int] | None:
    """(height, width, channels) of square grey or colour images flattened to ``d`` values, else None."""
    for channels in (1, 3):
        side = int(round(np.sqrt(d / channels)))
        if side >= MIN_IMAGE_SIDE and side * side * channels == d:
            return side, side, channels
    return None


def _trigger_net(channels: int) -> Any:
    """A small CNN with one logit: is the trigger on this image? Two 3x3 convolutions (16 and 32
    channels), a 7x7 max-pool and 64 hidden units: the smallest net tried that learnt WaNet's warp on
    Fashion-MNIST (a7f3549; a one-hidden-layer MLP reached AUROC 0.78-0.80 where it reached 0.96-0.98)."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(7),
        nn.Flatten(),
        nn.Linear(32 * 49, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
    )
