"""Build the event-sourced application on PostgreSQL (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg_pool import ConnectionPool

from urbana.adapters.crypto import PostgresSubjectCipher
from urbana.adapters.postgres.log import EVENTS_TABLE
from urbana.application.app import UrbanaApp
from urbana.config import postgres_parts


class PostgresStreamIndex:
    """StreamIndex over the event table."""

    def __init__(self, pool: ConnectionPool, table: str) -> None:
        self._pool = pool
        self._table = table

    def stored_after(self, versions: Mapping[UUID, int]) -> list[StoredEvent]:
        """Each stream's events after the given version, in one query for all streams."""
        if not versions:
            return []
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT e.originator_id, e.originator_version, e.topic, e.state "  # noqa: S608
                "FROM unnest(%s::uuid[], %s::bigint[]) AS w(id, after) "
                f"JOIN {self._table} e "
                "ON e.originator_id = w.id AND e.originator_version > w.after "
                "ORDER BY e.originator_id, e.originator_version",
                (list(versions), list(versions.values())),
            ).fetchall()
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


def conninfo(url: str, schema: str | None = None) -> str:
    """A libpq conninfo that also sets the search_path to `schema`."""
    parts = postgres_parts(url)
    kwargs: dict[str, str] = {
        "dbname": parts["dbname"],
        "host": parts["host"],
        "port": parts["port"],
        "user": parts["user"],
    }
    if parts["password"]:
        kwargs["password"] = parts["password"]
    if schema:
        kwargs["options"] = f"-c search_path={schema},public"
    return psycopg.conninfo.make_conninfo(**kwargs)


def ensure_schema(url: str, schema: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


DDL_LOCK = "urbana.ddl"


@contextmanager
def ddl_lock(url: str) -> Iterator[None]:
    """Serialise schema creation across processes.

    `CREATE ... IF NOT EXISTS` is not safe against itself: processes starting together
    (the API and every worker of a compose stack) collide on the catalog's unique keys.
    """
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (DDL_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (DDL_LOCK,))


def open_store(
    url: str, master_key: bytes, *, schema: str | None = None, pool_size: int = 4
) -> Store:
    """Open the event store (creating its tables if needed) and the key vault."""
    with ddl_lock(url):
        return _open_store(url, master_key, schema=schema, pool_size=pool_size)


def _open_store(url: str, master_key: bytes, *, schema: str | None, pool_size: int) -> Store:
    if schema:
        ensure_schema(url, schema)
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
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "CREATE_TABLE": "y",
        "AGGREGATE_CACHE_MAXSIZE": "10000",
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    pool = ConnectionPool(
        conninfo(url, schema),
        min_size=1,
        max_size=pool_size,
        open=True,
        timeout=5.0,
    )
    cipher = PostgresSubjectCipher(pool, master_key, schema=schema)
    cipher.create_table()
    table = f'"{schema}".{EVENTS_TABLE}' if schema else EVENTS_TABLE
    app = UrbanaApp(env=env, cipher=cipher, index=PostgresStreamIndex(pool, table))
    return Store(app=app, pool=pool, cipher=cipher, url=url, schema=schema)
