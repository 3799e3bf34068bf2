"""Errors a user can act on. Each names the file, row or sample and what is wrong."""

from __future__ import annotations


class SanitizeError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class InputError(SanitizeError):
    """Input data (a file, a row, a sample) is unreadable or malformed."""


class NotFoundError(SanitizeError):
    """A named dataset, version, run or sample does not exist."""


class DetectionError(SanitizeError):
    """A detector could not produce a verdict; the run must not pass the data as clean."""


class InvariantError(SanitizeError):
    """A bookkeeping invariant (kept + quarantined = ingested) does not hold."""
