"""Read-model DDL: versioned tables, stable views, tracking and replay checkpoints.

Every projection writes physical tables named `rm_<table>_v<version>`; a stable view
`rm_<table>` points at the version in service, for analysts and ad-hoc SQL (the
queries in this package name the versioned tables of the code's own versions).
Replay builds `rm_<table>_v<version>_rebuild` and swaps it in (see `replay`).

Tracking (`rm_tracking`): one row per (projection, version, Kafka partition) with the
global position of the last event applied from that partition, written in the same
transaction as the rows. Partition `-1` is the *floor* that a replay leaves behind:
every event at or below it is in the tables, whatever partition it travels on. The
runner skips an event when its position is at or below max(floor, its partition's row).

`adapters.postgres.schema` creates the tracking tables and every projection's live
tables and views when a process starts, so a runner only applies.

Runners hold a shared transaction-level advisory lock on the projection while they
apply a batch; the replay swap takes it exclusively, so no batch straddles a swap.

Row-level security. Every read-model table, live or rebuilt, is created with RLS on and
one policy: a row is visible when its `tenant_id` is the transaction's `app.tenant_id`
(unset or empty: no row at all). The owner that creates the tables is not bound by it
(projectors and replays write across tenants); the API reads as `API_ROLE`, a NOLOGIN
role the owner creates and may `SET ROLE` to, granted SELECT on the tables and nothing
else (`urbana.projections.access.tenant_read`). A policy and a grant belong to their
table, so a rebuilt table gets its own and the swap carries them over. The stable views
are `security_invoker` (read through them, the policy binds the reader, not the view's
owner) and granted to the API role too, again at each swap.
"""

from __future__ import annotations

import re

from urbana.projections.base import Projection, table_names
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import Kpis
from urbana.projections.lead_pipeline import LeadPipeline
from urbana.projections.team import Team
from urbana.projections.workspace import Workspace

FLOOR = -1
REBUILD = "_rebuild"

TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_tracking ("
    "projection text NOT NULL, version int NOT NULL, partition int NOT NULL, "
    "position bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
    "PRIMARY KEY (projection, version, partition))",
    "CREATE TABLE IF NOT EXISTS rm_replay ("
    "projection text NOT NULL, version int NOT NULL, position bigint NOT NULL, "
    "events bigint NOT NULL DEFAULT 0, started_at timestamptz NOT NULL DEFAULT now(), "
    "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (projection, version))",
)

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

API_ROLE = "urbana_api"
POLICY = "tenant_isolation"
# `current_setting(..., true)` is NULL when the setting was never made, and '' after a
# SET LOCAL of an earlier transaction: both must match no row (not fail the cast).
TENANT_SETTING = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"

ROLE_DDL = (
    # Roles are cluster-wide: two databases may race to create it, hence the handler.
    "DO $$ BEGIN "
    f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{API_ROLE}') THEN "
    f"CREATE ROLE {API_ROLE} NOLOGIN NOINHERIT; END IF; "
    "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    # The owner switches to it per transaction (PostgreSQL 16+ does not let a
    # non-superuser creator SET ROLE to the roles it creates until it is granted).
    "DO $$ BEGIN "  # noqa: S608
    "IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
    f"AND NOT pg_has_role(current_user, '{API_ROLE}', 'SET') THEN "
    f"EXECUTE format('GRANT {API_ROLE} TO %I WITH INHERIT FALSE, SET TRUE', current_user); "
    "END IF; END $$",
    "DO $$ BEGIN "
    f"EXECUTE format('GRANT USAGE ON SCHEMA %I TO {API_ROLE}', current_schema()); END $$",
)


def all_projections() -> list[Projection]:
    """Every read model, in a fixed order."""
    return [ConversationView(), LeadPipeline(), Kpis(), Team(), Workspace()]


def select(names: list[str] | None) -> list[Projection]:
    """The projections named (all when None or empty); unknown names raise ValueError."""
    every = all_projections()
    if not names:
        return every
    by_name = {p.name: p for p in every}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown projection(s): {', '.join(unknown)}; known: {sorted(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


def render(sql: str, names: dict[str, str]) -> str:
    """Fill `{table}` placeholders with physical table names."""
    for value in names.values():
        if not _IDENT.match(value):
            raise ValueError(f"bad table name {value!r}")
    return sql.format(**names)


def lock_key(projection: Projection) -> str:
    return f"urbana.projection.{projection.name}.v{projection.version}"


def create_tables(projection: Projection, suffix: str = "", *, indexes: bool = True) -> list[str]:
    """Statements that create the projection's tables (idempotent).

    `indexes=False` leaves out the secondary indexes (a rebuild creates them at the end:
    building an index once is cheaper than maintaining it through a million upserts).
    """
    names = table_names(projection, suffix)
    tables = [
        render(s, names) for s in projection.ddl() if indexes or not s.startswith("CREATE INDEX")
    ]
    return [*tables, *(s for physical in names.values() for s in tenant_security(physical))]


def tenant_security(physical: str) -> list[str]:
    """RLS on one read-model table, its tenant policy, and the API role's SELECT."""
    if not _IDENT.match(physical):
        raise ValueError(f"bad table name {physical!r}")
    return [
        # Guarded: ALTER TABLE locks the table, and this runs at every process start.
        "DO $$ BEGIN "  # noqa: S608
        f"IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = '{physical}'::regclass) THEN "
        f"ALTER TABLE {physical} ENABLE ROW LEVEL SECURITY; END IF; END $$",
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema() "
        f"AND tablename = '{physical}' AND policyname = '{POLICY}') THEN "
        f"CREATE POLICY {POLICY} ON {physical} USING (tenant_id = {TENANT_SETTING}); "
        "END IF; END $$",
        f"GRANT SELECT ON {physical} TO {API_ROLE}",
    ]


def create_indexes(projection: Projection, suffix: str = "") -> list[str]:
    """The secondary indexes `create_tables(indexes=False)` left out."""
    names = table_names(projection, suffix)
    return [render(s, names) for s in projection.ddl() if s.startswith("CREATE INDEX")]


def create_views_if_missing(projection: Projection) -> list[str]:
    """Point `rm_<table>` at this version's table unless a view already exists."""
    out = []
    for table, physical in table_names(projection).items():
        view = f"rm_{table}"
        out.append(
            "DO $$ BEGIN "  # noqa: S608
            f"IF to_regclass('{view}') IS NULL THEN "
            f"CREATE VIEW {view} WITH (security_invoker = true) AS SELECT * FROM {physical}; "
            "END IF; END $$"
        )
        out.append(f"GRANT SELECT ON {view} TO {API_ROLE}")
    return out


def drop_rebuild(projection: Projection) -> list[str]:
    return [f"DROP TABLE IF EXISTS {t}" for t in table_names(projection, REBUILD).values()]


def swap_statements(projection: Projection, rebuild_indexes: list[str]) -> list[str]:
    """Replace the live tables by the rebuilt ones and repoint the views (one transaction).

    `rebuild_indexes` are the names of the rebuilt tables' indexes, renamed to the names
    the live ones had so that `create_tables` stays idempotent afterwards.
    """
    out = []
    live = table_names(projection)
    rebuilt = table_names(projection, REBUILD)
    for table, physical in live.items():
        out.append(f"DROP VIEW IF EXISTS rm_{table}")
        out.append(f"DROP TABLE IF EXISTS {physical}")
        out.append(f"ALTER TABLE {rebuilt[table]} RENAME TO {physical}")
    for index in rebuild_indexes:
        if REBUILD in index:
            out.append(f"ALTER INDEX {index} RENAME TO {index.replace(REBUILD, '', 1)}")
    for table, physical in live.items():
        out.append(
            f"CREATE VIEW rm_{table} WITH (security_invoker = true) "  # noqa: S608
            f"AS SELECT * FROM {physical}"
        )
        out.append(f"GRANT SELECT ON rm_{table} TO {API_ROLE}")
    return out
