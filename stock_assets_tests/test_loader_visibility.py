"""A freshly loaded month is all-visible: index-only scans of it never visit the heap.

Read from EXPLAIN (ANALYZE): "Heap Fetches" of the Index Only Scan on the month's child table is 0
right after the load, without waiting for autovacuum (swap: COPY FREEZE into the table created in
the load's transaction; upsert: VACUUM after the commit). The same measurement shows heap fetches
once rows are changed behind the loader's back, so it can tell the difference.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from stock_assets.defs.warehouse.loader import load_month, load_months
from stock_assets_tests.test_loader import make_month

MONTH = dt.date(2020, 3, 1)
SYMBOLS = [f"S{i:03d}" for i in range(60)]


@pytest.fixture
def conn(database, database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def index_only_heap_fetches(conn: psycopg.Connection) -> int:
    """Heap fetches of an index-only scan over the whole month (planner steered to that plan)."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT symbol, trade_date, close FROM market.prices "
            "WHERE symbol >= %s AND trade_date >= %s AND trade_date < %s",
            ["S", MONTH, dt.date(2020, 4, 1)],
        ).fetchone()[0]
    nodes, scans = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        if node["Node Type"] == "Index Only Scan":
            scans.append(node)
        nodes.extend(node.get("Plans", []))
    assert scans, f"expected an index-only scan, got {plan}"
    assert sum(scan["Actual Rows"] for scan in scans) == len(SYMBOLS) * 22
    return sum(scan["Heap Fetches"] for scan in scans)


@pytest.mark.parametrize("strategy", ["swap", "upsert"])
def test_fresh_month_is_read_by_index_only_scans_without_heap_fetches(conn, strategy):
    if strategy == "upsert":
        load_month(conn, MONTH, make_month(MONTH, SYMBOLS, seed=1), strategy="swap")
    load_month(conn, MONTH, make_month(MONTH, SYMBOLS, seed=2), strategy=strategy)
    assert index_only_heap_fetches(conn) == 0

    # The measurement does see heap fetches when pages are not all-visible.
    conn.execute("UPDATE market.prices SET volume = volume + 1 WHERE trade_date = %s", [dt.date(2020, 3, 10)])
    assert index_only_heap_fetches(conn) > 0


def test_months_loaded_in_parallel_are_all_visible(conn, database):
    months = [(MONTH, make_month(MONTH, SYMBOLS, seed=3)),
              (dt.date(2020, 4, 1), make_month(dt.date(2020, 4, 1), SYMBOLS, seed=4))]
    load_months(database.psycopg_connection, months, workers=2)  # the monthly_prices asset's path
    assert index_only_heap_fetches(conn) == 0
