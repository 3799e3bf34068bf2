"""One verdict per sample from several detectors' results.

The *voters* decide: a sample is quarantined when any voter flags it. A *fallback* voter decides
only in the classes that no voter judged poisoned: it covers what the voters cannot see, and where
they found a poisoning, their border stands. Every other detector's flags are kept as evidence in
the sample's reason, so a reviewer sees who else agreed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from sanitize.detect.base import DetectorResult, share_by_class
from sanitize.errors import DetectionError
from sanitize.store import atomic_write_json, atomic_write_table


@dataclass(frozen=True)
class Verdict:
    """The run's decision for every sample.

    Attributes
    ----------
    suspicion_score : ndarray (n,) float64
        The highest score among the voters that judged the sample's class poisoned (the first
        voter's score where none did); higher = more suspicious. The scores of classes judged
        poisoned are lifted by one constant where needed, so that they rank above every class
        judged clean.
    quarantine : ndarray (n,) bool
        True where a voter flagged the sample.
    results : dict[str, DetectorResult]
        Every detector's result, voters and evidence.
    voters : tuple[str, ...]
        Every detector that decides, the fallback voters last.
    estimated_rate : dict[int, float]
        Per class, the share quarantined: the run's estimate of the poison rate.
    fallback : tuple[str, ...]
        The voters that decide only in classes no other voter judged poisoned.
    """

    suspicion_score: np.ndarray
    quarantine: np.ndarray
    results: dict[str, DetectorResult]
    voters: tuple[str, ...]
    estimated_rate: dict[int, float]
    fallback: tuple[str, ...] = ()

    def flagged_by(self) -> list[str]:
        """Per sample, the comma-separated detectors that flagged it (voters first)."""
        names = list(self.voters) + [n for n in self.results if n not in self.voters]
        flags = np.stack([self.results[n].flags for n in names], axis=1)
        return [",".join(n for n, f in zip(names, row, strict=True) if f) for row in flags]

    def reasons(self, labels: np.ndarray, only: np.ndarray | None = None) -> list[str]:
        """A reviewer's account of each sample (or of the samples in ``only``): which detectors flagged
        it, its score against the threshold, and its rank within its class."""
        idx = np.arange(len(labels)) if only is None else np.flatnonzero(only)
        class_sizes = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)}
        ranks = {name: r.ranks(labels) for name, r in self.results.items()}
        order = list(self.voters) + [n for n in self.results if n not in self.voters]
        out = []
        for i in idx:
            c = int(labels[i])
            parts = []
            for name in order:
                r = self.results[name]
                if not r.flags[i] and name not in self.voters:
                    continue
                verb = "flagged" if r.flags[i] else "not flagged"
                thr = r.thresholds.get(c, np.inf)
                thr_s = "no threshold (class judged clean)" if not np.isfinite(thr) else f"threshold {thr:.3g}"
                parts.append(
                    f"{name} {verb}: score {r.scores[i]:.3g} vs {thr_s}, "
                    f"rank {ranks[name][i]}/{class_sizes[c]} in class {c}"
                )
            out.append("; ".join(parts))
        return out

    def to_table(self, sample_ids: list[str] | pa.Array, labels: np.ndarray) -> pa.Table:
        """Per-sample verdict keyed by ``sample_id``, joined with every detector's columns."""
        table = pa.table(
            {
                "sample_id": sample_ids,
                "label": pa.array(labels, pa.int64()),
                "suspicion_score": pa.array(self.suspicion_score, pa.float64()),
                "quarantine": pa.array(self.quarantine, pa.bool_()),
                "flagged_by": pa.array(self.flagged_by(), pa.string()),
            }
        )
        for r in self.results.values():
            cols = r.to_table(sample_ids, labels)
            for name in cols.column_names[1:]:
                table = table.append_column(name, cols.column(name))
        return table


def combine(
    results: dict[str, DetectorResult],
    voters: tuple[str, ...],
    labels: np.ndarray,
    fallback: tuple[str, ...] = (),
) -> Verdict:
    """Combine detector results: quarantine what any voter flags, and what a fallback voter flags in a
    class no voter judged poisoned; score = the highest score of a voter that judged the sample's
    class poisoned (the first voter's where none did)."""
    if not voters:
        raise DetectionError("no voting detector: a run needs at least one detector that decides")
    missing = [v for v in voters + fallback if v not in results]
    if missing:
        raise DetectionError(f"voting detector(s) {missing} produced no result; the data cannot be passed as clean")
    n = len(labels)
    for name, r in results.items():
        if r.scores.shape != (n,) or r.flags.shape != (n,):
            raise DetectionError(f"detector {name} scored {r.scores.shape} samples, expected {n}")
    results = dict(results)
    judged_by = {v: results[v].judged_poisoned() for v in voters}
    found = set().union(*judged_by.values())
    for f in fallback:
        results[f] = _defer(results[f], found, labels, voters)
        judged_by[f] = results[f].judged_poisoned()
    deciders = voters + tuple(f for f in fallback if f not in voters)
    # Voters' scores are on their own scales, and a voter's score in a class it judged clean only
    # ranks samples along a split it rejected. So a voter's score counts in the classes it judged
    # poisoned (a finite threshold); in classes no voter judged poisoned, the first voter's ranks.
    stacked = [np.where(np.isin(labels, sorted(judged_by[v])), results[v].scores, -np.inf) for v in deciders]
    score = np.max(np.stack(stacked), axis=0)
    judged = np.isfinite(score)
    score = np.where(judged, score, results[voters[0]].scores)
    if judged.any() and not judged.all():
        # A sample of a class judged poisoned ranks above every sample of a class judged clean: the
        # deciders' scales differ (a fallback's share in [0, 1], a voter's standard deviations), and a
        # reviewer working down the list, or a budget taking the top k, should meet them first.
        lift = float(score[~judged].max() - score[judged].min())
        if lift >= 0:
            score = np.where(judged, score + lift + 1.0, score)
    quarantine = np.any(np.stack([results[v].flags for v in deciders]), axis=0)
    rate = {int(c): float(quarantine[labels == c].mean()) for c in np.unique(labels)}
    return Verdict(score, quarantine, results, deciders, rate, tuple(fallback))


def _defer(result: DetectorResult, found: set[int], labels: np.ndarray, voters: tuple[str, ...]) -> DetectorResult:
    """A fallback voter's result with its flags withdrawn in the classes a voter judged poisoned."""
    taken = sorted(result.judged_poisoned() & found)
    if not taken:
        return result
    flags = result.flags & ~np.isin(labels, taken)
    thresholds = {c: (np.inf if c in taken else t) for c, t in result.thresholds.items()}
    notes = dict(result.notes)
    for c in taken:
        notes[c] = f"{notes.get(c, '')}; defers to {' or '.join(voters)}, which judged the class poisoned"
    return replace(
        result, flags=flags, thresholds=thresholds, notes=notes, estimated_rate=share_by_class(flags, labels)
    )


def write_verdict(
    run_dir: Path, sample_ids: list[str], labels: np.ndarray, verdict: Verdict, seconds: dict[str, float]
) -> Path:
    """Write a run's verdict: ``verdict.parquet`` (one row per sample, keyed by ``sample_id``, with every
    detector's columns and, for quarantined samples, the reviewer's reason) and ``detection.json``
    (voters, estimated rates, and each detector's flags, seconds, parameters, notes and thresholds).

    The one writer of these records, for the pipeline's detect stage and for benchmarks that build a
    run from synthetic scores. Returns the path of ``verdict.parquet``.
    """
    table = verdict.to_table(sample_ids, labels)
    reasons = np.array([""] * len(sample_ids), dtype=object)
    reasons[verdict.quarantine] = verdict.reasons(labels, verdict.quarantine)
    table = table.append_column("reason", pa.array(reasons.tolist(), pa.string()))
    out = run_dir / "verdict.parquet"
    atomic_write_table(out, table)
    atomic_write_json(
        run_dir / "detection.json",
        {
            "voters": [v for v in verdict.voters if v not in verdict.fallback],
            "fallback_voters": list(verdict.fallback),
            "estimated_rate": {str(k): v for k, v in verdict.estimated_rate.items()},
            "estimated_rate_overall": float(verdict.quarantine.mean()),
            "detectors": {
                n: {
                    "flagged": int(r.flags.sum()),
                    "seconds": seconds[n],
                    "params": r.params,
                    "notes": {str(k): v for k, v in r.notes.items()},
                    "thresholds": {str(k): v for k, v in r.thresholds.items()},
                }
                for n, r in verdict.results.items()
            },
        },
    )
    return out
