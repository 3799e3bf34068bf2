"""sanitize: find backdoor-poisoned training samples, quarantine them, export clean versions.

The modules follow a sample's journey, and each imports only the ones below it: the floor
(:mod:`~sanitize.config`, :mod:`~sanitize.store`, :mod:`~sanitize.catalog`,
:mod:`~sanitize.versions`), then :mod:`~sanitize.ingest` -> :mod:`~sanitize.runs` ->
:mod:`~sanitize.training` / :mod:`~sanitize.features` -> :mod:`~sanitize.detect` ->
:mod:`~sanitize.quarantine` -> :mod:`~sanitize.export` -> :mod:`~sanitize.review`, with
:mod:`~sanitize.evaluate` measuring them and :mod:`~sanitize.data` reading the result.
:mod:`sanitize.pipeline` conducts them in order.
"""

__version__ = "0.1.0"
