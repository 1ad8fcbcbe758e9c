"""The one owner of the database schema: every table Urbana uses, created in one place.

`ensure_schema` runs once when a process starts (the composition root calls it before
opening the store; the CLI before a replay or a republish; the test fixtures for their
own schemas), under one advisory lock: `CREATE ... IF NOT EXISTS` is not safe against
itself, and processes starting together (the API and every worker of a compose stack)
would collide on the catalog's unique keys. Nothing else creates tables, except the
replay's rebuild tables, which are the replay's work (see docs/architecture.md, Read
models and replay).

What it creates, in the schema (and the `vector` extension in `public`):
- the event store: the `eventsourcing` library's own tables, made by the library;
- `urbana_subject_keys`: the data subjects' wrapped keys (see `adapters.crypto`);
- `kb_chunks`: the knowledge bases on pgvector (see `adapters.postgres.knowledge`),
  row-level secured per tenant like the read models;
- `urbana_relay_position`: the relay's position; `rm_republish`: republish checkpoints;
- `urbana_notifications`: the notifier's ledger (see `adapters.postgres.notifications`);
- `urbana_job_runs`: the scheduler's runs, one per job, tenant and period (see
  `adapters.postgres.jobs`);
- `urbana_access_log`: who read which subject's data, append-only for the API's role
  and row-level secured per tenant (see `adapters.postgres.access_log`);
- `rm_tracking`, `rm_replay` and every read model's live tables and views, each table
  row-level secured per tenant, and the API's read role (see `urbana.projections.schema`).
"""

from __future__ import annotations

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import sql

from urbana.adapters.postgres.access_log import DDL as ACCESS_LOG_DDL
from urbana.config import conninfo, postgres_parts
from urbana.projections.schema import (
    ROLE_DDL,
    TRACKING_DDL,
    all_projections,
    create_tables,
    create_views_if_missing,
    tenant_security,
)

DDL_LOCK = "urbana.ddl"
# The library names the events table after the application (`UrbanaApp.name`).
EVENTS_TABLE = "urbana_events"
RELAY_POSITION_TABLE = "urbana_relay_position"
NOTIFICATIONS_TABLE = "urbana_notifications"
JOB_RUNS_TABLE = "urbana_job_runs"
KNOWLEDGE_DIM = 384  # kb_chunks' vectors: multilingual-e5-small's size (OpenAI's are asked for it)


def qualified(schema: str | None, table: str) -> sql.Identifier:
    """`table`, qualified by `schema` when there is one."""
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


_SUBJECT_KEYS = (
    "CREATE TABLE IF NOT EXISTS urbana_subject_keys ("
    "subject_id uuid PRIMARY KEY, wrapped bytea NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now())",
    # Erasure destroys the key material but keeps the row (wrapped NULL): an erased
    # subject never gets a new key under its old id (see adapters.crypto).
    "ALTER TABLE urbana_subject_keys ALTER COLUMN wrapped DROP NOT NULL",
    "ALTER TABLE urbana_subject_keys ADD COLUMN IF NOT EXISTS erased_at timestamptz",
)

_KNOWLEDGE = (
    f"""CREATE TABLE IF NOT EXISTS kb_chunks (
        id BIGSERIAL PRIMARY KEY,
        tenant_id UUID NOT NULL,
        document_id UUID NOT NULL,
        chunk_no INTEGER NOT NULL,
        text TEXT NOT NULL,
        embedding vector({KNOWLEDGE_DIM}) NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, document_id, chunk_no)
    )""",
    "ALTER TABLE kb_chunks ADD COLUMN IF NOT EXISTS source_version BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS kb_chunks_embedding_hnsw "
    "ON kb_chunks USING hnsw (embedding vector_cosine_ops)",
    "CREATE INDEX IF NOT EXISTS kb_chunks_tenant ON kb_chunks (tenant_id, model)",
)

_POSITIONS = (
    f"CREATE TABLE IF NOT EXISTS {RELAY_POSITION_TABLE} ("
    "name text PRIMARY KEY, position bigint NOT NULL, "
    "updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS rm_republish (job text PRIMARY KEY, position bigint NOT NULL, "
    "published bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now())",
)


_NOTIFICATIONS = (
    f"""CREATE TABLE IF NOT EXISTS {NOTIFICATIONS_TABLE} (
        key TEXT PRIMARY KEY,
        tenant_id UUID NOT NULL,
        state TEXT NOT NULL,
        owner UUID NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        detail TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)


_JOB_RUNS = (
    f"""CREATE TABLE IF NOT EXISTS {JOB_RUNS_TABLE} (
        job TEXT NOT NULL,
        tenant_id UUID NOT NULL,
        period TIMESTAMPTZ NOT NULL,
        state TEXT NOT NULL,
        counts JSONB,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        PRIMARY KEY (job, tenant_id, period)
    )""",
)


def statements() -> list[str]:
    """Our own tables (all but the event store's), unqualified: run on the schema's path."""
    read_models = [
        statement
        for projection in all_projections()
        for statement in [*create_tables(projection), *create_views_if_missing(projection)]
    ]
    return [
        *_SUBJECT_KEYS,
        *ROLE_DDL,
        *_KNOWLEDGE,
        *tenant_security("kb_chunks"),  # the knowledge is a read model too
        *_POSITIONS,
        *_NOTIFICATIONS,
        *_JOB_RUNS,
        *ACCESS_LOG_DDL,
        *TRACKING_DDL,
        *read_models,
    ]


def ensure_schema(url: str, schema: str | None) -> None:
    """Create `schema` (None: public) and every table in it that does not exist yet."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (DDL_LOCK,))
        try:
            if schema:
                name = sql.Identifier(schema)
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            _create_event_store(url, schema)
            if schema:
                conn.execute(sql.SQL("SET search_path TO {}, public").format(name))
            with conn.transaction():
                for statement in statements():
                    conn.execute(statement)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (DDL_LOCK,))


def _create_event_store(url: str, schema: str | None) -> None:
    """The library's tables, types and indexes, by the library (not a copy of its DDL)."""
    parts = postgres_parts(url)
    datastore = PostgresDatastore(
        parts["dbname"],
        parts["host"],
        parts["port"],
        parts["user"],
        parts["password"],
        schema=schema or "",
        pool_size=1,
    )
    try:
        PostgresApplicationRecorder(datastore, events_table_name=EVENTS_TABLE).create_table()
    finally:
        datastore.close()
