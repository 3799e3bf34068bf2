"""Probe: input neighbours' class test on finished runs, the rule it replaced beside it (issue 15).

For every run given (a run folder, or every cell of the transfer suite and the Fashion-MNIST matrix
rerun), the voter is fitted on the run's own images (no trigger learnt) and the class most beyond the
other classes is printed: its isolated images (none of its 30 nearest images carries its label), how
many the other classes' spread predicts, its share against the median class's, the old rule's call
(4x the median class's share and 20 images beyond) and the new one's (p over the classes at most
``false_alarm``, 10 images beyond), as a Markdown table. bench/RESULTS.md, "Input neighbours'
decision from the data".

    python -m bench probe neighbour-classes                         # the suite's cells and the matrix rerun
    python -m bench probe neighbour-classes --runs data/fm-dyn/runs/RUN ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.records import DATA, RESULTS, poison_mask
from bench.transfer import home_of
from sanitize.config import Settings
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.features import load_features, load_inputs
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

#: The rule the class test replaced (94ca98d): a share of isolated images at least this many times the
#: median class's, and this many images beyond what the median share predicts.
OLD_RATIO, OLD_EXCESS = 4.0, 20


def row(name: str, ws: Workspace, run_id: str, looked_at: bool) -> str:
    run_dir = ws.store.run_dir(run_id)
    ctx = RunContext.load(ws, run_id)
    ids, _, labels, _ = load_features(run_dir / "features.parquet", split="train")
    inputs = load_inputs(ws.store, ctx.manifest(ws), ids)
    poisons = poison_mask(run_dir, ids)
    voter = InputNeighbours(learn_trigger=False).fit(inputs, labels)
    isolated = voter.disagreement_ >= 1.0
    c = min(voter.p_value_, key=lambda k: voter.p_value_[k])
    size = int((labels == c).sum())
    count = int(isolated[labels == c].sum())
    median, share = voter.median_share_, voter.isolated_share_[c]
    old = share >= OLD_RATIO * median and (share - median) * size >= OLD_EXCESS
    ratio = f"{share / median:.1f}x" if median > 0 else "-"
    return (
        f"| {name} | {'yes' if looked_at else 'no'} | {c} | {count} ({int((isolated & poisons & (labels == c)).sum())} "
        f"poisons) | {voter.expected_[c]:.1f} | {ratio} | {'poisoned' if old else 'clean'} | {voter.p_value_[c]:.2g} "
        f"| {'poisoned' if voter.poisoned_[c] else 'clean'} |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe neighbour-classes", description=__doc__)
    ap.add_argument(
        "--runs", nargs="*", type=Path, help="run folders (default: the suite's cells and the matrix rerun)"
    )
    args = ap.parse_args(argv)
    items: list[tuple[str, Workspace, str, bool]] = []
    if args.runs:
        for run in args.runs:
            home = run.resolve().parent.parent
            items.append((str(run), Workspace(Settings(home=home)), run.name, False))
    else:
        for cell in json.loads((RESULTS / "transfer.json").read_text()):
            if cell["attack"] != "drawn":
                name = f"{cell['dataset']} {cell['attack']} {cell['rate']:.2%}"
                items.append((name, home_of(cell["dataset"]), cell["run_id"], cell["looked_at"]))
        matrix = Workspace(Settings(home=(DATA / "matrix-now").resolve()))
        for cell in json.loads((RESULTS / "matrix_now.json").read_text()):
            items.append((f"fashion-mnist {cell['attack']} {cell['rate']:.1%}", matrix, cell["run_id"], True))
    print(
        "| run | looked at | most isolated class | isolated images | expected from the others | share / median "
        "class | old rule (4x, 20) | p over the classes | new rule |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for item in items:
        if (item[1].store.run_dir(item[2]) / "features.parquet").is_file():
            print(row(*item), flush=True)


if __name__ == "__main__":
    main()
