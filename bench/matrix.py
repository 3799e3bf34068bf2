"""Benchmark: the attack x poison-rate matrix on Fashion-MNIST (60,000 training images), side by side
with IBM's adversarial-robustness-toolbox (ART) on the same features.

Each cell is one complete cleaning run (red-team poisoning, reference model, features, every detector,
quarantine, retraining, evaluation) with no poison rate and no target given to the detectors. Then ART's
SpectralSignatureDefense and ActivationDefence get the same penultimate-layer features of the same
model: default settings, the true poison rate (their best case), ``relative-size`` cluster analysis,
and ART spectral at the number of samples sanitize quarantined. sanitize's spectral and clustering
detectors are timed on the same features in the same process.

Every cell is written to ``bench/results/matrix.json`` as soon as it finishes; cells already there are
skipped, so a stopped run resumes where it was (``--force`` reruns them). It takes one to two hours on
2 cores, so run it in the background::

    pip install -e '.[bench]'
    nohup python -m bench matrix > data/matrix.log 2>&1 &
    python -m bench matrix --only blend:0.05 sig:0.03        # some cells
    python -m bench matrix --table                           # print the table of what is there
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.art_compare import run_art
from bench.data import DATASET, ingest_fmnist, require_fmnist, workspace
from bench.records import DATA, RESULTS, commit, parse_only, poison_mask, read_json, records_for, save_cell
from sanitize.config import DetectConfig, RedTeamConfig, RunConfig
from sanitize.detect import make_detector
from sanitize.evaluate.measure import predict_split
from sanitize.evaluate.metrics import detection_figures
from sanitize.features import load_features
from sanitize.pipeline import run_cleaning
from sanitize.runs import RunContext
from sanitize.store import atomic_write_bytes, atomic_write_json
from sanitize.training import reference_cache_path
from sanitize.workspace import Workspace

RATES = (0.005, 0.01, 0.05, 0.10)
SIG_RATES = (0.005, 0.01, 0.03, 0.05)
# The cells the issue sets bars for come first (one per attack early, for a quick signal), then the rest.
ORDER: list[tuple[str, float]] = [
    ("none", 0.0),
    ("blend", 0.05),
    ("wanet", 0.05),
    ("sig", 0.03),
    ("badnets", 0.05),
    ("adaptive_blend", 0.01),
    ("blend", 0.01),
    ("wanet", 0.01),
    ("sig", 0.01),
    ("badnets", 0.01),
    ("blend", 0.10),
    ("wanet", 0.10),
    ("sig", 0.05),
    ("badnets", 0.10),
    ("badnets_random", 0.05),
    ("adaptive_blend", 0.05),
    ("blend", 0.005),
    ("wanet", 0.005),
    ("sig", 0.005),
    ("badnets", 0.005),
    ("adaptive_blend", 0.005),
]
ART_CONFIGS = ("art_spectral_default", "art_spectral_true_rate", "art_ac_default", "art_ac_relative_size")


def art_side_by_side(run_dir: Path, rate: float, ours_flagged: np.ndarray, ours_score: np.ndarray) -> dict[str, Any]:
    """ART's configurations and sanitize's detectors on the run's features, with seconds for each."""
    ids, feats, labels, _ = load_features(run_dir / "features.parquet")
    verdict = pq.read_table(run_dir / "verdict.parquet", columns=["sample_id"]).column("sample_id").to_pylist()
    if verdict != ids:
        raise RuntimeError(f"{run_dir}: verdict and features list samples in different orders")
    is_poison = poison_mask(run_dir, ids)
    n_ours = int(ours_flagged.sum())
    rows: list[dict[str, Any]] = []
    for name in ("spectral", "activation_clustering", "knn", "whitened_clustering"):
        start = time.perf_counter()
        make_detector(name).detect(feats, labels)
        rows.append({"detector": f"sanitize_{name}", "seconds": round(time.perf_counter() - start, 3)})
    configs: list[tuple[str, str, float]] = [(c, c, rate) for c in ART_CONFIGS]
    if n_ours:
        # ART spectral removes 1.5 x rate of every class; this rate makes it remove as many as sanitize did.
        configs.append(("art_spectral_default", "art_spectral_at_our_count", n_ours / (1.5 * len(ids))))
    for config, label, art_rate in configs:
        if config == "art_spectral_true_rate" and rate == 0:
            continue
        art_name = "art_spectral_true_rate" if label == "art_spectral_at_our_count" else config
        try:
            flags, secs = run_art(art_name, feats, labels, art_rate)
        except Exception as exc:  # relative-size raises under NumPy 2 when a class has no small cluster
            rows.append({"detector": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        fig = detection_figures(is_poison, flags, flags.astype(float))
        # sanitize's recall when it quarantines exactly as many samples as this ART configuration flagged.
        top = np.argsort(-ours_score, kind="stable")[: int(flags.sum())]
        ours_at = float(is_poison[top].sum() / is_poison.sum()) if is_poison.any() else None
        rows.append(
            {"detector": label, "seconds": round(secs, 3), **fig.as_dict(), "sanitize_recall_at_same_count": ours_at}
        )
    return {"rows": rows, "n_features": int(feats.shape[1])}


def run_cell(
    ws: Workspace, attack: str, rate: float, target: int, seed: int, code: str, retrain: bool = True
) -> dict[str, Any]:
    """One complete cleaning run of the cell, its records (``code``: the commit that runs) and ART beside it."""
    redteam = None if attack == "none" else RedTeamConfig(attack=attack, rate=rate, target=target, seed=seed)
    config = RunConfig(dataset=DATASET, redteam=redteam, seed=seed, retrain=retrain)
    start = time.perf_counter()
    result = run_cleaning(config, ws, progress=False)
    seconds = time.perf_counter() - start
    records = records_for(
        result,
        dataset=DATASET,
        attack=attack,
        rate=rate,
        target=None if attack == "none" else target,
        seconds=seconds,
        code=code,
    )
    verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["quarantine", "suspicion_score"])
    art = art_side_by_side(
        result.run_dir, rate, verdict.column("quarantine").to_numpy(), verdict.column("suspicion_score").to_numpy()
    )
    return {
        "attack": attack,
        "rate": rate,
        "target": target,
        "seed": seed,
        "run_id": result.run_id,
        "seconds": round(seconds, 1),
        "records": records,
        "art": art,
    }


def backfill_reference_cache(ws: Workspace, cells: list[dict[str, Any]]) -> None:
    """Offer the reference models of finished cells to the pipeline's cache, so a rerun after a detector
    change (``--force``) skips retraining them (runs made before the cache existed are not in it)."""
    for cell in cells:
        if not (ws.store.run_dir(cell["run_id"]) / "context.json").is_file():
            continue  # a record from another machine: its run folder is not here
        ctx = RunContext.load(ws, cell["run_id"])
        model = ctx.run_dir / "model_reference.pt"
        cached = reference_cache_path(ws, ctx)
        if model.is_file() and not cached.is_file():
            meta = json.loads(model.with_suffix(".json").read_text())
            atomic_write_json(cached.with_suffix(".json"), meta)
            atomic_write_bytes(cached, model.read_bytes())


def base_asr(ws: Workspace, cells: list[dict[str, Any]], cell: dict[str, Any]) -> float | None:
    """The attack's success rate on the clean-data model (the clean run's clean model, retrained as every
    cell's is, on data never shown a poison; its reference model for a run without retraining): the
    share of triggered non-target test images it sends to the target anyway. Cleaning cannot push the
    ASR below this floor."""
    clean = next((c for c in cells if c["attack"] == "none"), None)
    if clean is None or cell["attack"] == "none":
        return None
    run_dir = ws.store.run_dir(clean["run_id"])
    model = run_dir / "model_clean.pt"
    if not model.is_file():
        model = run_dir / "model_reference.pt"
    pred, _ = predict_split(ws, RunContext.load(ws, cell["run_id"]), model, cell["attack"], cell["target"])
    return float((pred == cell["target"]).mean()) if len(pred) else None


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def art_best(cell: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """ART's configuration with the highest recall (the fewest flags on a tie), and ART spectral at our
    count, among the rows of one cell that did not raise."""
    art = [r for r in cell["art"]["rows"] if r["detector"].startswith("art_") and "error" not in r]
    best = max(
        (r for r in art if r["detector"] != "art_spectral_at_our_count"),
        key=lambda r: (r["recall"] or 0, -r["quarantined"]),
        default=None,
    )
    return best, next((r for r in art if r["detector"] == "art_spectral_at_our_count"), None)


def print_table(cells: list[dict[str, Any]]) -> None:
    print(
        f"{'attack':15} {'rate':>6} {'poisons':>7} {'quar.':>6} {'recall':>6} {'prec.':>6} {'fpr':>6} {'auroc':>6} "
        f"{'acc':>6} {'asr':>13}  {'ART best recall (flagged)':>26} {'ours@ART':>8} {'ART@ours':>8}"
    )
    for cell in sorted(cells, key=lambda c: (c["attack"], c["rate"])):
        c = next(r for r in cell["records"] if r["detector"] == "combined")
        best, at_ours = art_best(cell)
        best = best or {"recall": None, "quarantined": 0, "detector": "art_none"}
        print(
            f"{cell['attack']:15} {cell['rate']:>6.1%} {c['n_poison']:>7} {c['quarantined']:>6} {_f(c['recall']):>6} "
            f"{_f(c['precision']):>6} {_f(c['fpr'], 4):>6} {_f(c['auroc']):>6} {_f(c['clean_acc_after']):>6} "
            f"{_f(c['asr_before'])}->{_f(c['asr_after'])}  "
            f"{_f(best['recall'])} ({best['quarantined']}) {best['detector'][4:]:>14} "
            f"{_f(best.get('sanitize_recall_at_same_count')):>8} {_f(at_ours['recall'] if at_ours else None):>8}"
        )


def markdown(cells: list[dict[str, Any]]) -> str:
    """The RESULTS.md tables: the combined verdict with ART beside it, and every detector alone."""
    order = {
        name: i
        for i, name in enumerate(["none", "badnets", "badnets_random", "blend", "wanet", "sig", "adaptive_blend"])
    }
    cells = sorted(cells, key=lambda c: (order.get(c["attack"], 99), c["rate"]))
    clean = next((c for c in cells if c["attack"] == "none"), None)
    base_acc = None
    if clean:  # the clean run's clean model, retrained as every cell's is; else its reference model
        base_acc = clean["records"][0]["clean_acc_after"] or clean["records"][0]["clean_acc_before"]
    lines = [
        f"Clean-data model accuracy (the clean run's clean model): {_f(base_acc, 4)}.",
        "",
        "| attack | rate | poisons | quarantined | recall | precision | clean FPR | AUROC | clean acc. after "
        "| ASR before -> after (clean-data model) | ART best: config, flagged, recall | ours at ART's count "
        "| ART spectral at our count "
        "| run (train ref / features / detect / retrain) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        c = next(r for r in cell["records"] if r["detector"] == "combined")
        t = c["timings"]
        best, at_ours = art_best(cell)
        ratio = f" ({c['quarantined'] / c['n_poison']:.2f}x)" if c["n_poison"] else ""
        lines.append(
            f"| {cell['attack']} | {cell['rate']:.1%} | {c['n_poison']:,} | {c['quarantined']:,}{ratio} "
            f"| {_f(c['recall'])} | {_f(c['precision'])} | {_f(c['fpr'], 4)} | {_f(c['auroc'])} "
            f"| {_f(c['clean_acc_after'], 4)} | {_f(c['asr_before'])} -> {_f(c['asr_after'])} "
            f"({_f(cell.get('asr_clean_model'))}) "
            + (
                f"| {best['detector'][4:]}, {best['quarantined']:,}, {_f(best['recall'])} "
                f"| {_f(best.get('sanitize_recall_at_same_count'))} "
                if best
                else "| - | - "
            )
            + f"| {_f(at_ours['recall']) if at_ours else '-'} "
            f"| {cell['seconds']:.0f} s ({t.get('train_reference', 0):.0f} / {t.get('features', 0):.0f} / "
            f"{t.get('detect', 0):.0f} / {t.get('retrain', 0):.0f}) |"
        )
    detectors = list(DetectConfig().detectors)
    lines += [
        "",
        "Each detector alone (flagged, recall, clean FPR, AUROC):",
        "",
        "| attack | rate | " + " | ".join(detectors) + " |",
        "|---|---|" + "---|" * len(detectors),
    ]
    for cell in cells:
        by = {r["detector"]: r for r in cell["records"]}
        row = []
        for d in detectors:
            r = by.get(d)
            row.append(
                "-" if r is None else f"{r['quarantined']:,}, {_f(r['recall'])}, {_f(r['fpr'], 4)}, {_f(r['auroc'])}"
            )
        lines.append(f"| {cell['attack']} | {cell['rate']:.1%} | " + " | ".join(row) + " |")
    lines += [
        "",
        "ART on the same features (flagged, recall, clean FPR; or the error it raised):",
        "",
        "| attack | rate | spectral default | spectral, true rate | AC default | AC relative-size |",
        "|---|---|---|---|---|---|",
    ]
    for cell in cells:
        by = {r["detector"]: r for r in cell["art"]["rows"]}
        row = []
        for d in ART_CONFIGS:
            r = by.get(d)
            if r is None:
                row.append("-")
            elif "error" in r:
                row.append(f"error: {r['error'].split(':')[0]}")
            else:
                row.append(f"{r['quarantined']:,}, {_f(r['recall'])}, {_f(r['fpr'], 4)}")
        lines.append(f"| {cell['attack']} | {cell['rate']:.1%} | " + " | ".join(row) + " |")
    return "\n".join(lines + ["", bars(cells, base_acc)])


# The cells issue 3 sets bars for, and the bars.
BAR_CELLS = [(a, r) for a in ("badnets", "blend", "wanet") for r in (0.01, 0.05, 0.10)] + [
    ("sig", r) for r in (0.01, 0.03, 0.05)
]


def bars(cells: list[dict[str, Any]], base_acc: float | None) -> str:
    """Each barred cell against the bars: recall >= 0.95 at <= 1.5x, ASR after <= 2 %, clean accuracy
    within 1 point of the clean-data model, and our recall at ART's best count >= ART's."""
    by = {(c["attack"], c["rate"]): c for c in cells}
    lines = [
        "| cell | recall, quarantined | ASR after (clean-data model) | clean acc. after "
        "| ours vs ART best at its count | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for attack, rate in BAR_CELLS:
        cell = by.get((attack, rate))
        if cell is None:
            lines.append(f"| {attack} {rate:.0%} | not run | | | | |")
            continue
        c = next(r for r in cell["records"] if r["detector"] == "combined")
        best, _ = art_best(cell)
        ours_at = best.get("sanitize_recall_at_same_count") if best else None
        detection = (c["recall"] or 0) >= 0.95 and c["quarantined"] <= 1.5 * c["n_poison"]
        asr = c["asr_after"] is not None and c["asr_after"] <= 0.02
        acc = base_acc is not None and c["clean_acc_after"] is not None and c["clean_acc_after"] >= base_acc - 0.01
        art = best is None or (ours_at is not None and ours_at >= (best["recall"] or 0))
        checks = (("recall", detection), ("ASR", asr), ("accuracy", acc), ("vs ART", art))
        missed = [name for name, ok in checks if not ok]
        share = c["quarantined"] / c["n_poison"]
        lines.append(
            f"| {attack} {rate:.0%} | {_f(c['recall'])}, {c['quarantined']:,} ({share:.2f}x) "
            f"| {_f(c['asr_after'])} ({_f(cell.get('asr_clean_model'))}) | {_f(c['clean_acc_after'], 4)} "
            f"| {_f(ours_at)} vs {_f(best['recall']) if best else '-'} "
            f"| {'met' if not missed else 'missed: ' + ', '.join(missed)} |"
        )
    return "\n".join(lines)


def compare(now: list[dict[str, Any]], before: list[dict[str, Any]]) -> str:
    """Markdown: each cell of ``now`` (matrix cells, or ``bench rescore`` rows) beside the same cell of
    ``before`` (the records it is held to):
    quarantined and recall of the verdict, and whether it is worse: recall lower by more than 0.005,
    or more clean samples quarantined by over 5 % of the poison count (on the clean cell: any more)."""

    def combined(cell: dict[str, Any]) -> dict[str, Any]:
        if "records" not in cell:  # a row of ``python -m bench rescore``: today's detectors on the cell's run
            return {"quarantined": cell["quarantined_now"], "recall": cell["recall"], "n_poison": cell["n_poison"]}
        return next(r for r in cell["records"] if r["detector"] == "combined")

    old = {(c["attack"], c["rate"]): combined(c) for c in before}
    lines = [
        "| attack | rate | poisons | quarantined before -> now | recall before -> now | worse? |",
        "|---|---|---|---|---|---|",
    ]
    for cell in sorted(now, key=lambda c: (c["attack"], c["rate"])):
        c, b = combined(cell), old.get((cell["attack"], cell["rate"]))
        if b is None:
            continue
        n = c["n_poison"] or 0
        if n:
            false_now = c["quarantined"] - round((c["recall"] or 0) * n)
            false_before = b["quarantined"] - round((b["recall"] or 0) * n)
            worse = (c["recall"] or 0) < (b["recall"] or 0) - 0.005 or false_now - false_before > 0.05 * n
        else:
            worse = c["quarantined"] > b["quarantined"]
        lines.append(
            f"| {cell['attack']} | {cell['rate']:.1%} | {n:,} | {b['quarantined']:,} -> {c['quarantined']:,} "
            f"| {_f(b['recall'])} -> {_f(c['recall'])} | {'**yes**' if worse else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench matrix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE (default: the whole matrix)")
    ap.add_argument("--force", action="store_true", help="rerun cells that already have results")
    ap.add_argument("--table", action="store_true", help="print the table of the results so far and stop")
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md tables and stop")
    ap.add_argument("--compare", type=Path, help="print --out's cells beside this records file's and stop")
    ap.add_argument("--base-asr", action="store_true", help="add the clean-data model's ASR to cells without it")
    ap.add_argument("--no-retrain", action="store_true", help="detection only: no clean model, no ASR after")
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "matrix.json")
    args = ap.parse_args(argv)
    if args.table:
        print_table(read_json(args.out))
        return
    if args.markdown:
        print(markdown(read_json(args.out)))
        return
    if args.compare:
        print(compare(read_json(args.out), read_json(args.compare)))
        return
    if args.base_asr:
        ws = workspace(args.home)
        for cell in read_json(args.out):
            if cell.get("asr_clean_model") is None and cell["attack"] != "none":
                cell["asr_clean_model"] = base_asr(ws, read_json(args.out), cell)
                save_cell(args.out, cell)
                print(f"{cell['attack']} {cell['rate']:.1%}: clean-data model ASR {cell['asr_clean_model']}")
        return
    code = commit()  # before the cells: the code that ran, not what the tree holds later
    require_fmnist()
    ws = workspace(args.home)
    ingest_fmnist(ws)
    backfill_reference_cache(ws, read_json(args.out))
    done = {(c["attack"], c["rate"]) for c in read_json(args.out)}
    todo = parse_only(args.only) if args.only is not None else ORDER
    for attack, rate in todo:
        if (attack, rate) in done and not args.force:
            print(f"{attack} {rate:.1%}: already in {args.out}, skipped", flush=True)
            continue
        cell = run_cell(ws, attack, rate, args.target, args.seed, code, retrain=not args.no_retrain)
        cell["asr_clean_model"] = base_asr(ws, read_json(args.out), cell)
        save_cell(args.out, cell)
        print_table([cell])
        sys.stdout.flush()


if __name__ == "__main__":
    main()
