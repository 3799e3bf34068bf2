"""``python -m sanitize.cli``: the library's command line, without the Prefect commands (see :mod:`flows.cli`)."""

from sanitize.cli import main

main()
