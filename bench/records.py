"""What every benchmark record carries, and reading and writing the results files.

A record says which code ran (:func:`commit`), where (:func:`machine`) and when (:func:`today`);
results files are JSON under ``bench/results/`` written atomically, so a benchmark stopped halfway
leaves the last complete file. The matrix's records (one per detector of a cleaning run) are built
by :func:`records_for`; its cells are read, selected and saved by the helpers at the end.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sanitize.evaluate.metrics import detection_figures
from sanitize.pipeline import RunResult
from sanitize.store import atomic_write_json
from sanitize.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "data"


def commit() -> str:
    """The checkout's short commit (``+dirty`` when sanitize/ has changes); ``SANITIZE_COMMIT`` where a
    copy of the tree travels without its git history (a borrowed GPU machine).

    Take it once, before a benchmark's runs: a record names the code that ran, not what the tree
    holds when the record is written.
    """
    if os.environ.get("SANITIZE_COMMIT"):
        return os.environ["SANITIZE_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "sanitize"], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> str:
    """Host, cores, and where torch trains: the CUDA device's name when there is one."""
    cpu = platform.processor() or platform.machine()
    where = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    python = platform.python_version()
    return f"{platform.node()}: {os.cpu_count()} cpu {cpu}, torch {torch.__version__} {where}, {python}"


def today() -> str:
    """The UTC date, as records write it."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def stamp(code: str) -> dict[str, str]:
    """The fields that say which code ran, where and when: ``commit``, ``machine``, ``date``."""
    return {"commit": code, "machine": machine(), "date": today()}


def read_json(path: Path, default: Any = None) -> Any:
    """A results file's content; ``default`` (an empty list unless given) when there is none yet."""
    if path.exists():
        return json.loads(path.read_text())
    return [] if default is None else default


def write_json(path: Path, obj: Any) -> None:
    """Write a results file atomically (sorted keys, two-space indent)."""
    atomic_write_json(path, obj)


def poison_mask(run_dir: Path, ids: list[str], *, strict: bool = True) -> np.ndarray:
    """Per sample of ``ids``, whether the red team poisoned it: (n,) bool from the run's
    ``ground_truth.parquet``, all False for a run without one. ``strict``: a sample missing from the
    ground truth raises ``KeyError``; otherwise it counts as clean."""
    path = run_dir / "ground_truth.parquet"
    if not path.exists():
        return np.zeros(len(ids), dtype=bool)
    truth = pq.read_table(path, columns=["sample_id", "is_poison"])
    gt = dict(zip(truth.column("sample_id").to_pylist(), truth.column("is_poison").to_pylist(), strict=True))
    return np.array([gt[s] if strict else bool(gt.get(s, False)) for s in ids], dtype=bool)


def records_for(
    result: RunResult,
    *,
    dataset: str,
    attack: str,
    rate: float,
    target: int | None,
    seconds: float,
    code: str,
) -> list[dict[str, Any]]:
    """The matrix's records of one cleaning run: one for the combined verdict and one per detector.

    Each carries the setting (``dataset``, ``attack``, ``rate``, ``target``, ``n_train``, ``run_id``),
    the stamp, the run's ``seconds`` and stage ``timings``, ``estimated_poison_rate``, the detection
    figures against the ground truth, and (the combined verdict only; None for a detector alone)
    ``clean_acc_before/after`` and ``asr_before/after``.
    """
    s = result.summary
    verdict = pq.read_table(result.run_dir / "verdict.parquet")
    base = {
        "dataset": dataset,
        "attack": attack,
        "rate": rate,
        "target": target,
        "n_train": s["ingested"],
        "run_id": result.run_id,
        **stamp(code),
        "seconds": round(seconds, 1),
        "timings": s["timings"],
        "estimated_poison_rate": s["estimated_poison_rate"],
    }
    is_poison = poison_mask(result.run_dir, verdict.column("sample_id").to_pylist())
    detectors = ["combined"] + [c[: -len("_flag")] for c in verdict.column_names if c.endswith("_flag")]
    after = ("clean_acc_before", "clean_acc_after", "asr_before", "asr_after")
    out = []
    for det in detectors:
        flag_col, score_col = (
            ("quarantine", "suspicion_score") if det == "combined" else (f"{det}_flag", f"{det}_score")
        )
        fig = detection_figures(is_poison, verdict.column(flag_col).to_numpy(), verdict.column(score_col).to_numpy())
        rec = {**base, "detector": det, **fig.as_dict()}
        rec.update({k: s.get(k) for k in after} if det == "combined" else dict.fromkeys(after))
        out.append(rec)
    return out


# --- the matrix's cells (bench/results/matrix.json: one dict per attack and rate) ----------------
def save_cell(out: Path, cell: dict[str, Any]) -> None:
    """Put ``cell`` in ``out`` in place of an earlier cell of the same attack and rate."""
    cells = [c for c in read_json(out) if (c["attack"], c["rate"]) != (cell["attack"], cell["rate"])]
    write_json(out, cells + [cell])


def parse_only(specs: list[str]) -> list[tuple[str, float]]:
    """``--only`` specs (``ATTACK:RATE``, ``none`` for the clean run) as (attack, rate) pairs."""
    cells = []
    for spec in specs:
        attack, _, rate = spec.partition(":")
        try:
            cells.append((attack, float(rate or 0)))
        except ValueError:
            sys.exit(f"--only {spec!r}: expected ATTACK:RATE, for example blend:0.05")
    return cells


def local_cells(ws: Workspace, cells: list[dict[str, Any]], only: list[str] | None) -> list[dict[str, Any]]:
    """The cells asked for (``--only`` specs; None: all) whose run folder is in ``ws``. A record from
    another machine has no run folder (features, images, models) here: it is named and skipped."""
    wanted = set(parse_only(only)) if only is not None else None
    here = []
    for cell in cells:
        if wanted is not None and (cell["attack"], cell["rate"]) not in wanted:
            continue
        if not (ws.store.run_dir(cell["run_id"]) / "context.json").is_file():
            where = f"{cell['attack']:15} {cell['rate']:6.1%}"
            print(f"{where}  skipped: run {cell['run_id']} is not in {ws.settings.home}")
            continue
        here.append(cell)
    return here
