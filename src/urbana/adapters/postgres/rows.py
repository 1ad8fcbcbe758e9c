"""Rows read back as ids: the one-column `SELECT`s of the adapters on the store's pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.faults import store_call


def as_uuid(value: Any) -> UUID:
    """`value` (a UUID, or its text) as a UUID."""
    return value if isinstance(value, UUID) else UUID(str(value))


def select_ids(
    pool: ConnectionPool, doing: str, query: str, params: Sequence[Any] = ()
) -> list[UUID]:
    """The first column of `query`'s rows as UUIDs; a store fault is `StoreUnavailable`."""
    with store_call(doing), pool.connection() as conn:
        rows = conn.execute(query, params).fetchall()
    return [as_uuid(row[0]) for row in rows]
