"""Model response: is a suspect group's pattern a trigger that the reference model obeys?

A backdoor is a small change to an input that takes images of every class to the target. A
poisoned group of a class carries it; a natural group of a class (renders of one icon, a kind of
sandal) differs from the rest of its class by its look, a large change that turns few images of
other classes. So stamp the group's pattern (its mean image less the mean of the rest of its class)
on images of the other classes, and count how many the reference model now calls the group's
class. The null is the dataset's own: each other class's own suspect group, its pattern scaled to
the same strength (L2 norm), stamped the same way on images that are not of that class. A group
whose pattern is a trigger turns far more of them than any natural group does at that strength.

On the runs of the transfer suite (bench/RESULTS.md, issue 15, "Fifth step"), the poison groups'
patterns turned 19-92 % of other classes' images; the natural groups that input gap's training-loss
route had passed turned 0-16 %, and at matched strength every one of them turned no more than some
other class's natural group did. A trigger the model did not learn (SIG at 5 % on 3 classes of
shapes, ASR 4 %) turns nothing: this test cannot see it, and such a poisoning left no backdoor in
the model.

It is the model-behaviour family of detection signals (trigger synthesis from the suspect samples,
in the spirit of the defences that estimate a trigger and measure its attack success), taken here
only as a test of a group other evidence has already found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import fisher_exact

#: Images of other classes a pattern is stamped on: a flip rate of 5 % is then measured to about 1 point.
PROBE_IMAGES = 400
#: Most images of a class's rest averaged into its mean, all classes together (memory bound).
REST_BUDGET = 20_000


class Responder(Protocol):
    """The reference model and the training images it was trained on, in the features' row order."""

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The training images at ``rows``: (m, H, W, C) uint8."""
        ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's predicted class (m,) for (m, H, W, C) uint8 images."""
        ...


@dataclass(frozen=True)
class ResponseTest:
    """The response test of one class's suspect group."""

    rate: float
    flips: int
    tried: int
    #: Per other class, the share its natural group's pattern turned at the same strength.
    others: dict[int, float]
    #: Fisher's exact test against the other class whose group turned the most (one-sided).
    p: float
    passed: bool
    #: Where the group tested was a candidate that other evidence then grew or cut: the same test of
    #: the group so parted (:func:`sanitize.detect._trigger.trigger_groups`).
    parted: ResponseTest | None = None

    def describe(self) -> str:
        rivals = f"at most {max(self.others.values()):.1%}" if self.others else "none measured"
        out = (
            f"its pattern turns {self.rate:.1%} of {self.tried} images of other classes to the class "
            f"(rival groups at the same strength: {rivals}; p {self.p:.2g})"
        )
        if self.parted is not None:
            then = self.parted
            verdict = "carries it" if then.passed else "does not carry it"
            rivals = f"rivals at most {max(then.others.values()):.1%}; " if then.others else ""
            out += f"; the group it parted {verdict}: {then.rate:.1%} of {then.tried} ({rivals}p {then.p:.2g})"

        return out


def _patterns(
    responder: Responder,
    labels: np.ndarray,
    groups: dict[int, np.ndarray],
    rng: np.random.Generator,
    keyed_by: dict[int, int] | None = None,
) -> dict[int, np.ndarray]:
    """Each group's pattern: the group's mean image less the mean of (a sample of) the rest of its
    class, in pixel units (float32). ``groups`` holds global row indices, keyed by class, or by any
    key with ``keyed_by`` giving each key's class."""
    per_class = max(50, REST_BUDGET // max(len(groups), 1))
    wanted: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c, members in groups.items():
        label = c if keyed_by is None else keyed_by[c]
        rest = np.setdiff1d(np.flatnonzero(labels == label), members)
        if len(rest) > per_class:
            rest = np.sort(rng.choice(rest, per_class, replace=False))
        wanted[c] = (members, rest)
    rows = np.unique(np.concatenate([np.concatenate(v) for v in wanted.values()]))
    images = responder.images(rows).astype(np.float32)
    at = {int(r): i for i, r in enumerate(rows)}
    out = {}
    for c, (members, rest) in wanted.items():
        if len(members) == 0 or len(rest) == 0:
            continue
        g = images[[at[int(r)] for r in members]].mean(axis=0)
        out[c] = g - images[[at[int(r)] for r in rest]].mean(axis=0)
    return out


def _flips(
    responder: Responder, probe: np.ndarray, base: np.ndarray, pattern: np.ndarray, label: int
) -> tuple[int, int]:
    """How many of the probe images not already called ``label`` turn to it with ``pattern`` added."""
    keep = base != label
    if not keep.any():
        return 0, 0
    stamped = np.clip(probe[keep].astype(np.float32) + pattern, 0.0, 255.0).round().astype(np.uint8)
    return int((responder.predict(stamped) == label).sum()), int(keep.sum())


def prober(responder: Responder, labels: np.ndarray, rng: np.random.Generator) -> Callable[..., tuple[int, int]]:
    """``flips(c, pattern, count=PROBE_IMAGES, start=0)``: how many of probe images ``start`` to
    ``count`` not of class ``c`` (drawn once from the training set, in one order, and not already
    called ``c``) ``pattern`` turns to ``c``; counts over ``[0, a)`` and ``[a, b)`` add up to ``[0, b)``."""
    size = min(len(labels), PROBE_IMAGES * 2)
    probe_rows = np.sort(rng.choice(len(labels), size, replace=False))
    # Read in row order, used in a random one: the first images of the probe (the screening's) must
    # not all come from the first classes of a dataset stored class by class.
    order = rng.permutation(size)
    probe = responder.images(probe_rows)[order]
    base = responder.predict(probe)
    probe_labels = labels[probe_rows][order]

    def flips(c: int, pattern: np.ndarray, count: int = PROBE_IMAGES, start: int = 0) -> tuple[int, int]:
        mask = probe_labels != c
        return _flips(responder, probe[mask][start:count], base[mask][start:count], pattern, c)

    return flips


def response_tests(
    responder: Responder,
    labels: np.ndarray,
    groups: dict[int, np.ndarray],
    tested: list[int],
    rng: np.random.Generator,
    false_alarm: float,
) -> dict[int, ResponseTest]:
    """For each ``tested`` class, whether its group (``groups[c]``, global rows) carries a pattern the
    model obeys far more than the other classes' groups (``groups[o]``) do at the same strength:
    Fisher's exact test, one-sided, against each other class, and the largest p (an intersection-union
    test, at level ``false_alarm`` without a correction) must be at most ``false_alarm``. With no other
    class's group to compare with, the test does not pass. The patterns and the probe images are read
    once for all the tested classes."""
    if not tested:
        return {}
    patterns = _patterns(responder, labels, groups, rng)
    flips = prober(responder, labels, rng)

    out = {}
    for label in tested:
        if label not in patterns:
            out[label] = ResponseTest(0.0, 0, 0, {}, 1.0, False)
            continue
        own = patterns[label]
        strength = float(np.linalg.norm(own))
        x, n = flips(label, own)
        others: dict[int, float] = {}
        p = 1.0 if x == 0 or n == 0 else 0.0
        for o, pattern in patterns.items():
            if o == label:
                continue
            norm = float(np.linalg.norm(pattern))
            xo, no = flips(o, pattern * (strength / norm) if norm > 0 else pattern)
            others[o] = xo / no if no else 0.0
            if n and no:
                p = max(p, float(fisher_exact([[x, n - x], [xo, no - xo]], alternative="greater")[1]))
        passed = bool(others) and n > 0 and p <= false_alarm
        out[label] = ResponseTest(x / n if n else 0.0, x, n, others, p if others else 1.0, passed)
    return out


class SubsetResponder:
    """A :class:`Responder` over a subset of the training rows (``rows``, in the subset's order): a
    detector that works in rounds on the samples left sees row ``i`` of the subset as ``rows[i]``."""

    def __init__(self, responder: Responder, rows: np.ndarray):
        self.responder, self.rows = responder, np.asarray(rows, dtype=np.int64)

    def images(self, rows: np.ndarray) -> np.ndarray:
        return self.responder.images(self.rows[np.asarray(rows, dtype=np.int64)])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.responder.predict(images)
