"""Pages and their cursors, shared by every list query.

A cursor is the sort key of a page's last item, base64url-encoded JSON: opaque to
clients, and checked when it comes back (`InvalidCursor` when it does not decode).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from urbana.errors import Rejected

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

T = TypeVar("T")


class InvalidCursor(Rejected):
    """A pagination cursor this module did not write (a client error: 400)."""

    def __init__(self, reason: str = "malformed cursor") -> None:
        super().__init__(400, reason)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: Sequence[Any]) -> str:
    raw = orjson.dumps([v.isoformat() if isinstance(v, datetime) else v for v in key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The sort key a cursor holds (`size` values), or InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(key, list) or len(key) != size:
        raise InvalidCursor("malformed cursor")
    if not all(isinstance(v, (str, int, float)) for v in key):
        raise InvalidCursor("malformed cursor")
    return key


class Conditions:
    """The WHERE of a list query: conditions joined by AND, their parameters in order."""

    __slots__ = ("_clauses", "params")

    def __init__(self, *clauses: str, params: Sequence[Any] = ()) -> None:
        self._clauses = list(clauses)
        self.params: list[Any] = list(params)

    def add(self, clause: str, *values: Any) -> None:
        self._clauses.append(clause)
        self.params.extend(values)

    def when(self, value: Any, clause: str) -> None:
        """A filter: `clause` with `value` as its parameter, when it is set (not None)."""
        if value is not None:
            self.add(clause, value)

    def after(self, cursor: str | None, clause: str) -> None:
        """The keyset condition of a (timestamp, id) cursor, when a page follows one."""
        if cursor is not None:
            self.add(clause, *time_and_id(cursor))

    def sql(self) -> str:
        return "WHERE " + " AND ".join(self._clauses)


def clamp_limit(limit: int) -> int:
    return max(1, min(MAX_LIMIT, limit))


async def fetch_rows(
    conn: AsyncConnection[Any], sql: str, params: Sequence[Any]
) -> list[dict[str, Any]]:
    """Every row of `sql`, each a dict by column name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def fetch_row(
    conn: AsyncConnection[Any], sql: str, params: Sequence[Any]
) -> dict[str, Any] | None:
    """The first row of `sql` as a dict by column name; None when there is none."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchone()


async def fetch_page(
    conn: AsyncConnection[Any], sql: str, params: Sequence[Any], limit: int, key: Sequence[str]
) -> tuple[list[Any], str | None]:
    """One page of `sql` (ordered by the unique `key`; `LIMIT` is added here): its rows
    and the cursor after them."""
    limit = clamp_limit(limit)
    return _cut(await fetch_rows(conn, sql + " LIMIT %s", (*params, limit + 1)), limit, key)


def time_and_id(cursor: str) -> list[Any]:
    """The key of a (timestamp, id) cursor, as the parameters of its condition."""
    at, after = decode_cursor(cursor, 2)
    return [cursor_time(at), cursor_uuid(after)]


def _cut(
    rows: list[dict[str, Any]], limit: int, key: Sequence[str]
) -> tuple[list[Any], str | None]:
    """The page's rows and the cursor after them (rows were fetched with limit + 1)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor([_plain(last[k]) for k in key])


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    return value


def cursor_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidCursor("malformed cursor")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCursor("malformed cursor") from exc


def cursor_uuid(value: Any) -> str:
    try:
        return str(UUID(str(value)))
    except ValueError as exc:
        raise InvalidCursor("malformed cursor") from exc
