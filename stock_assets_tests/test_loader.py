"""The monthly loader against a real PostgreSQL: idempotent, concurrent-safe, partition-pruned."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import psycopg
import pytest
from psycopg import sql

from stock_assets.database.pgcopy import DatesOutOfRange, copy_payloads
from stock_assets.defs.warehouse.loader import COPY_COLUMNS, load_month, load_months

MARCH = dt.date(2020, 3, 1)


def make_month(month_start: dt.date, symbols: list[str], seed: int = 0) -> pd.DataFrame:
    """Plausible clean bars: every weekday of the month for every symbol."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range(month_start, month_start + pd.offsets.MonthEnd(0)).date
    index = pd.MultiIndex.from_product([symbols, days], names=["symbol", "trade_date"]).to_frame(index=False)
    close = np.round(50 + rng.random(len(index)) * 100, 6)
    open_ = np.round(close * (1 + rng.normal(0, 0.01, len(index))), 6)
    index["open"], index["close"] = open_, close
    index["high"] = np.maximum(open_, close) + 0.5
    index["low"] = np.minimum(open_, close) - 0.5
    index["adj_close"] = close * 0.98
    index["volume"] = rng.integers(1_000, 10_000_000, len(index))
    index["dividend"], index["split_ratio"], index["source"] = 0.0, 1.0, "test"
    return index


def table_rows(conn: psycopg.Connection, month_start: dt.date) -> pd.DataFrame:
    rows = conn.execute(
        "SELECT symbol, trade_date, open, high, low, close, adj_close, volume, dividend, split_ratio, source"
        " FROM market.prices WHERE trade_date >= %s AND trade_date < %s ORDER BY symbol, trade_date",
        [month_start, month_start + pd.offsets.MonthBegin(1)],
    ).fetchall()
    return pd.DataFrame(rows, columns=[c for c, _ in COPY_COLUMNS])


def expected_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["symbol", "trade_date"]).reset_index(drop=True)[[c for c, _ in COPY_COLUMNS]]


@pytest.fixture
def conn(database, database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("strategy", ["swap", "upsert"])
def test_loading_a_month_twice_leaves_one_copy(conn, strategy):
    frame = make_month(MARCH, ["AAPL", "MSFT", "BRK-B"])
    first = load_month(conn, MARCH, frame, strategy=strategy)
    second = load_month(conn, MARCH, frame, strategy=strategy)
    assert first.rows_loaded == second.rows_loaded == len(frame)
    assert second.rows_replaced == len(frame)
    pd.testing.assert_frame_equal(table_rows(conn, MARCH), expected_rows(frame), check_dtype=False)
    assert first.partition == "prices_2020_03"


def child_table_shape(conn: psycopg.Connection) -> dict:
    """The month's child table as the catalog sees it: its constraints, its index, any leftovers."""
    return {
        "attached": conn.execute("SELECT count(*) FROM pg_inherits WHERE inhrelid = 'market.prices_2020_03'::regclass"
                                 " AND inhparent = 'market.prices'::regclass").fetchone()[0],
        "constraints": sorted(name for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'market.prices_2020_03'::regclass AND contype IN ('c', 'p')")),
        "index": conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                              " WHERE indrelid = 'market.prices_2020_03'::regclass").fetchall(),
        "load_tables": conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'prices\\_%%\\_load'").fetchone()[0],
    }


def test_a_new_month_and_a_replaced_one_end_with_the_same_table(conn):
    """A new month is built under its final name, a replaced one beside the old and renamed: both
    end as the same attached child table, with the same key and constraints and no leftovers."""
    load_month(conn, MARCH, make_month(MARCH, ["AAPL", "MSFT"], seed=1))
    new = child_table_shape(conn)
    load_month(conn, MARCH, make_month(MARCH, ["AAPL", "MSFT"], seed=2))
    assert child_table_shape(conn) == new
    assert new["attached"] == 1 and new["load_tables"] == 0
    assert new["constraints"] == ["prices_2020_03_month", "prices_2020_03_pkey", "prices_ohlc_consistent",
                                  "prices_positive"]
    assert new["index"] == [("CREATE UNIQUE INDEX prices_2020_03_pkey ON market.prices_2020_03 USING btree"
                             " (symbol, trade_date) INCLUDE (close, adj_close, volume)",)]


@pytest.mark.parametrize("strategy", ["swap", "upsert"])
def test_a_month_changed_upstream_ends_with_the_new_values(conn, strategy):
    old = make_month(MARCH, ["AAPL", "MSFT", "XOM"], seed=1)
    load_month(conn, MARCH, old, strategy=strategy)
    new = make_month(MARCH, ["AAPL", "MSFT", "CVX"], seed=2)  # XOM gone, CVX new, prices restated
    load_month(conn, MARCH, [new.iloc[:10], new.iloc[10:]], strategy=strategy)  # in chunks
    pd.testing.assert_frame_equal(table_rows(conn, MARCH), expected_rows(new), check_dtype=False)


def test_rows_outside_the_month_are_refused_and_nothing_changes(conn):
    frame = make_month(MARCH, ["AAPL"])
    load_month(conn, MARCH, frame)
    stray = make_month(dt.date(2020, 4, 1), ["AAPL"]).iloc[:1]
    with pytest.raises(ValueError, match="outside the month 2020-03"):
        load_month(conn, MARCH, [frame, stray])
    pd.testing.assert_frame_equal(table_rows(conn, MARCH), expected_rows(frame), check_dtype=False)
    leftovers = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%%\\_load'").fetchone()
    assert leftovers == (0,)


def test_concurrent_loads_of_the_same_month_leave_exactly_one_copy(conn, database_url):
    versions = [make_month(MARCH, ["AAPL", "MSFT", "JNJ", "PFE"], seed=seed) for seed in range(4)]
    errors: list[BaseException] = []

    def load(frame: pd.DataFrame, strategy: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                load_month(own, MARCH, frame, strategy=strategy)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=load, args=(frame, ("swap", "upsert")[i % 2]))
               for i, frame in enumerate(versions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    stored = table_rows(conn, MARCH)
    assert len(stored) == len(versions[0])
    assert not stored.duplicated(["symbol", "trade_date"]).any()
    # The last writer won wholesale: the table equals one complete version, not a mix.
    assert any(stored.equals(expected_rows(v).astype(stored.dtypes.to_dict())) for v in versions)


def test_concurrent_loads_of_different_months_do_not_deadlock(database_url, database):
    months = [dt.date(2020, m, 1) for m in (1, 2, 3, 4)]
    errors: list[BaseException] = []

    def load(month: dt.date) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                for _ in range(3):
                    load_month(own, month, make_month(month, ["AAPL", "MSFT"]))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=load, args=(m,)) for m in months]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_readers_never_see_a_half_loaded_month(conn, database_url):
    small, large = make_month(MARCH, ["AAPL"]), make_month(MARCH, ["AAPL", "MSFT", "JNJ", "PFE", "XOM"])
    load_month(conn, MARCH, small)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                seen.add(reader.execute("SELECT count(*) FROM market.prices").fetchone()[0])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(6):
            load_month(conn, MARCH, large if i % 2 == 0 else small, strategy=("swap", "upsert")[i % 3 == 2])
    finally:
        stop.set()
        thread.join(timeout=60)
    assert seen <= {len(small), len(large)}
    assert len(seen) >= 1


def test_one_symbol_one_month_touches_only_that_partition(conn):
    for month in (dt.date(2020, 2, 1), MARCH, dt.date(2020, 4, 1)):
        load_month(conn, month, make_month(month, ["AAPL", "MSFT"]))
    conn.execute("ANALYZE market.prices")
    plan = "\n".join(row[0] for row in conn.execute(
        "EXPLAIN SELECT close FROM market.prices WHERE symbol = %s AND trade_date >= %s AND trade_date < %s",
        ["AAPL", MARCH, dt.date(2020, 4, 1)],
    ))
    assert "prices_2020_03" in plan
    assert "prices_2020_02" not in plan and "prices_2020_04" not in plan


def test_binary_copy_encoder_round_trips_awkward_text(conn):
    frame = pd.DataFrame({
        "name": ["", "a", "ÄÖü", "日本語", "x" * 300, "a", "tab\tand\nnewline", "quote'\"\\"],
        "day": [dt.date(1999, 12, 31), dt.date(2000, 1, 1), dt.date(2020, 2, 29), dt.date(2038, 1, 20),
                dt.date(1970, 1, 1), dt.date(2100, 12, 31), dt.date(2000, 3, 1), dt.date(2001, 9, 9)],
        "price": [0.1, -1.5, 1e300, 3.141592653589793, 0.0, 2.5, 1 / 3, -0.0],
        "volume": [0, 1, -1, 2**62, 7, 8, 9, 10],
    })
    columns = [("name", "text"), ("day", "date"), ("price", "float8"), ("volume", "int8")]
    conn.execute("CREATE TEMP TABLE roundtrip (name text, day date, price float8, volume int8)")
    with conn.cursor() as cur, cur.copy("COPY roundtrip (name, day, price, volume) FROM STDIN (FORMAT BINARY)") as copy:
        for payload in copy_payloads([frame.iloc[:3], frame.iloc[3:]], columns):
            copy.write(payload)
    back = pd.DataFrame(conn.execute("SELECT name, day, price, volume FROM roundtrip").fetchall(),
                        columns=frame.columns)
    key = ["name", "day"]
    pd.testing.assert_frame_equal(back.sort_values(key).reset_index(drop=True),
                                  frame.sort_values(key).reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("values, pg_type", [
    ([1.0, None], "float8"),
    ([1, None], "int8"),
    (["AAPL", None], "text"),
    ([dt.date(2020, 3, 2), None], "date"),
    (pd.to_datetime(["2020-03-02", None]), "date"),
    (pa.table({"a": [1.0, float("nan")]}), "float8"),  # an Arrow NaN is not a null, and is refused too
    (pa.table({"a": pa.array([dt.date(2020, 3, 2), None], pa.date32())}), "date"),
])
def test_encoder_refuses_nulls(values, pg_type):
    rows = values if isinstance(values, pa.Table) else pd.DataFrame({"a": values})
    with pytest.raises(ValueError, match="column 'a' holds NULLs"):
        list(copy_payloads([rows], [("a", pg_type)]))


@pytest.mark.parametrize("days", [
    [dt.date(2020, 3, 2), dt.date(2020, 4, 1)],
    pd.to_datetime(["2020-02-29", "2020-03-02"]),
])
def test_encoder_refuses_dates_outside_the_range_it_is_given(days):
    frame = pd.DataFrame({"day": days})
    with pytest.raises(DatesOutOfRange, match="1 rows have day outside 2020-03-01 .. 2020-03-31"):
        list(copy_payloads([frame], [("day", "date")], dates_within=(dt.date(2020, 3, 1), dt.date(2020, 4, 1))))
    assert len(b"".join(copy_payloads([frame], [("day", "date")]))) > 0


def test_embedded_server_runs_with_the_tuning_profile(conn):
    from stock_assets.database.tuning import tuning_profile

    expected = tuning_profile()
    names = ["shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "jit", "random_page_cost"]
    shown = {name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0] for name in names}
    assert shown == {name: expected[name] for name in names}


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_month_loads_store_every_month_once(conn, database_url, workers):
    months = [dt.date(2020, m, 1) for m in range(1, 8)]
    frames = {month: make_month(month, ["AAPL", "MSFT", "JNJ"], seed=month.month) for month in months}
    opened: list[int] = []

    def connect():
        opened.append(1)
        return psycopg.connect(database_url, autocommit=True)

    for _ in range(2):  # a second pass replaces every month with the same rows
        loads = load_months(connect, [(month, frames[month]) for month in months], workers=workers)
        assert [load.partition for load in loads] == [f"prices_{m:%Y_%m}" for m in months]
        assert [load.rows_loaded for load in loads] == [len(frames[m]) for m in months]
    assert len(opened) == 2 * workers
    assert loads[0].rows_replaced == len(frames[months[0]])
    for month in months:
        stored = table_rows(conn, month)
        expected = expected_rows(frames[month])
        pd.testing.assert_frame_equal(stored, expected.astype(stored.dtypes.to_dict()))


def test_a_failing_month_fails_the_parallel_load_and_names_itself(conn, database_url):
    good, bad = dt.date(2020, 1, 1), dt.date(2020, 2, 1)
    stray = make_month(good, ["AAPL"])  # January rows offered as February's
    with pytest.raises(ValueError, match="outside the month 2020-02"):
        load_months(lambda: psycopg.connect(database_url, autocommit=True),
                    [(good, make_month(good, ["AAPL"])), (bad, stray)], workers=2)
    assert conn.execute("SELECT to_regclass('market.prices_2020_02_load')").fetchone() == (None,)
