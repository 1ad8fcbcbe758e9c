"""The access log (LGPD Art. 37): who read which subject's decrypted data, when, why.

One row per API read that returned a subject's personal data in clear (a conversation's
detail, a subject lookup, an export). Rows hold ids only: the caller (user or API key
id) and role, the lead, the resource read, the route template and the purpose the
caller gave (a legal ground or a ticket, at most 200 characters). The table is
row-level secured per tenant like the read models, and the API's role (`urbana_api`)
may INSERT and SELECT it, nothing else: the application cannot rewrite or drop what it
logged. Writes and reads run as that role under the caller's tenant, so a row cannot be
written into, or read from, another tenant. See docs/architecture.md, Access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from urbana.config import DEFAULT_STORE_WAIT_S
from urbana.projections.queries.paging import Conditions, Page, fetch_page
from urbana.projections.schema import API_ROLE, TENANT_SETTING, tenant_security

ACCESS_LOG_TABLE = "urbana_access_log"
MAX_PURPOSE = 200

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS {ACCESS_LOG_TABLE} (
        id UUID PRIMARY KEY,
        tenant_id UUID NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        actor TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        role TEXT NOT NULL,
        lead_id UUID,
        resource TEXT NOT NULL,
        route TEXT NOT NULL,
        purpose TEXT CHECK (char_length(purpose) <= {MAX_PURPOSE})
    )""",
    f"CREATE INDEX IF NOT EXISTS {ACCESS_LOG_TABLE}_at "
    f"ON {ACCESS_LOG_TABLE} (tenant_id, at DESC, id DESC)",
    f"CREATE INDEX IF NOT EXISTS {ACCESS_LOG_TABLE}_lead "
    f"ON {ACCESS_LOG_TABLE} (tenant_id, lead_id, at DESC, id DESC)",
    *tenant_security(ACCESS_LOG_TABLE),  # RLS, the tenant policy, SELECT for the API role
    # Append-only for the API: INSERT besides SELECT; never UPDATE, DELETE or TRUNCATE.
    f"GRANT INSERT ON {ACCESS_LOG_TABLE} TO {API_ROLE}",
)

# `SET LOCAL ROLE`, the tenant and the waits, in one round trip (as `tenant_read`, but
# writable). The waits are bounded: a read waiting for its log entry must not hang.
_ENTER = (
    "SELECT set_config('role', %s, true), set_config('app.tenant_id', %s, true), "
    "set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)"
)
_INSERT = (
    f"INSERT INTO {ACCESS_LOG_TABLE} "  # noqa: S608
    "(id, tenant_id, actor, actor_kind, role, lead_id, resource, route, purpose) "
    f"VALUES (%s, {TENANT_SETTING}, %s, %s, %s, %s, %s, %s, %s) RETURNING at"
)


@dataclass(frozen=True, slots=True)
class AccessEntry:
    id: UUID
    tenant_id: UUID
    at: datetime
    actor: str
    actor_kind: str
    role: str
    lead_id: UUID | None
    resource: str
    route: str
    purpose: str | None


async def record(
    pool: AsyncConnectionPool[Any],
    tenant_id: UUID,
    *,
    actor: str,
    actor_kind: str,
    role: str,
    lead_id: UUID | None,
    resource: str,
    route: str,
    purpose: str | None,
    wait_s: float = DEFAULT_STORE_WAIT_S,
) -> UUID:
    """Append one entry as the API role, in the tenant; its id once committed.

    A lock or a statement that takes longer than `wait_s` fails (psycopg's
    OperationalError), as a pool that has no connection free within its timeout does.
    """
    entry_id = uuid4()
    wait = f"{int(wait_s * 1000)}ms"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_ENTER, (API_ROLE, str(tenant_id), wait, wait))
        await conn.execute(
            _INSERT, (entry_id, actor, actor_kind, role, lead_id, resource, route, purpose)
        )
    return entry_id


async def entries(
    conn: AsyncConnection[Any],
    tenant_id: UUID,
    *,
    lead_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[AccessEntry]:
    """The tenant's entries, newest first: of one lead, from `since` (inclusive) to
    `until` (exclusive). Run in `tenant_read` (the policy binds the query too)."""
    where = Conditions("tenant_id = %s", params=[str(tenant_id)])
    where.when(None if lead_id is None else str(lead_id), "lead_id = %s")
    where.when(since, "at >= %s")
    where.when(until, "at < %s")
    where.after(cursor, "(at, id) < (%s, %s::uuid)")
    rows, next_cursor = await fetch_page(
        conn,
        f"SELECT * FROM {ACCESS_LOG_TABLE} {where.sql()} ORDER BY at DESC, id DESC",  # noqa: S608
        where.params,
        limit,
        ("at", "id"),
    )
    return Page([AccessEntry(**row) for row in rows], next_cursor)
