"""A test hook for fault injection: stop a process at a named point so a test can kill it there.

With ``SANITIZE_TEST_PAUSE_AT=NAME`` in the environment, the process that reaches the point ``NAME``
(a run's stage, such as ``detect``, or an ingest's step, such as ``ingest.commit``) creates the file
named by ``SANITIZE_TEST_PAUSE_FILE`` and sleeps, so that a test can send it SIGKILL exactly there.
Without the variable a pause point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT = "SANITIZE_TEST_PAUSE_AT"
PAUSE_FILE = "SANITIZE_TEST_PAUSE_FILE"
PAUSE_S = 600.0  # long enough for any test to kill it; a forgotten variable still ends


def pause_point(name: str) -> None:
    """Pause here (see the module's docstring) when the environment names this point."""
    if os.environ.get(PAUSE_AT) != name:
        return
    marker = os.environ.get(PAUSE_FILE)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {name}\n")
    time.sleep(PAUSE_S)
