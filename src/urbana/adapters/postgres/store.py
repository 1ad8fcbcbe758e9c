"""Build the event-sourced application on PostgreSQL (psycopg 3).

Every wait for PostgreSQL is bounded by one figure, the store wait (`wait_s`): a pool
hands out a connection within it or fails, a new connection gives up connecting, a
write gives up on a table lock or a statement, and a failed call is retried only while
it lasts. So with the server down a call fails in about that time, never tens of
seconds later (the webhook answer is bounded separately, by the `StoreGate`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import tenacity
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg_pool import ConnectionPool

from urbana.adapters import tracing
from urbana.adapters.crypto import PostgresSubjectCipher
from urbana.adapters.postgres.faults import store_call, store_method
from urbana.adapters.postgres.schema import EVENTS_TABLE
from urbana.application.app import UrbanaApp
from urbana.config import DEFAULT_STORE_WAIT_S, connect_timeout_s, conninfo, postgres_parts


def _within_the_wait(method: Any) -> Callable[..., Any]:
    """The library's method without its own retries, retried only within the store wait.

    What still fails after the wait is a `StoreUnavailable` (from the library's error).
    """
    # The library's decorator uses functools.wraps; our own methods have none.
    unbounded: Callable[..., Any] = getattr(method, "__wrapped__", method)

    @store_method
    @functools.wraps(unbounded)
    def bounded(self: PostgresApplicationRecorder, *args: Any, **kwargs: Any) -> Any:
        retrying = tenacity.Retrying(
            # A pooled connection may have died with a server restart: take another.
            retry=tenacity.retry_if_exception_type((InterfaceError, OperationalError)),
            stop=tenacity.stop_after_attempt(3)
            | tenacity.stop_after_delay(self.datastore.pool.timeout),
            wait=tenacity.wait_fixed(0.05),
            reraise=True,
        )
        return retrying(unbounded, self, *args, **kwargs)

    return bounded


class BoundedRecorder(PostgresApplicationRecorder):
    """The library's recorder, every call bounded by the store wait, and its writes made
    without pipeline mode.

    The library retries a failed call ten times, 0.2 s apart, each after a full pool
    wait: with PostgreSQL down, one webhook batch took tens of seconds to fail.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Inside the write transaction, before its table lock (which has its own timeout).
        self.lock_table_statements.insert(
            0,
            sql.SQL("SET LOCAL statement_timeout = '{0}s'").format(self.datastore.lock_timeout),
        )
        # Sent as one simple query (no parameters): the transaction, its timeouts, the
        # table lock that makes commit order the order of positions, and the NOTIFY the
        # followers wait on.
        self._prelude = sql.SQL("; ").join(
            [
                sql.SQL("BEGIN"),
                *self.lock_table_statements,
                sql.SQL("NOTIFY {0}").format(sql.Identifier(self.channel_name)),
            ]
        )

    def _insert_unpipelined(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's `insert_events` (the same statements, lock and NOTIFY in one
        transaction), without pipeline mode.

        psycopg 3.3's pipeline can stop writing before a large batch has left its
        buffer: `pipeline_communicate` ends at the first write-ready after the last
        command even when `flush()` left bytes unsent, and the client then waits for
        results to statements the server never received (server in ClientRead, the
        writer hung for good). A batch of 200 new conversations hung like that in about
        one run of forty, and every time with a small socket send buffer (test_store).
        Outside a pipeline psycopg sends until its buffer is empty. Three round trips
        (the prelude, the INSERT, COMMIT) rather than two.
        """
        if not stored_events:
            return None
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit  # the transaction is ours: BEGIN in the prelude
            try:
                curs.execute(self._prelude, prepare=False)
                self._insert_events(curs, stored_events, **kwargs)  # the library's hook
                PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events)
                ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                curs.execute("COMMIT", prepare=False)
            except BaseException:
                if not conn.broken:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                raise
            return ids

    insert_events = _within_the_wait(_insert_unpipelined)
    select_events = _within_the_wait(PostgresApplicationRecorder.select_events)
    select_notifications = _within_the_wait(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _within_the_wait(PostgresApplicationRecorder.max_notification_id)


class PostgresStreamIndex:
    """StreamIndex over the event table."""

    def __init__(
        self, pool: ConnectionPool, table: str, wait_s: float = DEFAULT_STORE_WAIT_S
    ) -> None:
        self._pool = pool
        self._table = table
        self._timeout_ms = int(wait_s * 1000)
        # The query: parameters `params(versions)`, rows for `events(rows)`. One index
        # lookup per stream, whatever the planner believes of the table: as a plain
        # join, a table grown since its last ANALYZE (a new store under load; no
        # statistics yet) was planned as a hash join over a sequential scan of every
        # event, and each batch read cost time in proportion to the whole store.
        # `OFFSET 0` keeps the lateral subquery from being flattened back into that join.
        self.statement = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "  # noqa: S608
            "FROM unnest(%s::uuid[], %s::bigint[]) AS w(id, after) "
            "CROSS JOIN LATERAL ("
            f"SELECT s.originator_id, s.originator_version, s.topic, s.state FROM {table} s "
            "WHERE s.originator_id = w.id AND s.originator_version > w.after OFFSET 0"
            ") AS e "
            "ORDER BY e.originator_id, e.originator_version"
        )

    def stored_after(self, versions: Mapping[UUID, int]) -> list[StoredEvent]:
        """Each stream's events after the given version, in one query for all streams."""
        if not versions:
            return []
        with store_call("reading streams"), self._pool.connection() as conn:
            conn.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
            rows = conn.execute(self.statement, self.params(versions)).fetchall()
        return self.events(rows)

    # The same query, for a caller that runs it on a connection of its own (the API's
    # credential check, inside its read transaction: `adapters.http.auth`).
    @staticmethod
    def params(versions: Mapping[UUID, int]) -> tuple[list[UUID], list[int]]:
        return list(versions), list(versions.values())

    @staticmethod
    def events(rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
        return [StoredEvent(r[0], r[1], r[2], bytes(r[3])) for r in rows]


@dataclass
class Store:
    """The application and the pools it owns; `close()` releases them."""

    app: UrbanaApp
    pool: ConnectionPool
    cipher: PostgresSubjectCipher
    url: str
    schema: str | None

    def close(self) -> None:
        self.app.close()
        self.pool.close()


def _seconds(wait_s: float) -> int:
    """Whole seconds, for the library's settings that take no fraction."""
    return max(1, math.ceil(wait_s))


def open_store(
    url: str,
    master_key: bytes,
    *,
    schema: str | None = None,
    pool_size: int = 4,
    wait_s: float = DEFAULT_STORE_WAIT_S,
    trace: Callable[[], str | None] = tracing.current_traceparent,
) -> Store:
    """Open the event store and the key vault on a schema `ensure_schema` made.

    `wait_s` bounds every wait for PostgreSQL once it is open (see the module doc).
    `trace` gives the traceparent each event is stored with (the current span's; none
    while tracing is off).
    """
    parts = postgres_parts(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts["dbname"],
        "POSTGRES_HOST": parts["host"],
        "POSTGRES_PORT": parts["port"],
        "POSTGRES_USER": parts["user"],
        "POSTGRES_PASSWORD": parts["password"],
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "4",
        # The library's pool wait (whole seconds), and the write lock's and statements'.
        "POSTGRES_CONNECT_TIMEOUT": str(_seconds(wait_s)),
        "POSTGRES_LOCK_TIMEOUT": str(_seconds(wait_s)),
        "APPLICATION_RECORDER_TOPIC": get_topic(BoundedRecorder),
        "CREATE_TABLE": "n",  # ensure_schema did, under its lock
        "AGGREGATE_CACHE_MAXSIZE": "10000",
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    pool = ConnectionPool(
        conninfo(url, schema, wait_s=wait_s),
        min_size=1,
        max_size=pool_size,
        open=True,
        timeout=wait_s,
        reconnect_timeout=wait_s,  # as for the library's pool, below
    )
    cipher = PostgresSubjectCipher(pool, master_key, schema=schema)
    table = f'"{schema}".{EVENTS_TABLE}' if schema else EVENTS_TABLE
    app = UrbanaApp(
        env=env,
        cipher=cipher,
        index=PostgresStreamIndex(pool, table, wait_s),
        trace=trace,
    )
    _bound_library_pool(app, wait_s)
    return Store(app=app, pool=pool, cipher=cipher, url=url, schema=schema)


def _bound_library_pool(app: UrbanaApp, wait_s: float) -> None:
    """What the library's settings do not reach on its (psycopg_pool) pool.

    Its pool connects with no connect timeout (a dead host hangs for the kernel's TCP
    timeout), and after failing to connect it backs off, doubling up to five minutes,
    before trying again: once the server is back, it could still be waiting for its next
    attempt. Giving up within the wait lets the next request for a connection try afresh.
    """
    recorder = app.recorder
    assert isinstance(recorder, BoundedRecorder)
    pool = recorder.datastore.pool
    assert isinstance(pool.kwargs, dict)
    pool.kwargs["connect_timeout"] = connect_timeout_s(wait_s)
    pool.reconnect_timeout = wait_s
