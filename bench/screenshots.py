"""Screenshots of every review page, for the README: ``docs/screenshots/*.png``, regenerated.

Cleans the built-in demo (the digits with BadNets on 5 %, no retraining) in a temporary data
folder, logs in as a reviewer, and takes each page in Debian's Chromium (headless, through
Playwright; ``apt-get install -y chromium`` and ``pip install playwright``, no browser download):
the runs, a run, its quarantine, every sample sorted by a detector, a sample, more like it in input
space, the trigger of the poisoned class, and the pictures with the projection coloured by class.

    python -m bench screenshots                 # writes docs/screenshots/*.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import uvicorn

from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.pipeline import run_cleaning
from sanitize.web.app import create_app
from sanitize.web.auth import add_reviewer
from sanitize.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def pages(run_id: str, poison: str) -> dict[str, str]:
    """File name -> page, in the order a reviewer meets them."""
    return {
        "runs": "/",
        "run": f"/runs/{run_id}",
        "quarantine": f"/runs/{run_id}/quarantine?per_page=50",
        "all-samples": f"/runs/{run_id}/samples?detector=knn&sort=score_desc&per_page=100",
        "sample": f"/runs/{run_id}/samples/{poison}",
        "more-like-this": f"/runs/{run_id}/similar?sample_id={poison}&space=pixels",
        "trigger": f"/runs/{run_id}/trigger",
        "pictures": f"/runs/{run_id}/pictures?colour=class",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench screenshots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900, help="Viewport height; each shot is the whole page up to 3x it.")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright  # an optional dependency: only this command needs it

    if not CHROMIUM.is_file():
        raise SystemExit(f"no {CHROMIUM}: apt-get install -y chromium")
    home = Path(tempfile.mkdtemp(prefix="sanitize-screens-"))
    try:
        ws = Workspace(Settings(home=home, catalog_url=None))
        run_id = run_cleaning(RunConfig(redteam=RedTeamConfig(), retrain=False), ws, progress=False).run_id
        token = add_reviewer(ws.catalog, "ana")
        verdict = pq.read_table(ws.store.run_dir(run_id) / "verdict.parquet", columns=["sample_id", "quarantine"])
        flagged = np.asarray(verdict.column("quarantine").to_numpy(zero_copy_only=False))
        poison = str(np.asarray(verdict.column("sample_id").to_pylist())[flagged][0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(f"{base}/login")
            page.fill("#token", token)
            page.click("#login-submit")
            page.wait_for_url(f"{base}/")
            for name, url in pages(run_id, poison).items():
                page.goto(base + url)
                page.wait_for_load_state("networkidle")
                full = page.evaluate("() => document.documentElement.scrollHeight")
                clip = {"x": 0, "y": 0, "width": args.width, "height": min(full, 3 * args.height)}
                path = args.out / f"{name}.png"
                page.screenshot(path=str(path), clip=clip, full_page=True)
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {base}{url}")
            browser.close()
        server.should_exit = True
        thread.join(timeout=10)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
