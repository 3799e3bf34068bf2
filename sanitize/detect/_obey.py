"""Where a confirmed trigger's group ends: ask the reference model about each image of the class.

The response test (:mod:`sanitize.detect._trigger`) says that a class's suspect group carries a
pattern the model obeys; the matched filter then ranks the class by closeness to that group. Where
its scores part the group with an empty gap (a valley), the gap is the cut. Where they do not (a
4x4 noise patch at alpha 0.79 averaged into 16x16 inputs, bench/RESULTS.md issue 15 "Tenth step":
the group's valley 0.78, though the filter's first 125 ranks hold 104 of the 135 poisons) there is
no gap to cut at, and the valley rule drops a group the model has confirmed.

The model can say where the group ends. A poison is an image of another class that carries the
trigger: take the group's pattern (its mean image less the rest of the class's, the pattern the
response test stamped) away from it and the model no longer calls it the class. A clean image of
the class is the class without the pattern. So each image of the class is asked once, with the
pattern subtracted: did it leave the class? (On that run: 56 of the 135 poisons left, none of the
498 clean images did. A trained model has also learnt many poisons by heart, so fewer leave than
the attack success rate would say; the answers mark where the poisons are, not each one.)

Along the filter's ranking the answers are then two runs of coin flips: the group's, at a high rate,
then the rest's, at a low one. The cut is the maximum-likelihood change point between two Bernoulli
rates (the top run's rate the higher), and it stands only when Fisher's exact test (one-sided) of
the top run against the rest, Bonferroni over the ``m - 1`` cuts it was chosen among, is at most the
stated false-alarm rate: no new threshold. With no image leaving the class there is no cut, and the
group is dropped as before.

The model also says which side of the class the trigger is on. A matched filter grown from a few
images can take the class's clean majority as its group when the poisons are a quarter or more of
the class (a blend at 3.8 % of 9 classes of emoji: the filter's group was the 221 clean images, the
77 left held all 75 poisons). The two sides' patterns are opposite; the model obeys the trigger's
sign. So the rest's pattern, scaled to the group's strength, is stamped on the same probe images,
and the rest is taken instead where it turns more of them (Fisher's exact test, one-sided, at the
stated false-alarm rate; otherwise the group stands).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import fisher_exact

from sanitize.detect._response import Responder, _patterns, prober

#: Images read and asked at a time (a memory bound for large images).
CHUNK = 2048


def leaves_class(responder: Responder, rows: np.ndarray, pattern: np.ndarray, label: int) -> np.ndarray:
    """Per training row of ``rows``: the model calls the image ``label``, and with ``pattern``
    (pixel units) subtracted it does not. (len(rows),) bool."""
    out = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), CHUNK):
        at = rows[start : start + CHUNK]
        images = responder.images(at)
        before = responder.predict(images)
        taken = np.clip(images.astype(np.float32) - pattern, 0.0, 255.0).round().astype(np.uint8)
        out[start : start + len(at)] = (before == label) & (responder.predict(taken) != label)
    return out


def _log_likelihood(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Bernoulli log-likelihood of ``x`` successes in ``n`` at their own rate (0 log 0 = 0)."""
    p = x / np.maximum(n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(x > 0, x * np.log(np.where(p > 0, p, 1.0)), 0.0)
        b = np.where(n - x > 0, (n - x) * np.log(np.where(p < 1, 1 - p, 1.0)), 0.0)
    return a + b


def change_point(scores: np.ndarray, answers: np.ndarray, least: int, false_alarm: float) -> tuple[int, float] | None:
    """The number ``k`` of top-scored samples (higher score first) whose ``answers`` (bool) run at a
    higher rate than the rest's: the maximum-likelihood change point of two Bernoulli rates, ``k`` at
    least ``least`` and at most ``m - 1``, and its Bonferroni-corrected one-sided Fisher p. None when
    no such ``k`` has the top run's rate above the rest's, or the corrected p exceeds ``false_alarm``."""
    m = len(scores)
    if m < 2 or least >= m:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(answers[order].astype(np.int64))
    total = int(hits[-1])
    k = np.arange(1, m)
    top = hits[:-1]
    fit = _log_likelihood(top, k) + _log_likelihood(total - top, m - k)
    fit[(k < least) | (top * (m - k) <= (total - top) * k)] = -np.inf
    if not np.isfinite(fit).any():
        return None
    best = int(k[int(np.argmax(fit))])
    x, rest = int(hits[best - 1]), total - int(hits[best - 1])
    p = float(fisher_exact([[x, best - x], [rest, m - best - rest]], alternative="greater")[1])
    p = min(1.0, p * (m - 1))
    return (best, p) if p <= false_alarm else None


def cut_by_answers(
    responder: Responder,
    labels: np.ndarray,
    rows: np.ndarray,
    members: np.ndarray,
    scores: np.ndarray,
    least: int,
    rng: np.random.Generator,
    false_alarm: float,
) -> tuple[np.ndarray, float, tuple[int, int, float]] | None:
    """A group (``members``, positions in its class's training ``rows``, ranked by ``scores``) cut
    where the model's answers change: each image of the class is asked whether it leaves the class
    with the group's pattern taken away (:func:`leaves_class`), and the group is the top ``k``,
    ``k`` the answers' :func:`change_point`. Returns (the new members, the cut on ``scores``, (images
    that left, images asked, p)), or None."""
    label = int(labels[rows[0]])
    pattern = _patterns(responder, labels, {label: rows[members]}, rng)[label]
    answers = leaves_class(responder, rows, pattern, label)
    found = change_point(scores, answers, least, false_alarm)
    if found is None:
        return None
    k, p = found
    s = np.sort(scores)[::-1]
    cut = (float(s[k - 1]) + float(s[k])) / 2
    return np.flatnonzero(scores >= cut), cut, (int(answers.sum()), len(rows), p)


def other_side(
    responder: Responder,
    labels: np.ndarray,
    rows: np.ndarray,
    members: np.ndarray,
    rng: np.random.Generator,
    false_alarm: float,
) -> tuple[float, float, float] | None:
    """Whether the rest of the class (its training ``rows`` less the positions ``members``) carries
    the pattern the model obeys, more than the group does: both patterns (each side's mean image less
    the other's), the rest's scaled to the group's L2 norm, stamped on the same probe images of other
    classes; (the group's rate, the rest's rate, Fisher's one-sided p) where the rest turns more at
    p <= ``false_alarm``, else None."""
    rest = np.setdiff1d(np.arange(len(rows)), members)
    if len(rest) == 0 or len(members) == 0:
        return None
    label = int(labels[rows[0]])
    keyed = {0: label, 1: label}
    sides = _patterns(responder, labels, {0: rows[members], 1: rows[rest]}, rng, keyed_by=keyed)
    if len(sides) < 2:
        return None
    own, other = sides[0], sides[1]
    norm = float(np.linalg.norm(other))
    if norm > 0:
        other = other * (float(np.linalg.norm(own)) / norm)
    flips = prober(responder, labels, rng)
    (x, n), (xo, no) = flips(label, own), flips(label, other)
    if n == 0 or no == 0 or xo * n <= x * no:
        return None
    p = float(fisher_exact([[xo, no - xo], [x, n - x]], alternative="greater")[1])
    return (x / n, xo / no, p) if p <= false_alarm else None
