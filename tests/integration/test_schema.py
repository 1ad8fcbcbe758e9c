"""One owner of the database schema: `ensure_schema` makes every table a process uses."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.postgres.schema import ensure_schema
from urbana.config import conninfo
from urbana.projections.base import table_names
from urbana.projections.schema import all_projections

pytestmark = pytest.mark.integration


def relations(url: str, schema: str) -> dict[str, str]:
    """Name -> kind ('r' table, 'v' view, 'i' index, ...) of everything in `schema`."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
    return {name: kind for name, kind in rows}


def drop(url: str, schema: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_fresh_schema_gets_every_table_the_processes_use(services: ServiceUrls) -> None:
    schema = f"fresh_{uuid4().hex[:8]}"
    try:
        ensure_schema(services.postgres, schema)
        made = relations(services.postgres, schema)
    finally:
        drop(services.postgres, schema)
    tables = {
        "urbana_events",  # the event store (the library's)
        "urbana_subject_keys",
        "kb_chunks",
        "urbana_relay_position",
        "rm_republish",
        "urbana_notifications",  # the notifier's ledger
        "urbana_job_runs",  # the scheduler's runs
        "urbana_access_log",  # who read which subject's data
        "rm_tracking",
        "rm_replay",
    }
    read_models = {physical for p in all_projections() for physical in table_names(p).values()}
    views = {f"rm_{table}" for p in all_projections() for table in p.tables}
    assert {name for name, kind in made.items() if kind == "r"} == tables | read_models
    assert {name for name, kind in made.items() if kind == "v"} == views
    assert "kb_chunks_embedding_hnsw" in made


def test_ensuring_an_existing_schema_again_changes_nothing(services: ServiceUrls) -> None:
    schema = f"again_{uuid4().hex[:8]}"
    try:
        ensure_schema(services.postgres, schema)
        before = relations(services.postgres, schema)
        ensure_schema(services.postgres, schema)
        after = relations(services.postgres, schema)
    finally:
        drop(services.postgres, schema)
    assert after == before
