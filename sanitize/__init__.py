"""sanitize: find backdoor-poisoned training samples, quarantine them, export clean versions.

The stages follow a sample's journey: :mod:`sanitize.ingest` -> :mod:`sanitize.store` ->
:mod:`sanitize.models` / :mod:`sanitize.features` -> :mod:`sanitize.detect` ->
:mod:`sanitize.quarantine` -> :mod:`sanitize.export` / :mod:`sanitize.data`;
:mod:`sanitize.pipeline` runs them in order and :mod:`sanitize.evaluate` measures them.
"""

__version__ = "0.1.0"
