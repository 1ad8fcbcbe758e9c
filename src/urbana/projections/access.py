"""How the API reads the read models: as one tenant, under row-level security.

    async with tenant_read(pool, tenant_id) as conn:
        page = await queries.list_conversations(conn, tenant_id, ...)

One read-only transaction on a pooled connection that first drops to `API_ROLE` (a
role that owns nothing, so the tables' policies bind it) and sets `app.tenant_id` for
that transaction only. A query that forgets its `WHERE tenant_id` still sees only this
tenant's rows; a connection going back to the pool keeps neither the role nor the
tenant (both are `LOCAL`). See docs/architecture.md, "Read models and replay".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from urbana.projections.schema import API_ROLE

# One round trip: `set_config(..., true)` is `SET LOCAL` (for `role`, `SET LOCAL ROLE`).
_ENTER = (
    "SELECT set_config('role', %s, true), set_config('transaction_read_only', 'on', true), "
    "set_config('app.tenant_id', %s, true)"
)


async def prepare_read_connection(conn: AsyncConnection[Any]) -> None:
    """A read pool's `configure`: jsonb (the sealed blobs every row carries) decoded by
    orjson, on this connection only; the stdlib decoder was half a list's client time."""
    set_json_loads(orjson.loads, conn)


async def enter_tenant(conn: AsyncConnection[Any], tenant_id: UUID | str) -> None:
    """Inside an open transaction: become the API role, scoped to `tenant_id`."""
    await conn.execute(_ENTER, (API_ROLE, str(UUID(str(tenant_id)))))


@asynccontextmanager
async def tenant_scope(
    conn: AsyncConnection[Any], tenant_id: UUID | str
) -> AsyncIterator[AsyncConnection[Any]]:
    """A read-only transaction on `conn` that sees only `tenant_id`'s read-model rows."""
    async with conn.transaction():
        await enter_tenant(conn, tenant_id)
        yield conn


@asynccontextmanager
async def tenant_read(
    pool: AsyncConnectionPool[Any], tenant_id: UUID | str
) -> AsyncIterator[AsyncConnection[Any]]:
    """`tenant_scope` on a connection of `pool`, given back when the block ends."""
    async with pool.connection() as conn, tenant_scope(conn, tenant_id) as scoped:
        yield scoped
