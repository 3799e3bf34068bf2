"""The built-in default dataset: scikit-learn's handwritten digits (1,797 8x8 images), offline."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sanitize.ingest.core import IngestReport, arrays_to_batches, ingest_batches
from sanitize.ingest.readers import RawBatch
from sanitize.workspace import Workspace

DEMO_SOURCE = "sklearn-digits"


def digits_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (N, 8, 8, 1) uint8 (0..16 scaled to 0..255), split 80/20 stratified by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=seed, stratify=digits.target
    )
    return x_tr, y_tr, x_te, y_te


def ingest_demo(ws: Workspace, dataset: str) -> IngestReport:
    """Ingest the digits into ``dataset`` as source ``sklearn-digits`` (idempotent)."""
    x_tr, y_tr, x_te, y_te = digits_arrays()

    def batches() -> Iterator[RawBatch]:
        yield from arrays_to_batches(x_tr, y_tr, "train")
        yield from arrays_to_batches(x_te, y_te, "test")

    return ingest_batches(
        ws.catalog,
        ws.store,
        dataset=dataset,
        batches=batches(),
        source=DEMO_SOURCE,
        uri="sklearn.datasets.load_digits",
        fmt="builtin",
        actor="demo",
    )
