"""Figures of a red-team run: detection quality against the ground truth, accuracy, attack success."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class DetectionFigures:
    """Detection against the ground truth.

    recall: poisons quarantined / poisons; precision: poisons quarantined / quarantined;
    fpr: clean samples quarantined / clean samples; auroc: of the suspicion score (higher =
    more suspicious) for telling poisons from clean samples (None when one side is empty).
    """

    n_poison: int
    quarantined: int
    recall: float | None
    precision: float | None
    fpr: float
    auroc: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def detection_figures(is_poison: np.ndarray, flagged: np.ndarray, scores: np.ndarray) -> DetectionFigures:
    """Compare ``flagged`` (n,) bool and ``scores`` (n,) with the ground truth ``is_poison`` (n,) bool."""
    is_poison = np.asarray(is_poison, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    n_poison = int(is_poison.sum())
    n_clean = int((~is_poison).sum())
    tp = int((flagged & is_poison).sum())
    fp = int((flagged & ~is_poison).sum())
    recall = tp / n_poison if n_poison else None
    precision = tp / (tp + fp) if (tp + fp) else None
    fpr = fp / n_clean if n_clean else 0.0
    auroc = float(roc_auc_score(is_poison, scores)) if 0 < n_poison < len(is_poison) else None
    return DetectionFigures(n_poison, int(flagged.sum()), recall, precision, fpr, auroc)
