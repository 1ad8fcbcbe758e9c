-- Metabase's roles, for the `dashboards` profile of infra/compose.yaml (its one-shot
-- `metabase-init` runs this with psql as the owner of Urbana's database; idempotent, so it
-- also runs against an existing database volume):
--
--   metabase            owns the `metabase` database, where Metabase keeps its own data.
--   urbana_kpi_reader   what Metabase reads Urbana with: SELECT on the KPI read models
--                       (relations named rm_kpi_*: the stable views rm_kpi_daily and
--                       rm_kpi_conversations and the versioned tables behind them) and on
--                       nothing else; every transaction read-only.
--
-- Read models are row-level secured per tenant (`app.tenant_id`) for the API, while a
-- dashboard reads across tenants, so the reader is BYPASSRLS: that is its policy-exempt
-- path, and SELECT on the KPI relations alone keeps it read-only and away from messages,
-- leads and the event store. The stable views are security_invoker (the policy binds the
-- one reading through them), so the tables behind them are granted too.
--
-- Read models are dropped and created again by replays and version bumps, and a grant
-- dies with its relation: an event trigger grants SELECT on every rm_kpi_* relation as it
-- is created. Passwords come from the environment (METABASE_DB_PASSWORD,
-- METABASE_READER_PASSWORD), never from the command line.

\getenv app_password METABASE_DB_PASSWORD
\getenv reader_password METABASE_READER_PASSWORD

SELECT 'CREATE ROLE metabase LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'metabase') \gexec
ALTER ROLE metabase WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';

SELECT 'CREATE DATABASE metabase OWNER metabase'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'metabase') \gexec

SELECT 'CREATE ROLE urbana_kpi_reader LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'urbana_kpi_reader') \gexec
ALTER ROLE urbana_kpi_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS
    PASSWORD :'reader_password';
ALTER ROLE urbana_kpi_reader SET default_transaction_read_only = on;

CREATE OR REPLACE FUNCTION urbana_grant_kpi_reader() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
BEGIN
    FOR rel IN
        SELECT n.nspname AS schema_name, c.relname AS rel_name
        FROM pg_event_trigger_ddl_commands() AS cmd
        JOIN pg_class AS c ON c.oid = cmd.objid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE cmd.classid = 'pg_class'::regclass
          AND c.relkind IN ('r', 'v', 'p')
          AND c.relpersistence = 'p'
          AND c.relname LIKE 'rm\_kpi\_%'
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO urbana_kpi_reader', rel.schema_name);
        EXECUTE format('GRANT SELECT ON %I.%I TO urbana_kpi_reader', rel.schema_name, rel.rel_name);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    -- A failed grant must never fail the DDL of a projection (or a replay's swap).
    RAISE WARNING 'urbana_kpi_reader: % (%)', SQLERRM, SQLSTATE;
END;
$$;

DROP EVENT TRIGGER IF EXISTS urbana_grant_kpi_reader;
CREATE EVENT TRIGGER urbana_grant_kpi_reader ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE VIEW')
    EXECUTE FUNCTION urbana_grant_kpi_reader();

-- The KPI relations that already exist (the stack ran before the profile was on).
SELECT format('GRANT USAGE ON SCHEMA %I TO urbana_kpi_reader', n.nspname)
FROM pg_namespace AS n
WHERE EXISTS (
    SELECT FROM pg_class AS c
    WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'v', 'p') AND c.relname LIKE 'rm\_kpi\_%'
) \gexec
SELECT format('GRANT SELECT ON %I.%I TO urbana_kpi_reader', n.nspname, c.relname)
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'p') AND c.relpersistence = 'p' AND c.relname LIKE 'rm\_kpi\_%' \gexec
