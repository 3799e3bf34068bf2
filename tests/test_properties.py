"""Invariants over random sequences of what users do to a store (Hypothesis).

Ingest a source (new data or the same again), run a cleaning (with or without a red team), decide on
a pending entry, copy a clean version out, collect debris: after every step ``verify`` finds nothing
wrong, and no byte of any version published before the step has changed. Tiny data (36 training
images of 8x8 in 3 classes) and one-epoch models keep an example to a second or two.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sanitize.catalog import QuarantineEntry, Run, Version
from sanitize.cleanup import collect, find_debris
from sanitize.config import DetectConfig, ModelConfig, RedTeamConfig, RunConfig, Settings
from sanitize.export import copy_out
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning
from sanitize.review import decide
from sanitize.verify import verify
from sanitize.workspace import Workspace

DATASET = "tiny"
CLASSES = 3
# One cheap detector with a fixed budget, so that runs on 36 images flag something to decide on.
DETECT = DetectConfig(detectors=("spectral",), voters=("spectral",), fallback_voters=(), contamination=0.1)


def tiny_images(seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images: a bright vertical band whose place is the class, plus noise."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(CLASSES):
        base = np.zeros((8, 8), np.int64)
        base[:, 2 * c : 2 * c + 3] = 200
        for _ in range(per_class):
            x.append(np.clip(base + rng.integers(0, 40, (8, 8)), 0, 255).astype(np.uint8))
            y.append(c)
    return np.array(x), np.array(y)


def published_bytes(ws: Workspace) -> dict[str, str]:
    """SHA-256 of every published version's manifest and files, and of each export's manifest.json."""
    home = ws.store.home
    out: dict[str, str] = {}
    with ws.catalog.session() as s:
        versions = s.execute(select(Version.id, Version.dataset, Version.manifest)).all()
    for vid, dataset, manifest in versions:
        for path in [home / manifest, *ws.store.files(ws.store.manifest(dataset, vid))]:
            out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    for path in (home / "exports").rglob("manifest.json"):
        out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Player:
    """Plays one step at a time on a fresh store."""

    def __init__(self, root: Path):
        self.root = root
        self.ws = Workspace(Settings(home=root / "home", catalog_url=None))
        self.outputs = 0

    def ingest(self, source: str, seed: int) -> None:
        x, y = tiny_images(seed, 12)
        xt, yt = tiny_images(100 + seed, 2)
        path = self.root / f"{source}-{seed}.npz"
        np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
        ingest_path(self.ws.catalog, self.ws.store, dataset=DATASET, path=path, source=source)

    def run(self, redteam: bool) -> None:
        config = RunConfig(
            dataset=DATASET,
            retrain=False,
            model=ModelConfig(epochs=1),
            detect=DETECT,
            redteam=RedTeamConfig(rate=0.1, target=0) if redteam else None,
        )
        run_cleaning(config, self.ws, progress=False)

    def decide(self, action: str, pick: int, settle_all: bool) -> None:
        """Decide one pending entry, or all of one run's (which approves its reviewed version)."""
        with self.ws.catalog.session() as s:
            pending = s.scalars(
                select(QuarantineEntry)
                .join(Run, Run.id == QuarantineEntry.run_id)
                .where(QuarantineEntry.status == "pending", Run.status == "completed")
                .order_by(QuarantineEntry.id)
            ).all()
        event(f"decide with {'a' if pending else 'no'} pending entry" + (", all of a run" if settle_all else ""))
        if not pending:
            return
        entry = pending[pick % len(pending)]
        chosen = [e for e in pending if e.run_id == entry.run_id] if settle_all else [entry]
        for e in chosen:  # a relabelling takes one label per call
            label = (e.label + 1) % CLASSES if action == "relabel" else None
            decide(self.ws, e.run_id, [e.sample_id], action, reviewer="prop", new_label=label)

    def export(self, fmt: str) -> None:
        with self.ws.catalog.session() as s:
            clean = s.scalars(select(Version.id).where(Version.kind == "clean").order_by(Version.created_at)).all()
        if clean:
            self.outputs += 1
            copy_out(self.ws, clean[-1], self.root / f"out-{self.outputs}", fmt)

    def gc(self) -> None:
        collect(self.ws, find_debris(self.ws, older_than=timedelta(0)))


STEPS = st.one_of(
    st.tuples(st.just("ingest"), st.sampled_from(["a", "b"]), st.integers(0, 2)),
    st.tuples(st.just("run"), st.booleans()),
    st.tuples(st.just("decide"), st.sampled_from(["confirm", "release", "relabel"]), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("export"), st.sampled_from(["parquet", "npz", "imagefolder"])),
    st.tuples(st.just("gc")),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEPS, min_size=1, max_size=6))
def test_verify_holds_and_published_bytes_never_change(steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        player = Player(Path(tmp))
        try:
            player.ingest("a", 0)
            before = published_bytes(player.ws)
            for name, *args in [("run", False), *steps]:
                event(name)
                getattr(player, name)(*args)
                report = verify(player.ws)
                assert report.ok, (name, args, report.problems)
                now = published_bytes(player.ws)
                assert {p: now.get(p) for p in before} == before, (name, args)
                before = now
        finally:
            player.ws.catalog.dispose()
