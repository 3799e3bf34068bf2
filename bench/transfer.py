"""Benchmark: the transfer suite (issue 15): datasets x attacks x rates, and randomised attacks, each
cell one complete cleaning run with no rate, no target and no tuning given to the detectors, IBM
ART's configurations side by side on the same features.

    python -m bench datasets icons --limit 2000 ...      # build the datasets first (bench/datasets.py)
    nohup python -m bench transfer > data/transfer.log 2>&1 &      # every cell whose dataset is built
    python -m bench transfer --datasets shapes-5 digits --cells fixed
    python -m bench transfer --cells draws --draws 0-51
    python -m bench transfer --table                            # the tables of what is there

Every dataset has its own home, ``data/transfer/DATASET``, ingested as a user would (the suppliers'
folders and table of ``shapes``, the train and test folders of ``icons``, an npz, the digits demo,
Fashion-MNIST's IDX files). Each cell is written to ``bench/results/transfer.json`` as soon as it
finishes (one entry per cell, with one record per detector and ``combined`` for the verdict); cells
already there are skipped, so a stopped suite resumes (``--force`` reruns them).

**Seeds looked at and seeds only reported.** The detectors' decisions were designed on the seed-0
cells of digits, shapes-2, shapes-5, shapes-5-plant and icons-32-2000 (:data:`LOOKED_AT`); every other dataset, every
other seed (``--seeds 0 1``) and draws 10 and above of the randomised generator are only reported
(draws 0-9 are marked looked at, for whoever designs on them next), but for the draws a later step
looked at (:data:`LOOKED_AT_DRAWS`: 12, 15, 23 and 27 in the tenth, the digits draws 11, 17, 29 and 35 in
the eleventh, draw 38 in the thirteenth; draws 40-51 were added in the thirteenth, run once after its
changes). Every record says which (``looked_at``), and RESULTS reports the two groups apart.

Each dirty-label cell also measures its attack on the clean run's clean model (``asr_clean_model``:
the floor that cleaning cannot go below) and carries the clean run's accuracy (``clean_acc_clean``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.data import FMNIST, ingest_fmnist
from bench.records import DATA, RESULTS, commit, read_json, records_for, stamp, write_json
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.demo import ingest_demo
from sanitize.evaluate.drawn import draw
from sanitize.evaluate.measure import attack_success
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

OUT = RESULTS / "transfer.json"
HOMES = DATA / "transfer"
BUILT = DATA / "datasets"


@dataclass(frozen=True)
class Spec:
    """A suite dataset: how it is ingested (``kind``: suppliers, split, npz, demo, idx) from ``path``."""

    kind: str
    path: Path | None = None
    n_train: int = 0
    classes: int = 0
    small: bool = field(default=False)


DATASETS: dict[str, Spec] = {
    "digits": Spec("demo", None, 1437, 10, small=True),
    "shapes-2": Spec("suppliers", BUILT / "shapes-2", 1500, 2, small=True),
    "shapes-3": Spec("suppliers", BUILT / "shapes-3", 1500, 3, small=True),
    "shapes-5": Spec("suppliers", BUILT / "shapes-5", 1500, 5, small=True),
    # The first case: vendor-b planted a 3x3 patch on 18 images filed under class 0 (its none cell).
    "shapes-5-plant": Spec("suppliers", BUILT / "shapes-5-plant", 1500, 5, small=True),
    "icons-32-2000": Spec("split", BUILT / "icons-32-2000", 2004, 6, small=True),
    "emoji-32-2000": Spec("split", BUILT / "emoji-32-2000", 2007, 9, small=True),
    "fmnist-colour-64-1500": Spec("npz", BUILT / "fmnist-colour-64-1500.npz", 1500, 10, small=True),
    "fmnist-colour-96-1500": Spec("npz", BUILT / "fmnist-colour-96-1500.npz", 1500, 10, small=True),
    "icons-32": Spec("split", BUILT / "icons-32", 10200, 6),
    "emoji-32": Spec("split", BUILT / "emoji-32", 10800, 9),
    "icons-64": Spec("split", BUILT / "icons-64", 10200, 6),
    "emoji-64": Spec("split", BUILT / "emoji-64", 10800, 9),
    "fashion-mnist": Spec("idx", FMNIST, 60000, 10),
}

# The bars are for these at 1 % and 5 %; the rest of the attacks at 5 %, and BadNets at 0.1 %
# where 0.1 % is at least 10 images.
BARRED = ("badnets", "blend", "sig")
OTHERS = ("all_to_all", "tact", "adaptive_patch", "badnets_colour", "wanet", "adaptive_blend", "badnets_random")
#: The draws looked at while designing: 0-9 set aside for it, then those later steps looked at
#: (RESULTS, "Tenth step", "Eleventh step" and "Thirteenth step").
LOOKED_AT_DRAWS = frozenset(range(10)) | {11, 12, 15, 17, 23, 27, 29, 35, 38}
#: The (dataset, seed) fixed cells the detectors were designed on.
LOOKED_AT = {("digits", 0), ("shapes-2", 0), ("shapes-5", 0), ("shapes-5-plant", 0), ("icons-32-2000", 0)}
RESCORED = RESULTS / "transfer_rescored.json"
DRAW_DATASETS = ("shapes-3", "shapes-5", "icons-32-2000", "emoji-32-2000", "fmnist-colour-64-1500", "digits")


def ingest(ws: Workspace, name: str, spec: Spec) -> None:
    """Ingest ``name`` into its home as a user would (a no-op when the same files are there)."""
    if spec.kind == "demo":
        ingest_demo(ws, name)
        return
    assert spec.path is not None
    if not spec.path.exists():
        raise SystemExit(f"{spec.path} is missing: build it with python -m bench datasets (see bench/datasets.py)")

    def add(path: Path, source: str, **kw: Any) -> None:
        ingest_path(ws.catalog, ws.store, dataset=name, path=path, source=source, actor="bench", **kw)

    if spec.kind == "suppliers":
        add(spec.path / "vendor-a", "vendor-a")
        add(spec.path / "vendor-b", "vendor-b")
        add(spec.path / "vendor-c" / "labels.csv", "vendor-c", image_column="path", label_column="label")
        add(spec.path / "test", "vendor-test", split="test")
    elif spec.kind == "split":
        add(spec.path / "train", "debian")
        add(spec.path / "test", "debian-test", split="test")
    elif spec.kind == "npz":
        add(spec.path, "zalando-coloured")
    elif spec.kind == "idx":
        ingest_fmnist(ws)


def home_of(name: str) -> Workspace:
    return Workspace(Settings(home=(HOMES / name).resolve()))


def recorded_draws() -> dict[int, dict[str, Any]]:
    """The randomised cells recorded in ``transfer.json``, by draw."""
    return {c["draw"]: c for c in read_json(OUT, []) if c["draw"] is not None}


def draw_run(cell: dict[str, Any]) -> tuple[Workspace, Path]:
    """A recorded draw's home and run directory; exits naming the run when it is not on this machine."""
    ws = home_of(cell["dataset"])
    run_dir = ws.store.run_dir(cell["run_id"])
    if not (run_dir / "features.parquet").is_file():
        raise SystemExit(
            f"draw {cell['draw']}: run {cell['run_id']} is not in {ws.settings.home} (rerun the draw first)"
        )
    return ws, run_dir


def cell_key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["dataset"], c["attack"], c["rate"], c["seed"], c.get("draw"))


def fixed_cells(name: str, spec: Spec, seeds: list[int]) -> list[dict[str, Any]]:
    cells = []
    for seed in seeds:
        plan: list[tuple[str, float]] = [("none", 0.0)]
        plan += [(a, r) for r in (0.05, 0.01) for a in BARRED]
        plan += [(a, 0.05) for a in OTHERS]
        if spec.n_train * 0.001 >= 10:
            plan.append(("badnets", 0.001))
        for attack, rate in plan:
            cells.append({"dataset": name, "attack": attack, "rate": rate, "seed": seed, "draw": None, "target": 0})
    return cells


def draw_cells(draws: list[int]) -> list[dict[str, Any]]:
    cells = []
    for k in draws:
        name = DRAW_DATASETS[k % len(DRAW_DATASETS)]
        spec = DATASETS[name]
        d = draw(k, classes=spec.classes, n_train=spec.n_train)
        cells.append({"dataset": name, "attack": "drawn", "rate": d.rate, "seed": k, "draw": k, "target": d.target})
    return cells


def clean_floor(ws: Workspace, clean: dict[str, Any] | None, cell: dict[str, Any]) -> dict[str, Any]:
    """The attack's success on the clean run's clean model (the floor), and that model's accuracy."""
    if clean is None or cell["attack"] == "none":
        return {"asr_clean_model": None, "clean_acc_clean": None}
    run_dir = ws.store.run_dir(clean["run_id"])
    if not run_dir.is_dir():  # recorded on another machine: its model is not here
        print(f"  no floor: the clean run {clean['run_id']} is not in {ws.settings.home}", flush=True)
        return {"asr_clean_model": None, "clean_acc_clean": None}
    model = run_dir / "model_clean.pt"
    if not model.is_file():
        model = run_dir / "model_reference.pt"
    ctx = RunContext.load(ws, cell["run_id"])
    assert ctx.config.redteam is not None
    return {
        "asr_clean_model": attack_success(ws, ctx, model, ctx.config.redteam),
        "clean_acc_clean": clean["combined"].get("clean_acc_after"),
    }


def run_cell(
    cell: dict[str, Any], code: str, art: bool, clean: dict[str, Any] | None, retrain: bool = True
) -> dict[str, Any]:
    name = cell["dataset"]
    ws = home_of(name)
    ingest(ws, name, DATASETS[name])
    redteam = None
    if cell["attack"] != "none":
        redteam = RedTeamConfig(attack=cell["attack"], rate=cell["rate"], target=cell["target"], seed=cell["seed"])
    config = RunConfig(dataset=name, redteam=redteam, seed=cell["seed"], retrain=retrain)
    start = time.perf_counter()
    result = run_cleaning(config, ws, progress=False)
    seconds = time.perf_counter() - start
    records = records_for(
        result,
        dataset=name,
        attack=cell["attack"],
        rate=cell["rate"],
        target=None if redteam is None else cell["target"],
        seconds=seconds,
        code=code,
    )
    looked = cell["draw"] in LOOKED_AT_DRAWS if cell["draw"] is not None else (name, cell["seed"]) in LOOKED_AT
    for r in records:
        r.update({"draw": cell["draw"], "looked_at": looked, "seed": cell["seed"]})
    out = {**cell, "run_id": result.run_id, "seconds": round(seconds, 1), "looked_at": looked, "records": records}
    out["combined"] = next(r for r in records if r["detector"] == "combined")
    out["summary_line"] = result.summary.get("looks_clean")
    out.update(clean_floor(ws, clean, out))
    if cell["draw"] is not None:
        d = draw(cell["draw"], classes=DATASETS[name].classes, n_train=DATASETS[name].n_train)
        out["draw_params"] = {**d.as_dict(), "described": d.describe()}
    if art:
        from bench.matrix import art_side_by_side

        verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["quarantine", "suspicion_score"])
        out["art"] = art_side_by_side(
            result.run_dir,
            cell["rate"],
            verdict.column("quarantine").to_numpy(),
            verdict.column("suspicion_score").to_numpy(),
        )
    return out


def add_art(cells: list[dict[str, Any]]) -> None:
    """ART's configurations on the stored features of every recorded cell that has none yet."""
    from bench.matrix import art_side_by_side

    for cell in cells:
        if "art" in cell:
            continue
        run_dir = home_of(cell["dataset"]).store.run_dir(cell["run_id"])
        if not (run_dir / "features.parquet").is_file():
            print(f"{cell_key(cell)}: run {cell['run_id']} is not here, skipped")
            continue
        verdict = pq.read_table(run_dir / "verdict.parquet", columns=["quarantine", "suspicion_score"])
        art = art_side_by_side(
            run_dir, cell["rate"], verdict.column("quarantine").to_numpy(), verdict.column("suspicion_score").to_numpy()
        )
        latest = [c for c in read_json(OUT, []) if cell_key(c) != cell_key(cell)]
        write_json(OUT, latest + [{**cell, "art": art}])
        print(f"{cell_key(cell)}: ART added", flush=True)


def rescore_cells(cells: list[dict[str, Any]], code: str) -> None:
    """Every recorded cell's run scored again with today's default detectors (no retraining): its
    quarantine and detection figures now, beside the run's own; ``bench/results/transfer_rescored.json``
    and a Markdown table. The ASR after cleaning stays the run's own (its retraining, on its verdict)."""
    from bench.rescore import rescore
    from sanitize.config import DetectConfig

    rows = []
    for cell in sorted(cells, key=lambda c: (c["dataset"], c["draw"] is not None, c["attack"], -c["rate"])):
        ws = home_of(cell["dataset"])
        if not (ws.store.run_dir(cell["run_id"]) / "features.parquet").is_file():
            continue
        now = rescore(ws, cell["run_id"], DetectConfig(), cell["seed"])
        r = cell["combined"]
        rows.append(
            {
                **{k: cell[k] for k in ("dataset", "attack", "rate", "seed", "draw", "run_id")},
                # looked at as of today: a draw a later step looked at is no longer held out
                "looked_at": cell["draw"] in LOOKED_AT_DRAWS if cell["draw"] is not None else cell["looked_at"],
                "n_poison": r.get("n_poison", 0),
                "described": cell.get("draw_params", {}).get("described", ""),
                "quarantined_as_run": r["quarantined"],
                "recall_as_run": r.get("recall"),
                "quarantined": now["quarantined_now"],
                "recall": now.get("recall"),
                "precision": now.get("precision"),
                "fpr": now.get("fpr"),
                "auroc": now.get("auroc"),
                "asr_before": r.get("asr_before"),
                "asr_after_as_run": r.get("asr_after"),
                "asr_clean_model": cell.get("asr_clean_model"),
                "clean_acc_after_as_run": r.get("clean_acc_after"),
                "flagged_by_voter": now["flagged_by_voter"],
                "seconds_run": cell["seconds"],
                "detect_seconds": round(sum(now["seconds"].values()), 2),
                **stamp(code),
            }
        )
        print(f"{cell['dataset']} {cell['attack']} {cell['rate']}: {now['quarantined_now']}", flush=True)
    # Rows of cells not scored this time (other datasets) stay as they were.
    scored = {cell_key(x) for x in rows}
    kept = [x for x in read_json(RESCORED, []) if cell_key(x) not in scored]
    write_json(RESCORED, kept + rows)
    print(
        "| dataset | attack | rate | seed / draw | looked at | poisons | quarantined (as run -> now) | recall now | "
        "ASR before -> after as run (floor) | run s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        who = f"draw {x['draw']}" if x["draw"] is not None else f"seed {x['seed']}"
        print(
            f"| {x['dataset']} | {x['attack']} | {x['rate']:.2%} | {who} | {'yes' if x['looked_at'] else 'no'} | "
            f"{x['n_poison']} | {x['quarantined_as_run']} -> **{x['quarantined']}** | {_f(x['recall'], 3)} | "
            f"{_f(x['asr_before'], 3)} -> {_f(x['asr_after_as_run'], 3)} ({_f(x['asr_clean_model'], 3)}) | "
            f"{x['seconds_run']:.0f} |"
        )


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(cells: list[dict[str, Any]]) -> None:
    print(
        f"{'dataset':22} {'attack':15} {'rate':>6} {'seed':>4} {'poison':>6} {'quar':>5} {'recall':>6} "
        f"{'x':>5} {'asr_b':>5} {'asr_a':>5} {'floor':>5} {'acc_a':>5} {'secs':>5} look"
    )
    for c in sorted(cells, key=lambda c: (c["dataset"], c["draw"] is not None, c["attack"], c["rate"], c["seed"])):
        r = c["combined"]
        ratio = r["quarantined"] / r["n_poison"] if r.get("n_poison") else None
        print(
            f"{c['dataset']:22} {c['attack']:15} {c['rate']:6.2%} {c['seed']:4} {r.get('n_poison', 0):6} "
            f"{r['quarantined']:5} {_f(r.get('recall'), 2):>6} {_f(ratio, 2):>5} {_f(r.get('asr_before'), 2):>5} "
            f"{_f(r.get('asr_after'), 2):>5} {_f(c.get('asr_clean_model'), 2):>5} {_f(r.get('clean_acc_after'), 3):>5} "
            f"{c['seconds']:5.0f} {'y' if c['looked_at'] else 'n'}"
        )
    draws = [c for c in cells if c["draw"] is not None]
    for looked in (True, False):
        group = [c["combined"] for c in draws if c["looked_at"] == looked]
        if not group:
            continue
        rec = np.array([g["recall"] for g in group if g.get("recall") is not None])
        ratio = np.array([g["quarantined"] / g["n_poison"] for g in group if g.get("n_poison")])
        print(
            f"draws {'looked at' if looked else 'reported only'}: {len(group)}; recall median {np.median(rec):.3f}, "
            f"10th pct {np.percentile(rec, 10):.3f}; quarantine/poisons median {np.median(ratio):.2f}"
        )


#: A drawn attack "took" when the poisoned model's ASR reached this: it implanted a backdoor that fires
#: on at least half the triggered test images. Below, its poisons are mislabelled images more than a
#: backdoor, and the suite reports them apart.
EFFECTIVE_ASR = 0.5


def draws_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: the distribution of recall and quarantine size over the randomised draws (the rows of
    ``--rescore``, today's detectors on each draw's run), all of them and those whose attack took
    (:data:`EFFECTIVE_ASR`), looked-at and reported-only apart, and one line per draw."""
    draws = sorted((x for x in rows if x.get("draw") is not None), key=lambda x: x["draw"])
    out = [
        "| draws | n | recall median | recall 10th pct | recall >= 0.95 | quarantine / poisons median |",
        "|---|---|---|---|---|---|",
    ]
    for looked in (False, True):
        for took in (False, True):
            group = [x for x in draws if x["looked_at"] == looked]
            if took:
                group = [x for x in group if (x.get("asr_before") or 0) >= EFFECTIVE_ASR]
            if not group:
                continue
            rec = np.array([x["recall"] or 0.0 for x in group])
            ratio = np.array([x["quarantined"] / x["n_poison"] for x in group])
            who = ("looked at" if looked else "reported only") + (
                f", ASR before >= {EFFECTIVE_ASR:.0%}" if took else ""
            )
            out.append(
                f"| {who} | {len(group)} | {np.median(rec):.3f} | {np.percentile(rec, 10):.3f} | "
                f"{int((rec >= 0.95).sum())} | {np.median(ratio):.2f} |"
            )
    out += [
        "",
        "| draw | dataset | attack drawn | rate | poisons | ASR before | quarantined | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in draws:
        out.append(
            f"| {x['draw']} | {x['dataset']} | {x.get('described', '')} | {x['rate']:.2%} | {x['n_poison']} | "
            f"{_f(x.get('asr_before'), 3)} | {x['quarantined']} | {_f(x.get('recall'), 3)} |"
        )
    return out


def parse_range(specs: list[str]) -> list[int]:
    out: list[int] = []
    for s in specs:
        lo, _, hi = s.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench transfer", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--datasets", nargs="*", help="suite datasets (default: every one that is built)")
    parser.add_argument("--cells", choices=["fixed", "draws", "all"], default="all")
    parser.add_argument("--attacks", nargs="*", help="fixed cells: only these attacks (and none)")
    parser.add_argument(
        "--draws-summary", action="store_true", help="print the draws' distribution (of --rescore's rows)"
    )
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="fixed cells' seeds (0 looked at)")
    parser.add_argument("--draws", nargs="*", default=["0-51"], help="draw seeds, e.g. 0-51")
    parser.add_argument("--small", action="store_true", help="only the small datasets (about 1,500-2,000 images)")
    parser.add_argument("--no-art", action="store_true", help="skip ART's configurations")
    parser.add_argument("--draws-retrain", action="store_true", help="retrain in draw cells too (ASR after)")
    parser.add_argument("--force", action="store_true", help="rerun cells already recorded")
    parser.add_argument("--table", action="store_true", help="print the tables and stop")
    parser.add_argument("--art-only", action="store_true", help="add ART's columns to recorded cells without them")
    parser.add_argument(
        "--rescore", action="store_true", help="score every recorded cell again with today's detectors; a table"
    )
    args = parser.parse_args(argv)
    cells = read_json(OUT, [])
    if args.table:
        print_table(cells)
        return
    if args.art_only:
        add_art(cells)
        return
    if args.draws_summary:
        print("\n".join(draws_summary(read_json(RESCORED, []))))
        return
    if args.rescore:  # the recorded cells of --datasets and --cells (draws: the randomised ones only)
        kind = {"all": None, "draws": True, "fixed": False}[args.cells]
        picked = [c for c in cells if (not args.datasets or c["dataset"] in args.datasets)]
        rescore_cells([c for c in picked if kind is None or (c["draw"] is not None) == kind], code=commit())
        return
    names = args.datasets or [
        n for n, s in DATASETS.items() if (s.path is None or s.path.exists()) and (s.small or not args.small)
    ]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown suite datasets {unknown}; known: {sorted(DATASETS)}")
    todo: list[dict[str, Any]] = []
    if args.cells in ("fixed", "all"):
        for n in names:
            fixed = fixed_cells(n, DATASETS[n], args.seeds)
            if args.attacks:
                fixed = [c for c in fixed if c["attack"] in ("none", *args.attacks)]
            todo += fixed
    if args.cells in ("draws", "all"):
        todo += [c for c in draw_cells(parse_range(args.draws)) if c["dataset"] in names]
    code = commit()
    for cell in todo:
        done = {cell_key(c): c for c in cells}
        if cell_key(cell) in done and not args.force:
            continue
        clean = done.get((cell["dataset"], "none", 0.0, cell["seed"] if cell["draw"] is None else 0, None))
        try:
            retrain = cell["draw"] is None or args.draws_retrain
            out = run_cell(cell, code, not args.no_art, clean, retrain)
        except Exception as exc:  # a cell that cannot run (a rate its dataset cannot hold) is recorded
            print(f"{cell_key(cell)}: {type(exc).__name__}: {exc}", flush=True)
            continue
        cells = [c for c in read_json(OUT, []) if cell_key(c) != cell_key(cell)] + [out]
        write_json(OUT, cells)
        r = out["combined"]
        print(
            f"{cell['dataset']:22} {cell['attack']:15} {cell['rate']:.2%} seed {cell['seed']}: "
            f"{r['quarantined']} quarantined for {r.get('n_poison', 0)}, recall {_f(r.get('recall'))}, "
            f"ASR {_f(r.get('asr_before'))} -> {_f(r.get('asr_after'))} (floor {_f(out.get('asr_clean_model'))}), "
            f"{out['seconds']:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
