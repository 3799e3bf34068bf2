"""Probe (issue 15, fourteenth step): does the trigger that input neighbours learns hold on seeds it
was not trained on, and does it on a clean class?

Input neighbours judges a class poisoned from its count of isolated images, at a stated 20 % rate per
dataset; on two held-out clean emoji builds a class passed (p 0.13, 0.11) and the trigger learnt from
its seeds flagged 8 % of the data. A real trigger is one pattern: learnt on half the seeds, it should
find the other half. Clean isolated images share only their class's look. Here the seeds and the
negatives are split in two folds; models trained on one fold score the other. Per class (the tested
class and every other class with enough isolated images, as a null), the held-out AUROC of the seeds
against the negatives and the held-out seeds' share at even odds or more.

    python -m bench probe trigger-holdout --built data/datasets-seed1 --datasets emoji-32-2000
    python -m bench probe trigger-holdout --fmnist wanet:0.01 wanet:0.005 adaptive_blend:0.05
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.data import load_fmnist
from bench.probes.neighbour_levels import clean_inputs
from sanitize.detect.input_neighbours import InputNeighbours, _image_shape
from sanitize.evaluate.redteam import get_attack


def probe(case: str, x: np.ndarray, labels: np.ndarray, poison: np.ndarray | None, every: bool) -> None:
    """One row per class with enough seeds (or the tested class only): the voter's own held-out test
    (``InputNeighbours._holdout_test``) on that class's seeds and negatives, drawn as it draws them."""
    start = time.perf_counter()
    voter = InputNeighbours(learn_trigger=False).fit(x, labels)
    dis = voter.disagreement_
    tested = min(voter.p_value_, key=lambda c: voter.p_value_[c])
    shape = _image_shape(x.shape[1])
    assert shape is not None
    for c in sorted(voter.p_value_):
        inside = labels == c
        seeds = np.flatnonzero(inside & (dis >= voter.seed_disagreement))
        if len(seeds) < voter.min_seeds or not (every or c == tested):
            continue
        pool = np.flatnonzero(~inside | (inside & (dis <= voter.clean_disagreement)))
        rng = np.random.default_rng(voter.random_state)
        negatives = rng.choice(pool, size=min(len(pool), voter.negatives_per_seed * len(seeds)), replace=False)
        p = voter._holdout_test(x, shape, seeds, negatives, inside, rng)
        mark = " (tested)" if c == tested else ""
        among = "" if poison is None else f" ({int(poison[seeds].sum())} poisons)"
        print(f"| {case} | {c}{mark} | {voter.p_value_[c]:.2g} | {len(seeds)}{among} | {p:.2g} |", flush=True)
    print(f"<!-- {case}: {time.perf_counter() - start:.0f} s -->", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe trigger-holdout", description=__doc__)
    ap.add_argument("--datasets", nargs="*", default=[], help="clean suite datasets")
    ap.add_argument("--built", type=Path, help="read --datasets from this build (bench datasets --out)")
    ap.add_argument("--fmnist", nargs="*", default=[], help="ATTACK:RATE on Fashion-MNIST's train split, target 0")
    ap.add_argument("--every", action="store_true", help="every class with enough seeds, not only the tested one")
    args = ap.parse_args(argv)
    print("| data | class | p over the classes | seeds (poisons) | held-out trigger's p |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        x, labels = clean_inputs(name, args.built)
        built = "" if args.built is None else f" ({args.built.name})"
        probe(f"{name}{built}, clean", x, labels, None, args.every)
    if args.fmnist:
        images, labels = load_fmnist()["train"]
        for spec in args.fmnist:
            attack, rate = spec.split(":")
            poisoned = get_attack(attack).poison(images, labels, float(rate), target=0, seed=0)
            x = poisoned.images.reshape(len(labels), -1).astype(np.float32) / 255.0
            probe(f"Fashion-MNIST {attack} {rate}", x, poisoned.labels, poisoned.mask, args.every)


if __name__ == "__main__":
    main()
