"""Probes: scripts that each served one investigation (``bench/RESULTS.md`` names it), kept runnable
as ``python -m bench probe NAME`` so their figures can be measured again."""
