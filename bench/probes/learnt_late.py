"""Probe: are dirty-label poisons whose attack did not take the samples the reference model learnt last
(issue 15, twelfth step)?

Most randomised draws plant 10 poisons (0.5-0.7 %) and the model does not learn their trigger (ASR
under 0.5): to the model they are images of other classes under the target's label, which it learns by
heart late in training. The reference model's recorded training losses (``model_reference.dynamics``)
give each sample's *learnt epoch*: one after the last epoch in which its loss was above ``ln 2`` (the
label's probability under one half), 0 for a sample learnt from the first epoch. This prints, per
draw, where the poisons' learnt epochs fall against the clean samples', how well the learnt epoch ranks
the poisons inside their class (AUROC), and the class test that input neighbours uses
(:func:`sanitize.detect._evidence.count_beyond_other_classes`, p times the classes) on the count of
samples learnt after the dataset's 98th and 99th percentile of learnt epochs. bench/RESULTS.md,
"Twelfth step".

    python -m bench probe learnt-late --draws 0 2 3 5 11 17 23 29 35
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.records import poison_mask
from bench.transfer import draw_run, recorded_draws
from sanitize.detect._evidence import count_beyond_other_classes
from sanitize.features import load_features
from sanitize.training import dynamics_path, load_dynamics

#: The label's probability under one half: not yet learnt.
UNLEARNT = float(np.log(2.0))
#: Percentiles of the learnt epoch above which a sample counts as learnt late.
QUANTILES = (0.98, 0.99)


def learnt_epoch(losses: np.ndarray) -> np.ndarray:
    """Per sample (n,): one after the last epoch whose loss is above ``ln 2``; 0 when none is."""
    above = losses > UNLEARNT
    last = losses.shape[1] - np.argmax(above[:, ::-1], axis=1)
    return np.where(above.any(axis=1), last, 0)


def probe(draw: dict) -> str:
    _, run_dir = draw_run(draw)
    ids, _, labels, _ = load_features(run_dir / "features.parquet", split="train")
    labels = np.asarray(labels)
    poisons = poison_mask(run_dir, ids)
    losses = load_dynamics(dynamics_path(run_dir / "model_reference.pt"), ids)
    if losses is None:
        raise SystemExit(f"draw {draw['draw']}: run {draw['run_id']} recorded no training dynamics")
    epoch = learnt_epoch(losses)
    target = int(draw["target"])
    inside = labels == target
    auroc = roc_auc_score(poisons[inside], epoch[inside])
    classes = sorted(set(labels.tolist()))
    sizes = np.bincount(labels)[classes]
    tests = []
    for q in QUANTILES:
        late = epoch > np.quantile(epoch, q)
        counts = np.bincount(labels, weights=late)[classes]
        p, centre, _ = count_beyond_other_classes(counts, sizes, classes.index(target))
        tests.append(
            f"{int(counts[classes.index(target)])} ({int((late & poisons).sum())} poisons) vs "
            f"{sizes[classes.index(target)] * np.exp(centre):.1f}, p {min(1.0, p * len(classes)):.2g}; "
            f"per class {counts.astype(int).tolist()}"
        )
    med = lambda m: f"{np.median(epoch[m]):.0f}"  # noqa: E731
    return (
        f"| {draw['draw']} | {draw['dataset']} | {int(poisons.sum())} | {draw['combined']['asr_before']:.2f} | "
        f"{med(poisons)} / {med(~poisons)} of {losses.shape[1]} | {auroc:.3f} | " + " | ".join(tests) + " |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe learnt-late", description=__doc__)
    ap.add_argument("--draws", nargs="+", type=int, required=True, help="draws of transfer.json whose runs are here")
    args = ap.parse_args(argv)
    cells = recorded_draws()
    print(
        "| draw | dataset | poisons | ASR | learnt epoch, median: poisons / clean | AUROC in the target class | "
        + " | ".join(f"target class, learnt after the {q:.0%} point" for q in QUANTILES)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(QUANTILES))
    for k in args.draws:
        print(probe(cells[k]), flush=True)


if __name__ == "__main__":
    main()
