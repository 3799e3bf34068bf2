"""The benchmarks: ``python -m bench`` lists the commands (see ``bench/__main__.py``); figures in
``bench/RESULTS.md``, records in ``bench/results/*.json``."""
