"""Prefect flows over the sanitize library: the cleaning run, the scheduled run, serving them, and the
``sanitize`` command that reaches them (:mod:`flows.cli`).

Prefect reads its settings when first imported, so they are set here, before any flow module
imports it.
"""

import os
from pathlib import Path

# Offline machines: no telemetry (it logs errors and can lock the local database).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A loaded 2-core machine can need more than the default 20 s to start the local API.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("SANITIZE_HOME", "data")).resolve() / "prefect"))


def make_prefect_home() -> None:
    """Create Prefect's folder (its local server times out without it); called by the modules that use
    Prefect, so that ``sanitize --help`` or ``sanitize datasets`` write nothing."""
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
