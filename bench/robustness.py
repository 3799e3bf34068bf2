"""Robustness figures: kill -9 points, bad inputs, and ``sanitize verify``'s time on a large home.

The kill points and the bad-input kinds are the test suite's own tables (``tests/test_faults.py``,
``tests/test_bad_inputs.py``): each kill test kills a process at one point and asserts that the rerun
completes, flags what an uninterrupted run flags and leaves no debris after ``gc``; each bad-input
test asserts exit status 2, a message naming the file, row or sample, and an unchanged store. This
command runs them and counts, so the figures in ``bench/RESULTS.md`` are what the tests show today.
With ``--verify-home`` it also times ``sanitize verify`` over that data folder (a copy is used, so the
folder itself is never written).

    python -m bench robustness                                   # the two tables, ~2 min
    python -m bench robustness --verify-home data/bench          # and verify's time on the 60k runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench.records import RESULTS, ROOT, commit, machine, today, write_json

TABLES = {"kill": "tests/test_faults.py", "bad_input": "tests/test_bad_inputs.py"}


def run_table(test_file: str) -> list[dict[str, Any]]:
    """Run one test file; per test case, its id and whether it passed (skips and xfails say so)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, f"--junitxml={report}"],
            cwd=ROOT,
            check=False,
        )
        cases = []
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = "xfailed" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
            cases.append({"case": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
    return cases


def time_verify(home: Path) -> dict[str, Any]:
    """``sanitize verify`` over a copy of ``home``: seconds, exit status, its last lines."""
    with tempfile.TemporaryDirectory(dir=home.parent) as tmp:
        copy = Path(tmp) / "home"
        shutil.copytree(home, copy, ignore=shutil.ignore_patterns("prefect"))
        env = {**os.environ, "SANITIZE_HOME": str(copy)}
        env.pop("SANITIZE_CATALOG_URL", None)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "sanitize.cli", "verify"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return {"home": str(home), "seconds": round(seconds, 1), "exit_status": done.returncode, "output_tail": tail}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench robustness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--verify-home", type=Path, default=None, help="a data folder to time 'sanitize verify' on")
    ap.add_argument("--out", type=Path, default=RESULTS / "robustness.json")
    args = ap.parse_args(argv)
    record: dict[str, Any] = {"commit": commit(), "machine": machine(), "date": today()}
    for name, test_file in TABLES.items():
        # The table's rows are the parametrised cases; a file's other tests check the table itself.
        cases = [c for c in run_table(test_file) if "[" in str(c["case"])]
        passed = sum(c["outcome"] == "passed" for c in cases)
        record[name] = {"tried": len(cases), "passed": passed, "cases": cases}
        print(f"{name}: {len(cases)} tried, {passed} pass every assertion", flush=True)
        for c in cases:
            if c["outcome"] != "passed":
                print(f"  {c['outcome']}: {c['case']}")
    if args.verify_home is not None:
        record["verify"] = time_verify(args.verify_home.resolve())
        print(f"verify: {record['verify']['seconds']} s, exit {record['verify']['exit_status']}")
    write_json(args.out, record)


if __name__ == "__main__":
    main()
