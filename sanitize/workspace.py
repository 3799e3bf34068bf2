"""A workspace: the settings, catalog and store that every stage works against."""

from __future__ import annotations

from functools import cached_property

from sanitize.catalog import Catalog
from sanitize.config import Settings
from sanitize.processes import mark_interrupted_runs
from sanitize.store import Store


class Workspace:
    """The data folder and its catalog. Cheap to build; stages rebuild it from ``Settings``."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.settings.home.mkdir(parents=True, exist_ok=True)

    @cached_property
    def catalog(self) -> Catalog:
        """The catalog; opening it first marks the runs whose process is gone as interrupted."""
        catalog = Catalog(self.settings.resolved_catalog_url)
        mark_interrupted_runs(catalog)
        return catalog

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.home)
