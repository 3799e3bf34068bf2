"""Moving a catalog between databases: a team that started on SQLite moves to a shared PostgreSQL.

Rows are copied table by table in dependency order with their ids unchanged, so every reference
(a decision's quarantine entry, a version's run) still holds; the data folder stays where it is.
"""

from __future__ import annotations

from sqlalchemy import Integer, func, select, text

from sanitize.catalog import Base, Catalog
from sanitize.errors import SanitizeError


def copy_catalog(source: Catalog, target: Catalog, *, batch_size: int = 5000) -> dict[str, int]:
    """Copy every row of ``source`` into the empty catalog ``target``; return the rows per table.

    Refuses a target that already holds rows: merging two catalogs would mix two histories.
    """
    tables = Base.metadata.sorted_tables
    with target.engine.connect() as conn:
        busy = [t.name for t in tables if conn.scalar(select(func.count()).select_from(t))]
    if busy:
        raise SanitizeError(f"the target catalog {target.engine.url!r} is not empty (tables {', '.join(busy)})")
    copied: dict[str, int] = {}
    with source.engine.connect() as src, target.engine.begin() as dst:
        for table in tables:
            n = 0
            rows = src.execute(select(table)).mappings()
            while chunk := rows.fetchmany(batch_size):
                dst.execute(table.insert(), [dict(r) for r in chunk])
                n += len(chunk)
            copied[table.name] = n
        if dst.dialect.name == "postgresql":
            # Ids were copied as they were; the sequences behind them must continue after the largest.
            for table in tables:
                for col in table.primary_key.columns:
                    if isinstance(col.type, Integer) and col.autoincrement in (True, "auto"):
                        dst.execute(
                            text(
                                f"SELECT setval(pg_get_serial_sequence(:table, :col), "
                                f"COALESCE((SELECT MAX({col.name}) FROM {table.name}), 0) + 1, false)"
                            ),
                            {"table": table.name, "col": col.name},
                        )
    return copied
