"""Probe (issue 3, a fallback voter for WaNet at 1 %): what the pixels say about each sample's
label, and how far the input-neighbours voter's class test is from firing on clean classes.

A dirty-label poison is another class's image, relabelled. When the model learns the trigger only
partly (WaNet at 1 %), the poisons stay inside the target class in feature space, but in the pixels
a warped sneaker still looks like a sneaker. ``sanitize.detect.input_neighbours`` votes on that
signal; this probe measures it apart from any model or verdict:

- per sample, the share of its k nearest images (pixels, projected on principal components, as the
  voter does by default) that carry another label (k-NN label disagreement, Peri et al. 2020, on the inputs);
- per class, the share of *isolated* images (no neighbour with its label), its ratio to the
  median class's share (the voter's class test: >= 4x) and its robust z among the classes;
- in the poisoned class (ground truth), the disagreement's AUROC, its recall at 1.5x the poison
  count, and what the voter's flagging rule (its ``flag_disagreement``) flags there.

    python -m bench probe pixel-neighbours                 # the matrix's and source benchmark's runs
    python -m bench probe pixel-neighbours data/bench/runs/<run> ...
    python -m bench probe pixel-neighbours --raw           # every attack at 0.5/1/5 % on the raw images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from bench.data import load_fmnist, run_inputs
from bench.records import DATA, RESULTS, commit, poison_mask, read_json, stamp, write_json
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.evaluate.redteam import get_attack
from sanitize.features import load_features


def probe(inputs: np.ndarray, labels: np.ndarray, poison: np.ndarray, k: int, components: int) -> dict[str, Any]:
    """The probe's figures for one training set: (n, d) inputs in [0, 1], labels, the poison mask."""
    start = time.perf_counter()
    # The voter's own disagreement and isolated shares: the probe measures what it decides on.
    voter = InputNeighbours(k=k, n_components=components).fit(inputs.astype(np.float32), labels)
    seconds = time.perf_counter() - start
    dis = voter.disagreement_
    classes = np.array(list(voter.isolated_share_))
    share = np.array(list(voter.isolated_share_.values()))
    median = voter.median_share_
    spread = max(1.4826 * float(np.median(np.abs(share - median))), 0.1 * median, 1e-4)
    ratio = share / median if median > 0 else np.where(share > 0, np.inf, 1.0)
    top = int(np.argmax(ratio))
    record: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "k": k,
        "components": components,
        "isolated_share": {int(c): round(float(v), 5) for c, v in zip(classes, share, strict=True)},
        "z": {int(c): round((float(v) - median) / spread, 2) for c, v in zip(classes, share, strict=True)},
        "ratio_to_median": {
            int(c): round(float(v), 2) if np.isfinite(v) else None for c, v in zip(classes, ratio, strict=True)
        },
        "top_class": int(classes[top]),
        "top_ratio": round(float(ratio[top]), 2) if np.isfinite(ratio[top]) else None,
        "n_poison": int(poison.sum()),
    }
    target = int(np.bincount(labels[poison]).argmax()) if poison.any() else -1
    inside = labels == target
    if poison.any() and not poison[inside].all():
        d, p = dis[inside], poison[inside]
        best = np.argsort(-d, kind="stable")[: int(round(1.5 * p.sum()))]
        rule = d >= voter.flag_disagreement
        record.update(
            target=target,
            auroc_in_target=round(float(roc_auc_score(p, d)), 4),
            recall_at_1_5x_in_target=round(float(p[best].sum() / p.sum()), 4),
            rule=f">= {voter.flag_disagreement:g} of {k}",
            rule_flagged=int(rule.sum()),
            rule_recall=round(float((rule & p).sum() / p.sum()), 4),
        )
    return record


def probe_run(run_dir: Path, k: int, components: int) -> dict[str, Any]:
    """The probe on a finished run: its training images as the pipeline hands them to detectors."""
    ids, _, labels, _ = load_features(run_dir / "features.parquet", split="train")
    inputs = run_inputs(run_dir, ids)
    poison = poison_mask(run_dir, ids, strict=False)
    return {"case": f"{run_dir.parent.parent.name}/{run_dir.name}", **probe(inputs, labels, poison, k, components)}


def raw_cases(seeds: int) -> list[tuple[str, str, float, int]]:
    """(dataset, attack, rate, seed): every attack at 0.5, 1 and 5 % on Fashion-MNIST, clean data, digits."""
    cases = [("fashion-mnist", "none", 0.0, s) for s in range(seeds)]
    attacks = ("wanet", "badnets", "blend", "sig", "badnets_random", "adaptive_blend")
    cases += [("fashion-mnist", a, r, s) for a in attacks for r in (0.005, 0.01, 0.05) for s in range(seeds)]
    cases += [("digits", "none", 0.0, 0)] + [("digits", a, 0.05, s) for a in ("badnets", "wanet") for s in range(2)]
    return cases


def probe_raw(dataset: str, attack: str, rate: float, seed: int, k: int, components: int) -> dict[str, Any]:
    """The probe on the raw images, poisoned in memory (no model: the probe reads pixels only)."""
    if dataset == "digits":
        digits = load_digits()
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int64)
    else:
        images, labels = load_fmnist()["train"]
    poison = np.zeros(len(labels), dtype=bool)
    if attack != "none":
        poisoned = get_attack(attack).poison(images, labels, rate, target=0, seed=seed)
        images, labels, poison = poisoned.images, poisoned.labels, poisoned.mask
    inputs = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return {"case": f"raw {dataset} {attack} {rate:g} seed {seed}", **probe(inputs, labels, poison, k, components)}


def default_runs() -> list[Path]:
    runs: list[Path] = []
    for cell in read_json(RESULTS / "matrix.json"):
        run = DATA / "bench" / "runs" / cell["run_id"]
        if (run / "features.parquet").exists():
            runs.append(run)
    runs += sorted((DATA / "bench-sources").glob("*/runs/run-*"))
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench probe pixel-neighbours",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--raw", action="store_true", help="poison the raw images in memory instead (no model)")
    ap.add_argument("--seeds", type=int, default=2, help="red-team seeds per --raw case")
    ap.add_argument("--k", type=int, default=InputNeighbours().k)
    ap.add_argument("--components", type=int, default=InputNeighbours().n_components)
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/pixel_neighbours[_raw]_k<K>.json")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / f"pixel_neighbours{'_raw' if args.raw else ''}_k{args.k}.json"
    if args.raw:
        jobs = [lambda c=c: probe_raw(*c, args.k, args.components) for c in raw_cases(args.seeds)]
    else:
        jobs = [lambda r=r: probe_run(r, args.k, args.components) for r in args.runs or default_runs()]
    records = []
    code = commit()  # once: a commit made during the probe must not relabel what ran
    for job in jobs:
        rec = job()
        rec.update(stamp(code))
        records.append(rec)
        target = (
            f"; target {rec['target']}: AUROC {rec['auroc_in_target']}, recall@1.5x "
            f"{rec['recall_at_1_5x_in_target']:.3f}, {rec['rule']} flags {rec['rule_flagged']} "
            f"(recall {rec['rule_recall']:.3f})"
            if "target" in rec
            else ""
        )
        print(
            f"{rec['case']}: most isolated class {rec['top_class']} at {rec['top_ratio']}x the median "
            f"(z {rec['z'][rec['top_class']]}), {rec['seconds']} s{target}",
            flush=True,
        )
        write_json(out, records)


if __name__ == "__main__":
    main()
