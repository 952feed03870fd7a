"""`stock-assets health`: real PostgreSQL, a real Dagster instance, the replay; Yahoo is the emulator."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.database.urls import libpq_url, with_database, with_driver
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.health import (
    FAIL,
    NOT_CONFIGURED,
    OK,
    SKIPPED,
    WARN,
    check_circuit_breaker,
    check_daily_partitions,
    check_quote_source,
    check_rate_limiter,
    expected_session,
    health_engine,
    run_health,
    sessions_behind,
)
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.testing.yahoo_emulator import YahooEmulator

NEW_YORK = ZoneInfo("America/New_York")


def _fresh_database(database_url: str, name: str) -> str:
    """A new database on the session's server, so no other test's state leaks in."""
    with psycopg.connect(libpq_url(with_database(database_url, "postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(database_url, name)


@pytest.fixture
def health_db(database_url: str) -> str:
    url = _fresh_database(database_url, f"health_{uuid.uuid4().hex[:8]}")
    PostgresResource(url=url).engine  # applies the schema, as the first run would
    return url


def _materialize_days(instance: dg.DagsterInstance, url: str, tmp_path: Path, first: str, last: str) -> None:
    result = dg.materialize(
        [raw_quotes, cleaned_prices], instance=instance,
        resources={"database": PostgresResource(url=url), "quotes": QuoteClient(),
                   "tickers": TickerSelection(tickers=["AAPL", "MSFT"]),
                   "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "health", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=settings.PROJECT_DIR)


def test_healthy_system_exits_0_with_json_for_machines(health_db, database_url, tmp_path, monkeypatch):
    # A Dagster instance like `make dev`'s: the project's dagster.yaml, PostgreSQL storage.
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(settings.PROJECT_DIR / "dagster.yaml")
    dagster_env = {
        "DAGSTER_HOME": str(home),
        settings.DAGSTER_PG_URL_ENV: with_driver(
            _fresh_database(database_url, f"health_dagster_{uuid.uuid4().hex[:8]}"), "psycopg2"),
        "DAGSTER_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "logs"),
    }
    for name, value in dagster_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        # The replay's last two sessions: nothing newer can exist, so the daily data is current.
        _materialize_days(instance, health_db, tmp_path, "2020-10-26", "2020-10-27")

    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "STOCK_ASSETS_"))}
    env.update(dagster_env, **{settings.DATABASE_URL_ENV: health_db, settings.STATE_DIR_ENV: str(tmp_path / "state"),
                               settings.LANDING_URL_ENV: str(tmp_path / "landing"),
                               settings.TICKERS_ENV: "AAPL,MSFT"})
    result = _cli(env, "--json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout)
    checks = {name: check["status"] for name, check in report["checks"].items()}
    assert report["healthy"] is True
    assert checks == {"database": OK, "quote_source": OK, "rate_limiter": OK, "circuit_breaker": OK,
                      "daily_partitions": OK, "ticker_gaps": OK, "warning_checks": OK,
                      "warehouse_lag": WARN, "runs": OK,  # the days are not loaded into market.prices
                      "daemon": WARN}  # no daemon runs in this test
    daily = report["checks"]["daily_partitions"]["details"]
    assert daily["last_good_partition"] == "2020-10-27" and daily["sessions_behind"] == 0
    assert daily["blocking_checks"] == {"ohlc_consistent": "SUCCEEDED", "unique_symbol_date": "SUCCEEDED"}
    database = report["checks"]["database"]["details"]
    assert database["schema_applied"] is True and database["max_connections"] >= database["connections"] > 0
    assert database["pool_per_process"]["pool_size"] == 5
    assert report["checks"]["quote_source"]["details"]["archive_last_day"] == "2020-10-27"

    human = _cli(env)
    assert human.returncode == 0
    assert human.stdout.startswith("stock_assets: HEALTHY (0 failing, 2 warnings)")
    assert "last good cleaned_prices partition 2020-10-27, 0 NYSE sessions behind 2020-10-27" in human.stdout


def test_unreachable_database_exits_1_and_skips_what_depends_on_it(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "STOCK_ASSETS_"))}
    env.update({settings.DATABASE_URL_ENV: "postgresql://nobody@127.0.0.1:1/none",
                settings.STATE_DIR_ENV: str(tmp_path / "state")})
    result = _cli(env, "--json")
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout)
    statuses = {name: check["status"] for name, check in report["checks"].items()}
    assert report["healthy"] is False
    assert statuses == {"database": FAIL, "quote_source": OK, "rate_limiter": SKIPPED, "circuit_breaker": SKIPPED,
                        "daily_partitions": SKIPPED, "ticker_gaps": SKIPPED, "warning_checks": SKIPPED, "warehouse_lag": SKIPPED, "runs": SKIPPED,
                        "daemon": SKIPPED}
    assert "Connection refused" in report["checks"]["database"]["summary"]


def test_open_breaker_fails_health_and_a_retry_after_hold_warns(health_db):
    emulator = YahooEmulator()
    with emulator.serve() as url:
        client = QuoteClient(source="yahoo", upstream_url=url, database=PostgresResource(url=health_db),
                             max_retries=0, cache_enabled=False, timeout_s=5)
        scope = {"scope": client.governance_scope}  # e.g. yahoo@http://127.0.0.1:PORT; plain `yahoo` live
        with health_engine(health_db).begin() as conn:
            conn.execute(text(
                "INSERT INTO quotes.breakers (name, state, failures, opened_at, open_until, last_cause) "
                "VALUES (:scope, 'open', 5, now(), now() + interval '60 seconds', 'HTTP 503 from Yahoo')"), scope)
            conn.execute(text("INSERT INTO quotes.rate_buckets (name, tat, hold_until) "
                              "VALUES (:scope, now(), now() + interval '30 seconds')"), scope)
        report = run_health(database_url=health_db, quote_client=client, use_instance=False)
    assert not report.healthy
    breaker = report.check("circuit_breaker")
    assert breaker.status == FAIL and "OPEN for another" in breaker.summary and "HTTP 503 from Yahoo" in breaker.summary
    assert report.check("rate_limiter").status == WARN
    assert "held after a 429" in report.check("rate_limiter").summary
    # The probe honours the shared breaker: it failed without reaching the emulator.
    assert report.check("quote_source").status == FAIL
    assert emulator.log == []

    with health_engine(health_db).begin() as conn:
        conn.execute(text("UPDATE quotes.breakers SET state = 'half_open', probe_started_at = now()"))
        conn.execute(text("UPDATE quotes.rate_buckets SET hold_until = NULL"))
    report = run_health(database_url=health_db, quote_client=QuoteClient(), use_instance=False)
    # The replay's own breaker is closed; yahoo's half-open one is mentioned, as a warning.
    assert report.check("circuit_breaker").status == WARN
    assert f"not closed elsewhere: {client.governance_scope}" in report.check("circuit_breaker").summary
    engine = health_engine(health_db)
    half_open = check_circuit_breaker(engine, client.governance_scope)
    assert half_open.status == WARN and "half_open" in half_open.summary
    assert check_rate_limiter(engine).status == OK


def test_governance_not_configured_when_its_tables_are_missing(database_url):
    bare = _fresh_database(database_url, f"health_bare_{uuid.uuid4().hex[:8]}")  # no schema applied at all
    report = run_health(database_url=bare, quote_client=QuoteClient(), use_instance=False)
    assert report.check("database").status == WARN and "schema not applied" in report.check("database").summary
    assert report.check("rate_limiter").status == NOT_CONFIGURED
    assert report.check("circuit_breaker").status == NOT_CONFIGURED
    assert report.healthy


def test_yahoo_probe_goes_through_the_governed_client():
    emulator = YahooEmulator()
    with emulator.serve() as url:
        client = QuoteClient(source="yahoo", upstream_url=url, max_retries=0, cache_enabled=False, timeout_s=5)
        assert check_quote_source(client).status == OK
        assert [(e.symbol, e.status) for e in emulator.log] == [("AAPL", 200)]  # one request, no retry
        emulator.storm(30)
        throttled = check_quote_source(client.model_copy())
    assert throttled.status == WARN and "throttling" in throttled.summary
    closed = QuoteClient(source="yahoo", upstream_url="http://127.0.0.1:1", max_retries=0, cache_enabled=False)
    unreachable = check_quote_source(closed)
    assert unreachable.status == FAIL and "not reachable" in unreachable.summary


def _at(day: str, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), NEW_YORK)


def test_expected_session_follows_the_deadline_and_the_nyse_calendar():
    assert expected_session(_at("2020-03-10", 19, 59)) == dt.date(2020, 3, 9)
    assert expected_session(_at("2020-03-10", 20, 0)) == dt.date(2020, 3, 10)
    assert expected_session(_at("2020-07-04", 12)) == dt.date(2020, 7, 2)  # Sat; Fri 3rd is a holiday
    assert expected_session(_at("2020-03-09", 9)) == dt.date(2020, 3, 6)  # Monday morning: Friday
    assert sessions_behind(dt.date(2020, 7, 1), dt.date(2020, 7, 6)) == 2  # 2nd and 6th
    assert sessions_behind(dt.date(2020, 7, 6), dt.date(2020, 7, 6)) == 0


def test_staleness_comes_from_the_instance_records(database, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    _materialize_days(instance, database.resolved_url, tmp_path, "2020-03-05", "2020-03-07")  # Thu..Sat
    fresh = check_daily_partitions(instance, None, _at("2020-03-06", 12), "yahoo")
    assert (fresh.status, fresh.details["last_good_partition"], fresh.details["sessions_behind"]) == \
        (OK, "2020-03-06", 0)  # the Saturday partition is not a session: Friday is the last good one
    one_behind = check_daily_partitions(instance, None, _at("2020-03-09", 21), "yahoo")
    assert (one_behind.status, one_behind.details["sessions_behind"]) == (WARN, 1)
    stale = check_daily_partitions(instance, None, _at("2020-03-11", 21), "yahoo")
    assert (stale.status, stale.details["sessions_behind"]) == (FAIL, 3)
    assert check_daily_partitions(instance, None, _at("2020-03-11", 21), "replay").status == WARN
    empty = check_daily_partitions(dg.DagsterInstance.ephemeral(), None, _at("2020-03-11", 21), "yahoo")
    assert empty.status == WARN and "no NYSE session" in empty.summary
