-- A least-privilege login role for the pipeline. Run once, as a superuser, with psql:
--
--   psql "$ADMIN_URL" -v role=stock_assets_pipeline -v password="$PIPELINE_PASSWORD" \
--        -v database=stock_assets -f sql/roles/pipeline_role.sql
--
-- then point STOCK_ASSETS_DATABASE_URL at that role. psql quotes the variables (:"role" as an
-- identifier, :'password' as a literal), so nothing is spliced into SQL by hand.
--
-- The role can: connect to the pipeline database only, create and own its own schemas there
-- (market, quotes: the schema runner creates tables, monthly partitions and functions in them).
-- It cannot: log in as superuser, create databases or roles, connect to other databases
-- (Dagster's storage included), write to the public schema, or bypass row security.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
              :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

ALTER ROLE :"role" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"role" SET statement_timeout = '10min';

REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :"database" TO :"role";

\connect :"database"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS market AUTHORIZATION :"role";
CREATE SCHEMA IF NOT EXISTS quotes AUTHORIZATION :"role";
ALTER SCHEMA market OWNER TO :"role";
ALTER SCHEMA quotes OWNER TO :"role";
