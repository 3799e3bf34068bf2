"""Publishing a dataset version: its manifest in the store and its row in the catalog, once.

Ingest (an ingested version), the red team (a poisoned copy) and export (a clean version) all publish
through :func:`publish_version`, so they share one policy:

- A version id is a hash of its content, so a version already in the catalog is the same data: it is
  left exactly as it was published (manifest, files and row), and the caller is told so.
- Otherwise the manifest is written first and the row added after it, in the caller's transaction:
  a process killed in between leaves a manifest with no row, which the next publication rewrites;
  a row never points at a manifest that is not there.
- The manifest records the SHA-256 of every file it lists (``checksums``), taken here from the files
  as they are at publication unless the caller already took them (an export writes a copy of its
  manifest beside its files first). Readers (:class:`sanitize.data.CleanDataset`, the export) refuse
  files that no longer match and ``sanitize verify`` reports them. Manifests published before
  checksums existed carry none: they still load, and verify reports them as a warning.
- Two processes that publish the same new version at once (two approvals of one run, two ingests of
  the same files) both write identical manifests; the one whose row lands second finds it there and
  keeps it.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sanitize.catalog import Version
from sanitize.store import Manifest, Store


def is_published(session: Session, version_id: str) -> bool:
    """Whether the catalog already holds ``version_id``."""
    return session.get(Version, version_id) is not None


def publish_version(
    session: Session,
    store: Store,
    manifest: Manifest,
    *,
    run_id: str | None = None,
    status: str = "ready",
) -> bool:
    """Publish ``manifest`` as a version of its dataset, in ``session``'s transaction.

    Returns True when this call published it, False when the catalog already held the version (then
    nothing is written). ``status`` is the new row's (``ready`` for ingested and red-team versions,
    ``provisional`` or ``approved`` for a clean one). The manifest written is ``manifest`` with
    the checksums of its files (:meth:`sanitize.store.Store.with_checksums`) when it has none.
    """
    if is_published(session, manifest.version_id):
        return False
    if manifest.checksums is None:
        manifest = store.with_checksums(manifest)
    path = store.write_manifest(manifest)
    try:
        with session.begin_nested():
            session.add(
                Version(
                    id=manifest.version_id,
                    dataset=manifest.dataset,
                    kind=manifest.kind,
                    parent_id=manifest.parent_id,
                    run_id=run_id,
                    status=status,
                    n_train=manifest.n_train,
                    n_test=manifest.n_test,
                    manifest=str(path.relative_to(store.home)),
                )
            )
    except IntegrityError:
        # Another process published the same version between the check and the insert.
        if session.get(Version, manifest.version_id, populate_existing=True) is None:
            raise
        return False
    return True
