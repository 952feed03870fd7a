"""Fault injection against the real database: crashes mid-load, restarts, overlapping writers.

Each test names the fault it injects and what it asserts; docs/fault-matrix.md summarises them.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import time

import dagster as dg
import pandas as pd
import psycopg
import pytest

from stock_assets.database.embedded import EmbeddedServer
from stock_assets.database.resource import PostgresResource
from stock_assets.database.urls import libpq_url
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.defs.warehouse.loader import load_month
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets_tests.test_loader import expected_rows, make_month, table_rows

pytestmark = pytest.mark.reliability

ASSETS = [raw_quotes, cleaned_prices, monthly_prices]
OCTOBER = {"dagster/asset_partition_range_start": "2020-10-01", "dagster/asset_partition_range_end": "2020-10-31"}
TICKERS = ["AAPL", "MSFT", "XOM", "JNJ"]


@pytest.fixture
def private_server(tmp_path):
    """A server of the test's own, so it can be killed without harming the others."""
    server = EmbeddedServer(tmp_path / "crashable")
    server.ensure_running()
    yield server
    server.stop(mode="immediate")


def _resources(url: str, tmp_path) -> dict:
    return {"database": PostgresResource(url=url), "quotes": QuoteClient(),
            "tickers": TickerSelection(tickers=TICKERS),
            "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}


def _checksum(url: str) -> tuple:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT symbol, trade_date, open,"
            " high, low, close, adj_close, volume, dividend, split_ratio FROM market.prices) t").fetchone()


def _source_checksum(url: str, tmp_path) -> tuple:
    """The same checksum computed from the landing zone's clean files, inside PostgreSQL's formatting."""
    paths = sorted((tmp_path / "landing" / "cleaned_prices").rglob("*.parquet"))
    rows = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE source (symbol text, trade_date date, open float8, high float8, low float8,"
                     " close float8, adj_close float8, volume int8, dividend float8, split_ratio float8)")
        with conn.cursor() as cur, cur.copy("COPY source FROM STDIN") as copy:
            for record in rows[["symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume",
                                "dividend", "split_ratio"]].itertuples(index=False, name=None):
                copy.write_row(record)
        return conn.execute("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM source t").fetchone()


def test_server_killed_mid_load_then_the_retry_loads_exactly_the_source(private_server, tmp_path):
    """Fault: `pg_ctl stop -m immediate` while a month load holds its staged data, then a restart.
    Asserts: the attempt fails with a clear connection error, Dagster's retry succeeds, the table
    equals the source rows exactly (checksum), and no staging table is left behind."""
    url = private_server.url()
    resources = _resources(url, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], resources=resources,
                          instance=instance, tags=OCTOBER).success

    assert dg.materialize(ASSETS, selection=["monthly_prices"], resources=resources, instance=instance,
                          partition_key="2020-10-01").success
    # A reader holding market.prices makes the reload wait at its swap (DETACH of the old month),
    # after COPY and indexing: the moment with the most work in flight.
    reader = psycopg.connect(libpq_url(url))
    reader.execute("SELECT count(*) FROM market.prices")
    result: dict = {}

    def materialize_month() -> None:
        result["run"] = dg.materialize(ASSETS, selection=["monthly_prices"], resources=resources,
                                       instance=instance, partition_key="2020-10-01", raise_on_error=False)

    worker = threading.Thread(target=materialize_month)
    worker.start()
    _wait_for(lambda: _load_is_waiting(url), timeout=60)
    private_server.stop(mode="immediate")
    reader.close()
    private_server.ensure_running()  # same data directory, same socket: the retry finds it
    worker.join(timeout=180)

    run = result["run"]
    assert run.success
    events = run.all_events
    retried = [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) >= 1
    cause = retried[0].event_specific_data.error
    assert "OperationalError" in (cause.cls_name + " " + (cause.cause.cls_name if cause.cause else ""))
    assert _checksum(url) == _source_checksum(url, tmp_path)
    with psycopg.connect(libpq_url(url)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%%\\_load'").fetchone() == (0,)


def test_pooled_engine_survives_a_restart_between_runs(private_server, tmp_path):
    """Fault: the server restarts between two runs in one process (pooled connections go stale).
    Asserts: the second run succeeds at the first attempt (pre-ping replaced the dead connections)."""
    resources = _resources(private_server.url(), tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], resources=resources,
                          instance=instance, tags=OCTOBER).success
    assert dg.materialize(ASSETS, selection=["monthly_prices"], resources=resources, instance=instance,
                          partition_key="2020-10-01").success
    before = _checksum(private_server.url())
    private_server.stop(mode="fast")
    private_server.ensure_running()
    again = dg.materialize(ASSETS, selection=["monthly_prices"], resources=resources, instance=instance,
                           partition_key="2020-10-01")
    assert again.success
    assert not [e for e in again.all_events if e.event_type in (dg.DagsterEventType.STEP_UP_FOR_RETRY,
                                                                 dg.DagsterEventType.STEP_FAILURE)]
    assert _checksum(private_server.url()) == before


def test_three_rematerializations_give_identical_checksums(database, database_url, tmp_path):
    """Fault: none but repetition. Asserts: the same partitions materialized three times leave
    byte-identical tables."""
    resources = _resources(database_url, tmp_path)
    checksums = []
    for _ in range(3):
        assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], resources=resources,
                              tags=OCTOBER).success
        assert dg.materialize(ASSETS, selection=["monthly_prices"], resources=resources,
                              partition_key="2020-10-01").success
        checksums.append(_checksum(database_url))
    assert checksums[0] == checksums[1] == checksums[2]
    assert checksums[0][0] == 19 * len(TICKERS)  # 19 sessions in the replay's October 2020


def _load_months(url: str, months: list[str], seed: int) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for month in months:
            start = dt.date.fromisoformat(month)
            load_month(conn, start, make_month(start, ["AAPL", "MSFT", "JNJ"], seed=seed),
                       strategy="swap" if seed % 2 else "upsert")


def test_overlapping_backfills_from_two_processes(database, database_url):
    """Fault: two processes backfill the same three months at once, in opposite orders.
    Asserts: no deadlock, no duplicate rows, and each month equals one writer's version wholesale."""
    months = ["2020-01-01", "2020-02-01", "2020-03-01"]
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_load_months, args=(database_url, months, 1)),
               context.Process(target=_load_months, args=(database_url, list(reversed(months)), 2))]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
    assert [process.exitcode for process in writers] == [0, 0]
    with psycopg.connect(libpq_url(database_url)) as conn:
        for month in months:
            start = dt.date.fromisoformat(month)
            stored = table_rows(conn, start)
            assert not stored.duplicated(["symbol", "trade_date"]).any()
            versions = [expected_rows(make_month(start, ["AAPL", "MSFT", "JNJ"], seed=s)) for s in (1, 2)]
            assert any(stored.equals(v.astype(stored.dtypes.to_dict())) for v in versions), month


def _load_is_waiting(url: str) -> bool:
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            return bool(conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%%swap_in_prices_load_table%%'").fetchone()[0])
    except psycopg.Error:
        return False


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)
