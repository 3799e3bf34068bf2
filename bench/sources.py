"""Benchmark: naming the poisoned supplier. Fashion-MNIST's 60,000 training images are dealt to
10 sources; bad sources stamp BadNets (3x3 corner patch, relabelled to class 0) on a share of their
own images: one source poisons 20 % of its share ("one-20") or two poison 10 % each ("two-10"). The
overall poison rate is set by how much of the data the bad sources hold (at 1 %, the one bad source
holds 5 % of the data; at 5 %, 25 %); the good sources split the rest evenly. Each source is
ingested as its own ``.npz`` with its name, the test split as a separate ``holdout`` source, and an
ordinary cleaning run (no red team, no rate given, no retraining: naming needs the quarantine only)
cleans it. The run's per-source analysis names suspicious sources; this script scores that against
the truth, per trial and over all trials of a setting (``source_precision``, ``source_recall``).

    python -m bench sources                    # one-20 and two-10 at 1, 2 and 5 %; clean (about 25 min)
    python -m bench sources --trials 2         # two trials (seeds) at each rate
    python -m bench sources --settings one-20 --rates 0.02 --trials 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.data import load_fmnist, workspace
from bench.records import DATA, RESULTS, commit, read_json, stamp, write_json
from sanitize.config import RunConfig
from sanitize.evaluate.metrics import detection_figures
from sanitize.evaluate.redteam import stamp_patch
from sanitize.ingest.core import ingest_path
from sanitize.pipeline import run_cleaning

N_SOURCES = 10
TARGET = 0
SETTINGS = {"one-20": {"vendor-3": 0.20}, "two-10": {"vendor-3": 0.10, "vendor-7": 0.10}, "clean": {}}


def deal(n: int, bad: dict[str, float], overall: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Deal ``n`` sample indices to the sources: the bad ones hold ``overall / rate`` of the data between
    them, so that their poisons make ``overall`` of it; the good ones split the rest evenly."""
    order = rng.permutation(n)
    names = [f"vendor-{k}" for k in range(N_SOURCES)]
    if not bad:
        return dict(zip(names, np.array_split(order, N_SOURCES), strict=True))
    sizes = {name: int(round(overall / rate / len(bad) * n)) for name, rate in bad.items()}
    good = [name for name in names if name not in bad]
    rest = n - sum(sizes.values())
    sizes.update({name: len(part) for name, part in zip(good, np.array_split(np.arange(rest), len(good)), strict=True)})
    bounds = np.cumsum([0] + [sizes[name] for name in names])
    return {name: order[bounds[k] : bounds[k + 1]] for k, name in enumerate(names)}


def run_trial(
    data: dict[str, tuple[np.ndarray, np.ndarray]], home: Path, setting: str, overall: float, seed: int, code: str
) -> dict[str, Any]:
    """One cleaning run over 10 suppliers; its record (``code``: the commit that runs) against the truth."""
    bad = SETTINGS[setting]
    x, y = data["train"]
    rng = np.random.default_rng(seed)
    shares = deal(len(y), bad, overall, rng)
    tag = f"{setting}-{overall:g}-s{seed}" if bad else f"{setting}-s{seed}"
    ws = workspace(home / tag)
    dataset = f"fmnist-sources-{tag}".replace(".", "p")
    truth: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, idx in shares.items():
            xs, ys = x[idx].copy(), y[idx].copy()
            mask = np.zeros(len(ys), dtype=bool)
            if name in bad:
                candidates = np.flatnonzero(ys != TARGET)
                chosen = rng.choice(candidates, size=int(round(bad[name] * len(ys))), replace=False)
                xs[chosen] = stamp_patch(xs[chosen])
                ys[chosen] = TARGET
                mask[chosen] = True
            path = Path(tmp) / f"{name}.npz"
            np.savez(path, x=xs, y=ys)
            ingest_path(ws.catalog, ws.store, dataset=dataset, path=path, source=name, actor="bench")
            truth.update({(name, f"train:{i}"): bool(m) for i, m in enumerate(mask)})
        test = Path(tmp) / "holdout.npz"
        np.savez(test, x=data["test"][0], y=data["test"][1])
        ingest_path(ws.catalog, ws.store, dataset=dataset, path=test, source="holdout", split="test", actor="bench")
    start = time.perf_counter()
    config = RunConfig(dataset=dataset, seed=seed, retrain=False)
    result = run_cleaning(config, ws, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    s = result.summary
    named = set(s["suspicious_sources"])
    verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["sample_id", "quarantine", "suspicion_score"])
    prov = ws.store.read_column_table(
        ws.store.manifest(dataset, result.version), ["sample_id", "source", "locator"], split="train"
    )
    if prov.column("sample_id").to_pylist() != verdict.column("sample_id").to_pylist():
        raise RuntimeError(f"run {result.run_id}: verdict and manifest list samples in different orders")
    is_poison = np.array(
        [
            truth[(src, loc)]
            for src, loc in zip(prov.column("source").to_pylist(), prov.column("locator").to_pylist(), strict=True)
        ]
    )
    fig = detection_figures(
        is_poison, verdict.column("quarantine").to_numpy(), verdict.column("suspicion_score").to_numpy()
    )
    return {
        "dataset": "fashion-mnist",
        "setting": setting,
        "overall_rate": overall if bad else 0.0,
        "trial_seed": seed,
        "attack": "badnets" if bad else "none",
        "rate": round(float(is_poison.mean()), 4),
        "target": TARGET if bad else None,
        "detector": "combined",
        "n_train": len(is_poison),
        "n_sources": N_SOURCES,
        "source_sizes": {name: len(idx) for name, idx in shares.items()},
        "bad_sources": sorted(bad),
        "named_sources": sorted(named),
        **fig.as_dict(),
        "clean_acc_before": s["clean_acc_before"],
        "per_source": s["per_source"],
        "seconds": round(seconds, 1),
        "run_id": result.run_id,
        **stamp(code),
    }


def pooled(trials: list[dict[str, Any]]) -> dict[str, float | None]:
    """Source precision and recall over all trials of a setting: named-and-bad over named, over bad."""
    named = sum(len(t["named_sources"]) for t in trials)
    bad = sum(len(t["bad_sources"]) for t in trials)
    hits = sum(len(set(t["named_sources"]) & set(t["bad_sources"])) for t in trials)
    precision = hits / named if named else (1.0 if bad == 0 else 0.0)
    return {"source_precision": precision, "source_recall": hits / bad if bad else None}


def merge(old: list[dict[str, Any]], trials: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict, int]:
    """The records with ``trials`` in place of the old trials of the same setting, rate and seed; the
    setting's pooled source precision and recall recomputed over all its trials, kept and new."""

    def key(r: dict[str, Any]) -> tuple[str, float, int]:
        return r["setting"], r["overall_rate"], r["trial_seed"]

    new_keys = {key(t) for t in trials}
    records = [r for r in old if key(r) not in new_keys] + trials
    setting = trials[0]["setting"]
    same = [r for r in records if r["setting"] == setting]
    figures = pooled(same)
    for rec in same:
        rec.update(figures)
    return records, figures, len(same)


def _p(value: float) -> str:
    return "< 1e-300" if value < 1e-300 else f"{value:.0e}"


def markdown(records: list[dict[str, Any]]) -> str:
    """The RESULTS.md table: one row per trial, with the bad sources' counts and the worst clean source."""
    lines = [
        "| setting | overall rate | trial | poisons | named | bad sources: quarantined of their samples (p) "
        "| worst clean source | quarantined, detection recall, clean FPR | source precision / recall (setting) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["setting"] != "clean", r["setting"], r["overall_rate"], r["trial_seed"])):
        per = r["per_source"]
        bad = [per[s] for s in r["bad_sources"]]
        clean = [v for s, v in per.items() if s not in r["bad_sources"] and s != "holdout"]
        worst = max(clean, key=lambda v: v["share"], default=None)
        bad_s = "; ".join(f"{v['quarantined']:,} of {v['samples']:,} (p {_p(v['p_value'])})" for v in bad) or "-"
        worst_s = f"{worst['quarantined']} of {worst['samples']:,}" if worst else "-"
        recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        src_recall = "-" if r["source_recall"] is None else f"{r['source_recall']:.2f}"
        lines.append(
            f"| {r['setting']} | {r['overall_rate']:.0%} | {r['trial_seed']} | {r['n_poison']:,} "
            f"| {', '.join(r['named_sources']) or 'none'} | {bad_s} | {worst_s} "
            f"| {r['quarantined']:,}, {recall}, {r['fpr']:.4f} | {r['source_precision']:.2f} / {src_recall} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench sources", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--rates", type=float, nargs="*", default=[0.01, 0.02, 0.05], help="overall poison rates")
    ap.add_argument("--trials", type=int, default=1, help="trials per setting and rate (seeds 0, 1, ...)")
    ap.add_argument("--home", type=Path, default=DATA / "bench-sources")
    ap.add_argument("--out", type=Path, default=RESULTS / "sources.json")
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md table of the records and stop")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(read_json(args.out)))
        return
    code = commit()  # once, before the trials: a commit made while they run must not relabel them
    data = load_fmnist()
    for setting in args.settings:
        trials = []
        for overall in args.rates if SETTINGS[setting] else [0.0]:
            for seed in range(args.trials):
                rec = run_trial(data, args.home, setting, overall, seed, code)
                trials.append(rec)
                print(
                    f"{setting} {overall:.0%} trial {seed}: named {rec['named_sources']} (bad {rec['bad_sources']}), "
                    f"quarantined {rec['quarantined']} for {rec['n_poison']} poisons, recall {rec['recall']}, "
                    f"fpr {rec['fpr']:.4f}, {rec['seconds']:.0f} s",
                    flush=True,
                )
        records, figures, n = merge(read_json(args.out), trials)
        write_json(args.out, records)
        print(f"{setting}: {figures} over {n} trials", flush=True)


if __name__ == "__main__":
    main()
