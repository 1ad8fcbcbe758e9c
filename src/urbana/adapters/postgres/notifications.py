"""The `NotificationLedger` on PostgreSQL: one row of `urbana_notifications` per notice.

    pending --sending()--> sending --failed()--> pending ...
                                  --finish()--> sent | refused | unknown | expired

`claim` inserts the row, or takes over a `pending` one whose lease ran out (its
notifier died between attempts). A row left in `sending` by a notifier that died with
its request out is never taken over: the chat may have the message, and one missed
notice is better than two. Every change names its owner, so a notifier that lost its
claim cannot move a row another one holds.

It runs on the store's (synchronous) pool in a worker thread, as the event store does.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.schema import NOTIFICATIONS_TABLE, qualified
from urbana.application.notifications import Claim


class PgNotificationLedger:
    """Notices claimed, being sent and ended, shared by every notifier on the store."""

    def __init__(self, pool: ConnectionPool, schema: str | None) -> None:
        self._pool = pool
        table = qualified(schema, NOTIFICATIONS_TABLE)
        self._claim = sql.SQL(
            "INSERT INTO {t} AS n (key, tenant_id, state, owner, lease_until) "
            "VALUES (%s, %s, 'pending', %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, "
            "lease_until = EXCLUDED.lease_until, updated_at = now() "
            "WHERE n.state = 'pending' AND n.lease_until < now() "
            "RETURNING n.state"
        ).format(t=table)
        self._state = sql.SQL("SELECT state FROM {t} WHERE key = %s").format(t=table)
        self._sending = sql.SQL(
            "UPDATE {t} SET state = 'sending', attempts = attempts + 1, "
            "lease_until = now() + make_interval(secs => %s), updated_at = now() "
            "WHERE key = %s AND owner = %s AND state = 'pending'"
        ).format(t=table)
        self._failed = sql.SQL(
            "UPDATE {t} SET state = 'pending', detail = %s, "
            "lease_until = now() + make_interval(secs => %s), updated_at = now() "
            "WHERE key = %s AND owner = %s AND state = 'sending'"
        ).format(t=table)
        self._finish = sql.SQL(
            "UPDATE {t} SET state = %s, detail = %s, updated_at = now() "
            "WHERE key = %s AND owner = %s AND state IN ('pending', 'sending')"
        ).format(t=table)
        self._row = sql.SQL("SELECT state, attempts, detail FROM {t} WHERE key = %s").format(
            t=table
        )

    async def claim(self, key: str, tenant_id: UUID, owner: UUID, lease_s: float) -> Claim:
        """Take the notice `key` for `owner` unless it is done or held by a live lease."""
        return await asyncio.to_thread(self._claim_now, key, tenant_id, owner, lease_s)

    def _claim_now(self, key: str, tenant_id: UUID, owner: UUID, lease_s: float) -> Claim:
        with self._pool.connection() as conn:
            if conn.execute(self._claim, (key, tenant_id, owner, lease_s)).fetchone():
                return Claim.OURS
            row = conn.execute(self._state, (key,)).fetchone()
        return Claim.BUSY if row is not None and row[0] == "pending" else Claim.DONE

    async def sending(self, key: str, owner: UUID, lease_s: float) -> bool:
        """Record that a request is about to go out; False if `owner` lost the claim."""
        return await self._update(self._sending, (lease_s, key, owner))

    async def failed(self, key: str, owner: UUID, lease_s: float, reason: str) -> None:
        """The request surely did not get through: the notice waits for a retry."""
        await self._update(self._failed, (reason[:500], lease_s, key, owner))

    async def finish(self, key: str, owner: UUID, state: str, detail: str) -> None:
        """The notice ended: `sent`, `refused`, `unknown` or `expired`."""
        await self._update(self._finish, (state, detail[:500], key, owner))

    async def row(self, key: str) -> tuple[str, int, str | None] | None:
        """(state, attempts, detail) of a notice, for operators and tests."""

        def read() -> Any:
            with self._pool.connection() as conn:
                return conn.execute(self._row, (key,)).fetchone()

        found = await asyncio.to_thread(read)
        return None if found is None else (str(found[0]), int(found[1]), found[2])

    async def _update(self, statement: sql.Composed, params: tuple[Any, ...]) -> bool:
        def run() -> bool:
            with self._pool.connection() as conn:
                return conn.execute(statement, params).rowcount == 1

        return await asyncio.to_thread(run)
