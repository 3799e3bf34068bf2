"""Per-source analysis: does one supplier hold more quarantined samples than its size predicts?

If quarantine did not depend on the source, the number of flagged samples among a source's ``n``
samples would follow a hypergeometric law (``n`` drawn without replacement from ``N`` samples of
which ``Q`` are flagged). A source is named suspicious when its one-sided p-value, Bonferroni-
corrected over the sources, is below ``alpha`` and its flagged share is at least ``min_ratio``
times the flagged share of all the *other* sources. (Against the overall share, two bad suppliers
that hold half of the data raise the overall share so much that neither reaches twice it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import hypergeom


@dataclass(frozen=True)
class SourceVerdict:
    """One source's share of the quarantine against what its size predicts."""

    source: str
    samples: int
    quarantined: int
    expected: float
    share: float
    ratio: float  # its flagged share over the other sources' (with half a sample added to theirs)
    p_value: float
    suspicious: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def source_verdicts(
    sources: Sequence[str],
    quarantined: np.ndarray,
    *,
    alpha: float = 0.01,
    min_ratio: float = 2.0,
    min_count: int = 3,
) -> list[SourceVerdict]:
    """Test every source; most suspicious (smallest p-value) first.

    Parameters
    ----------
    sources : sequence of str (n,)
        Each training sample's source.
    quarantined : ndarray (n,) bool
        The run's verdict.
    alpha : float
        Family-wise significance level (Bonferroni over the sources).
    min_ratio : float
        Smallest flagged share, relative to the other sources' flagged share, for a source to be named.
    min_count : int
        Smallest number of flagged samples for a source to be named.
    """
    src = np.asarray(sources, dtype=object)
    q = np.asarray(quarantined, dtype=bool)
    if src.shape != q.shape:
        raise ValueError(f"{len(src)} sources but {len(q)} verdicts")
    total, flagged = len(q), int(q.sum())
    names = sorted(set(src.tolist()))
    overall = flagged / total if total else 0.0
    out = []
    for name in names:
        m = src == name
        n, k = int(m.sum()), int(q[m].sum())
        expected = n * overall
        # P(X >= k) for X ~ Hypergeom(total, flagged, n); 1.0 when nothing is flagged anywhere.
        p = float(hypergeom.sf(k - 1, total, flagged, n)) if flagged else 1.0
        share = k / n if n else 0.0
        # Half a sample added to the others' count keeps the ratio finite when they have no flag.
        rest = (flagged - k + 0.5) / (total - n + 1)
        ratio = share / rest
        suspicious = len(names) > 1 and p * len(names) < alpha and ratio >= min_ratio and k >= min_count
        out.append(SourceVerdict(name, n, k, expected, share, ratio, p, suspicious))
    return sorted(out, key=lambda v: (v.p_value, v.source))
