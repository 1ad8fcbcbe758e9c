"""Where a relay keeps the position it has published up to, one relay per name and store.

The position is a row of `urbana_relay_position` (name, position), written only after
the broker acknowledged everything up to it. A session advisory lock on the relay's
name makes a second relay of the same name wait (or be refused); PostgreSQL releases
it when the holder's connection goes, so a crashed relay's successor takes over.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from urbana.adapters.postgres.schema import RELAY_POSITION_TABLE, qualified


class PositionStore:
    """The saved position of relay `name` in `schema`, on a connection the relay owns."""

    def __init__(self, schema: str | None, name: str) -> None:
        self.schema = schema
        self.name = name
        self._table = qualified(schema, RELAY_POSITION_TABLE)

    async def claim(self, conn: AsyncConnection[Any]) -> bool:
        """Take the name's lock; False if another relay holds it.

        The table itself is `adapters.postgres.schema`'s, created when the process starts.
        """
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
            (f"urbana-relay:{self.schema or 'public'}:{self.name}",),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def load(self, conn: AsyncConnection[Any]) -> int:
        """The saved position (0 for a relay that never published)."""
        cur = await conn.execute(
            sql.SQL("SELECT position FROM {} WHERE name = %s").format(self._table), (self.name,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def save(self, conn: AsyncConnection[Any], position: int) -> None:
        """Record that every event up to `position` was acknowledged by the broker."""
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (name, position, updated_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE "
                "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
            ).format(self._table),
            (self.name, position),
        )
