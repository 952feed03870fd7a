"""The embedded server, URL handling, the pooled engine and the idempotent schema."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.database import engine as engine_module
from stock_assets.database.embedded import EmbeddedServer
from stock_assets.database.resource import PostgresResource
from stock_assets.database.schema import _apply, schema_files
from stock_assets.database.urls import redact, with_driver


def test_urls_are_spelled_per_driver_and_redacted():
    url = "postgresql://app:s3cret@db.internal:5432/stock_assets"
    assert with_driver(url, "psycopg2").startswith("postgresql+psycopg2://app:s3cret@db.internal")
    assert with_driver("postgres://u@h/db", "psycopg") == "postgresql+psycopg://u@h/db"
    assert "s3cret" not in redact(url) and "***" in redact(url)
    with pytest.raises(ValueError, match="Unsupported database URL scheme"):
        with_driver("mysql://u@h/db", "psycopg")


def test_embedded_server_is_reused_and_restartable(tmp_path):
    server = EmbeddedServer(tmp_path / "db")
    url = server.ensure_running()
    try:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        assert server.ensure_running() == url  # already running: same server
        assert server.stop() is True
        assert not server.is_running()
        assert server.stop() is False
        url = server.ensure_running()  # the same data directory comes back
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
            databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert {"stock_assets", "dagster"} <= databases
    finally:
        server.stop()


def test_one_engine_per_process_and_url(database_url):
    first = PostgresResource(url=database_url)
    second = PostgresResource(url=database_url)
    assert first.engine is second.engine
    before = engine_module.engine_count()
    for _ in range(5):
        with PostgresResource(url=database_url).begin() as conn:
            conn.execute(text("SELECT 1"))
    assert engine_module.engine_count() == before
    pool = first.engine.pool
    assert first.engine.pool._pre_ping is True and pool._recycle == 1800


def test_schema_files_apply_twice_without_error(database):
    # Force every file through again, as a fresh process on an existing database would.
    with database.begin() as conn:
        conn.execute(text("DELETE FROM market.schema_files"))
    assert _apply(database.engine, schema_files()) == [p.name for p in schema_files()]
    assert _apply(database.engine, schema_files()) == []  # checksums recorded: nothing to do
    with database.begin() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = 'market.prices'::regclass")).scalar()
        strategy = conn.execute(text(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'market.prices'::regclass")).scalar()
    assert (kind, strategy) == ("p", "r")  # partitioned, by range


def test_partition_function_creates_each_month_once(database):
    with database.begin() as conn:
        names = [conn.execute(text("SELECT market.ensure_prices_partition(:d)"), {"d": d}).scalar()
                 for d in ("2020-03-01", "2020-03-31", "2020-04-15")]
        bounds = conn.execute(text("SELECT partition_name, bounds FROM market.prices_partitions")).all()
    assert names == ["prices_2020_03", "prices_2020_03", "prices_2020_04"]
    assert [tuple(b) for b in bounds] == [
        ("prices_2020_03", "FOR VALUES FROM ('2020-03-01') TO ('2020-04-01')"),
        ("prices_2020_04", "FOR VALUES FROM ('2020-04-01') TO ('2020-05-01')"),
    ]


def test_cli_db_url_prints_the_url_in_use(tmp_path):
    env = {**os.environ, settings.STATE_DIR_ENV: str(tmp_path / "state")}
    env.pop(settings.DATABASE_URL_ENV, None)
    try:
        out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "db", "url"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        url = out.stdout.strip()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("stock_assets",)
        dagster = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "db", "url", "--dagster"], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert dagster.stdout.startswith("postgresql+psycopg2://") and "/dagster?" in dagster.stdout
        configured = subprocess.run(
            [sys.executable, "-m", "stock_assets.tooling.cli", "db", "url"],
            env={**env, settings.DATABASE_URL_ENV: "postgresql://app:s3cret@db.example:5432/prices"},
            capture_output=True, text=True, timeout=120)
        assert configured.stdout.strip() == "postgresql://app:***@db.example:5432/prices"
    finally:
        EmbeddedServer(tmp_path / "state").stop()
