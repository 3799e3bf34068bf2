"""Detection in rounds: fit, score and flag, then again on the samples no earlier round flagged.

A detector whose yardstick a large poisoning distorts (whitened clustering: one cluster of a class
split off, the rest still holding a second poisoning) finds what is left once the first finding is
set aside. Only classes an earlier round flagged may be flagged later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sanitize.detect.base import DetectorResult, check_features, share_by_class
from sanitize.errors import DetectionError


def detect_in_rounds(
    detector: Any, features: np.ndarray, labels: np.ndarray, prepare: Callable[[np.ndarray], None]
) -> DetectorResult:
    """Fit, score and flag ``detector`` in rounds (its ``max_rounds``; one with a ``contamination``),
    each on the samples no earlier round flagged; ``prepare(rest)`` is called before each round's fit
    with the rows it is fitted on, for the detector's side inputs.

    A sample's score is from the round that flagged it, else the first; thresholds, notes and fitted
    attributes are the first round's (later findings appended); ``detector.rounds_``: each round's flags.
    """
    detector._validate_params()  # before max_rounds sets the loop
    features, labels = check_features(features, labels, keep_float32=detector.float32_ok)
    n = len(labels)
    scores = np.zeros(n, dtype=np.float64)
    flags = np.zeros(n, dtype=bool)
    thresholds: dict[int, float] = {}
    notes: dict[int, str] = {}
    log: list[dict[int, int]] = []
    detector.rounds_ = log
    rest = np.arange(n)
    first: dict[str, object] = {}
    classes = np.unique(labels)
    found: set[int] = set()  # classes some round has flagged
    # With a contamination budget the flags are capped once, over all classes: one round.
    rounds = 1 if detector.contamination is not None else detector.max_rounds
    for round_ in range(rounds):
        sub_labels = labels[rest]
        left, counts = np.unique(sub_labels, return_counts=True)
        if len(left) < len(classes) or counts.min() < 2:
            break  # a class was flagged whole: nothing left to measure it against
        prepare(rest)
        detector.fit(features[rest], sub_labels)
        s = detector.training_scores_
        f, thr, nt = detector.flag(s, sub_labels)
        if round_ > 0:
            # A later round flags only in classes an earlier round flagged: setting one class's poisons
            # aside changes every other class's yardstick (on a digits run, a clean class of "1"s then
            # looked poisoned in round 2).
            earlier = np.isin(sub_labels, sorted(found))
            for c in np.unique(sub_labels[f & ~earlier]):
                c = int(c)
                notes[c] = (
                    f"{notes.get(c, '')}; round {round_ + 1} judged it poisoned only once other classes' "
                    f"flags were set aside ({nt[c]}), so it flags nothing"
                )
            f &= earlier
        if round_ == 0:
            scores[:] = s
            thresholds, notes = thr, nt
            first = {k: v for k, v in vars(detector).items() if k.endswith("_") and k != "rounds_"}
        else:
            scores[rest[f]] = s[f]
            for c in np.unique(sub_labels[f]):
                c = int(c)
                if not np.isfinite(thresholds.get(c, np.inf)):
                    thresholds[c] = thr[c]
                notes[c] = f"{notes.get(c, '')}; round {round_ + 1}, on the samples left: {nt[c]}"
        log.append({int(c): int(k) for c, k in zip(*np.unique(sub_labels[f], return_counts=True), strict=True)})
        if not f.any():
            break
        flags[rest[f]] = True
        found.update(int(c) for c in np.unique(sub_labels[f]))
        rest = rest[~f]
    # The fitted attributes describe the first round, on all samples; later rounds are in ``rounds_``.
    vars(detector).update(first)
    if not np.isfinite(scores).all():
        raise DetectionError(f"detector {detector.name} produced invalid scores")
    rate = share_by_class(flags, labels)
    return DetectorResult(detector.name, scores, flags, thresholds, rate, detector.get_params(), notes)
