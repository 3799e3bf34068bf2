"""Probe: input neighbours' class test at other levels of disagreement (issue 15, eleventh step).

Input neighbours counts, per class, the *isolated* images (all 30 nearest images, pixel for pixel,
carry another label) and holds the count against the other classes' spread
(:func:`sanitize.detect._evidence.count_beyond_other_classes`, p times the classes). Where the poisons
are many in their class they are each other's neighbours and few are isolated (digits draw 23: 95
poisons, 40 % of class 0, 4 isolated). This prints the same test at lower levels (at least 90 % and at
least 50 % of the neighbours labelled otherwise) on clean ingested datasets (no run needed) and on
finished draw runs: the count of the class most beyond the others, what the others predict, and its
p, so that a second level is judged by its false alarms on clean data and its use on poisoned data.
bench/RESULTS.md, "Eleventh step".

    python -m bench probe neighbour-levels --datasets digits shapes-3 shapes-5 emoji-32-2000
    python -m bench probe neighbour-levels --draws 23 17 29
    python -m bench datasets shapes --classes 5 --seed 1 --out data/datasets-seed1
    python -m bench probe neighbour-levels --built data/datasets-seed1 --datasets shapes-5

``--built DIR`` reads the datasets from another build (``python -m bench datasets --seed N --out DIR``:
the same recipe, other pixels), ingested into homes of their own (``data/transfer/NAME@DIR``), for
clean data that no decision was set on.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.records import poison_mask
from bench.transfer import DATASETS, HOMES, draw_run, home_of, ingest, recorded_draws
from sanitize.config import Settings
from sanitize.detect._evidence import count_beyond_other_classes
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.features import load_features, load_inputs
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

#: The levels tested: isolated (the voter's own), nearly isolated, and the neighbours' majority.
LEVELS = (1.0, 0.9, 0.5)


def clean_inputs(name: str, built: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dataset ``name`` of the suite (from the build in ``built``, when given), ingested into its bench
    home as a user would: its current version's training inputs (as input-space voters see them) and
    labels."""
    spec = DATASETS[name]
    if built is None or spec.path is None:
        ws = home_of(name)
    else:
        spec = replace(spec, path=built / spec.path.name)
        ws = Workspace(Settings(home=(HOMES / f"{name}@{built.name}").resolve()))
    ingest(ws, name, spec)
    with ws.catalog.session() as s:
        version = ws.catalog.dataset(s, name).current_version  # the version a run of the dataset reads
    if version is None:
        raise SystemExit(f"{name}: no version in {ws.settings.home}")
    manifest = ws.store.manifest(name, version)
    table = ws.store.read_column_table(manifest, ["sample_id", "label"], split="train")
    ids = table.column("sample_id").to_pylist()
    return load_inputs(ws.store, manifest, ids), np.asarray(table.column("label").to_pylist(), dtype=np.int64)


def levels(x: np.ndarray, labels: np.ndarray, poisons: np.ndarray | None, target: int | None) -> list[str]:
    """Per level, the class most beyond the others (or ``target``): its count (poisons among it),
    the others' prediction and p over the classes."""
    voter = InputNeighbours(learn_trigger=False).fit(x, labels)
    dis = voter.disagreement_
    classes = sorted(voter.isolated_share_)
    sizes = np.bincount(labels)[classes]
    out = []
    for level in LEVELS:
        hit = dis >= level
        counts = np.bincount(labels, weights=hit)[classes]
        tests = []
        for i in range(len(classes)):
            p, centre, _ = count_beyond_other_classes(counts, sizes, i)
            tests.append((min(1.0, p * len(classes)), i, sizes[i] * np.exp(centre)))
        p, i, expected = min(tests) if target is None else tests[classes.index(target)]
        c = classes[i]
        within = "" if poisons is None else f" ({int((hit & poisons & (labels == c)).sum())} poisons)"
        out.append(f"class {c}: {int(counts[i])}{within} vs {expected:.1f}, p {p:.2g}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe neighbour-levels", description=__doc__)
    ap.add_argument("--datasets", nargs="*", default=[], help="clean suite datasets (built, see bench/datasets.py)")
    ap.add_argument("--draws", nargs="*", type=int, default=[], help="draws of transfer.json whose runs are here")
    ap.add_argument("--built", type=Path, help="read --datasets from this build (bench datasets --out)")
    args = ap.parse_args(argv)
    print("| data | poisons | " + " | ".join(f">= {lv:.0%} of 30 labelled otherwise" for lv in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    for name in args.datasets:
        x, labels = clean_inputs(name, args.built)
        built = "" if args.built is None else f" ({args.built.name})"
        print(f"| {name}{built}, clean | 0 | " + " | ".join(levels(x, labels, None, None)) + " |", flush=True)
    cells = recorded_draws()
    for draw in args.draws:
        cell = cells[draw]
        ws, run_dir = draw_run(cell)
        ctx = RunContext.load(ws, cell["run_id"])
        ids, _, labels, _ = load_features(run_dir / "features.parquet", split="train")
        poisons = poison_mask(run_dir, ids)
        x = load_inputs(ws.store, ctx.manifest(ws), ids)
        row = levels(x, labels, poisons, int(cell["target"]))
        where = f"draw {draw}, {cell['dataset']}, target {cell['target']}"
        print(f"| {where} | {int(poisons.sum())} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
