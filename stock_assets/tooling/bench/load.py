"""Load N generated OHLCV rows: the project's loader against raw binary COPY, ADBC's Arrow ingest
(when installed), psycopg's write_row, pandas to_sql and executemany.

The headline pair (the loader, raw COPY) is measured in `--rounds` interleaved rounds and reported
as medians: with another process busy on the machine, one run of either can land on a good or a
bad share of the cores, and interleaving gives both the same conditions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import statistics
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sqlalchemy import column, create_engine, insert, table

from stock_assets.database.pgcopy import copy_payloads
from stock_assets.database.resource import PostgresResource
from stock_assets.database.schema import ensure_schema
from stock_assets.database.urls import libpq_url, with_driver
from stock_assets.defs.warehouse.loader import COPY_COLUMNS, load_month, load_months
from stock_assets.tooling.bench.scratch import scratch_database

BENCH_DATABASE = "stock_assets_bench"
CHUNK_ROWS = 50_000  # rows per COPY chunk: memory per load is bounded by this, not by the month
_PLAIN_TABLE = (
    "CREATE TABLE bench_plain (symbol text, trade_date date, open float8, high float8, low float8, close float8,"
    " adj_close float8, volume int8, dividend float8, split_ratio float8, source text)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to load (default 1,000,000)")
    parser.add_argument("--tickers", type=int, default=1000, help="distinct tickers (default 1000)")
    parser.add_argument("--baseline-rows", type=int, default=100_000,
                        help="rows for the slow baselines (to_sql, executemany); figures are rows/s")
    parser.add_argument("--workers", type=int, default=PostgresResource.model_fields["load_workers"].default,
                        help="parallel COPY streams of the project's loader (default: the resource's load_workers)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the loader and raw COPY; their medians are reported (default 3)")
    parser.add_argument("--json", action="store_true", help="one line of JSON")


def run(args: argparse.Namespace) -> dict:
    from stock_assets.instance.environment import prepare_environment

    with scratch_database(prepare_environment()["STOCK_ASSETS_DATABASE_URL"], BENCH_DATABASE) as url:
        return _measure(url, args.rows, args.tickers, min(args.baseline_rows, args.rows), args.workers,
                        max(1, args.rounds))


def _measure(url: str, rows: int, tickers: int, baseline_rows: int, workers: int, rounds: int) -> dict:
    ensure_schema(create_engine(with_driver(url, "psycopg")))
    # The data is generated before any clock starts, so every method is timed on loading alone.
    months = [(month, _generate(month, days, tickers)) for month, days in _months(rows, tickers)]
    loaded = sum(len(frame) for _, frame in months)
    rss_before = _peak_rss_mb()
    rounds_s: dict[str, list[float]] = {"project_swap": [], "copy_limit": []}

    def connect():
        return psycopg.connect(libpq_url(url), autocommit=True)

    with connect() as conn:
        # The project's loader as the monthly asset runs it (load_months, parallel streams) into
        # empty months, and the physical limit: one binary COPY stream into an unindexed plain
        # table created beforehand (so the COPY is WAL-logged), encoded the same way.
        for _ in range(rounds):
            _drop_months(conn, months)
            began = time.perf_counter()
            load_months(connect, [(month, _chunks(frame)) for month, frame in months], strategy="swap",
                        workers=workers)
            rounds_s["project_swap"].append(time.perf_counter() - began)
            conn.execute(_PLAIN_TABLE)
            began = time.perf_counter()
            _copy_plain(conn, months)
            rounds_s["copy_limit"].append(time.perf_counter() - began)
            conn.execute("DROP TABLE bench_plain")
        figures = {name: loaded / statistics.median(seconds) for name, seconds in rounds_s.items()}
        rss_after_project = _peak_rss_mb()

        # Each strategy on one stream, month after month, replacing the months just loaded; then
        # upsert in parallel.
        for strategy in ("swap", "upsert"):
            began = time.perf_counter()
            for month, frame in months:
                load_month(conn, month, _chunks(frame), strategy=strategy)
            figures[f"project_{strategy}_one_stream"] = loaded / (time.perf_counter() - began)
        began = time.perf_counter()
        load_months(connect, [(month, _chunks(frame)) for month, frame in months], strategy="upsert", workers=workers)
        figures["project_upsert"] = loaded / (time.perf_counter() - began)

        # Raw COPY into a table created in the same transaction (which lets a wal_level=minimal
        # server skip WAL).
        began = time.perf_counter()
        with conn.transaction():
            conn.execute(_PLAIN_TABLE)
            _copy_plain(conn, months)
        figures["copy_limit_wal_skipped"] = loaded / (time.perf_counter() - began)
        conn.execute("TRUNCATE bench_plain")
        # ADBC's PostgreSQL driver (optional): Arrow tables ingested by its own C++ COPY.
        adbc_ingest = _adbc_ingest(url)
        if adbc_ingest is not None:
            figures["adbc_ingest"] = _rows_per_s_into_plain(conn, adbc_ingest, months, loaded)
        # psycopg's own row writer: the same binary COPY, fed one Python tuple at a time.
        figures["psycopg_write_row"] = _rows_per_s_into_plain(conn, _write_rows, months, loaded)

    sample = pd.concat([frame for _, frame in months]).iloc[:baseline_rows]
    engine = create_engine(with_driver(url, "psycopg"))
    began = time.perf_counter()
    sample.to_sql("bench_plain", engine, if_exists="append", index=False, method="multi", chunksize=1000)
    figures["pandas_to_sql"] = len(sample) / (time.perf_counter() - began)

    target = table("bench_plain", *(column(name) for name, _ in COPY_COLUMNS))
    records = sample.to_dict("records")
    began = time.perf_counter()
    with engine.begin() as sa_conn:
        sa_conn.execute(insert(target), records)
    figures["executemany"] = len(sample) / (time.perf_counter() - began)
    engine.dispose()

    project = figures["project_swap"]
    return {
        "rows": loaded,
        "tickers": tickers,
        "months": len(months),
        "baseline_rows": len(sample),
        "rounds": rounds,
        "rounds_s": {name: [round(s, 3) for s in seconds] for name, seconds in rounds_s.items()},
        "rows_per_s": {
            "project": round(project),
            "project_swap": round(figures["project_swap"]),
            "project_upsert": round(figures["project_upsert"]),
            "project_swap_one_stream": round(figures["project_swap_one_stream"]),
            "project_upsert_one_stream": round(figures["project_upsert_one_stream"]),
            "copy_limit": round(figures["copy_limit"]),
            "copy_limit_wal_skipped": round(figures["copy_limit_wal_skipped"]),
            "pandas_to_sql": round(figures["pandas_to_sql"]),
            "executemany": round(figures["executemany"]),
            **({"adbc_ingest": round(figures["adbc_ingest"])} if "adbc_ingest" in figures else {}),
            "psycopg_write_row": round(figures["psycopg_write_row"]),
        },
        "project": round(project),
        "copy_limit": round(figures["copy_limit"]),
        "pandas_to_sql": round(figures["pandas_to_sql"]),
        "executemany": round(figures["executemany"]),
        "project_strategy": "swap",
        "project_workers": workers,
        "project_vs_copy": round(project / figures["copy_limit"], 3),
        "project_one_stream_vs_copy": round(figures["project_swap_one_stream"] / figures["copy_limit"], 3),
        "project_vs_copy_wal_skipped": round(project / figures["copy_limit_wal_skipped"], 3),
        "project_vs_pandas": round(project / figures["pandas_to_sql"], 1),
        "data_mb": round(sum(f.memory_usage(deep=True).sum() for _, f in months) / 2**20, 1),
        "peak_rss_mb_before_load": round(rss_before, 1),
        "project_load_rss_growth_mb": round(rss_after_project - rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _drop_months(conn: psycopg.Connection, months: list[tuple[dt.date, pd.DataFrame]]) -> None:
    """Drop the months' child tables (untimed), so each round loads into empty months."""
    for month, _ in months:
        name = conn.execute("SELECT market.prices_partition_name(%s)", [month]).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("market", name)))


def _copy_plain(conn: psycopg.Connection, months: list[tuple[dt.date, pd.DataFrame]]) -> None:
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY bench_plain FROM STDIN (FORMAT BINARY)")) as copy:
        for payload in copy_payloads((chunk for _, frame in months for chunk in _chunks(frame)), COPY_COLUMNS):
            copy.write(payload)


def _rows_per_s_into_plain(conn: psycopg.Connection, copy, months: list[tuple[dt.date, pd.DataFrame]],
                           loaded: int) -> float:
    """Time `copy(conn, months)` into the empty bench_plain, check it stored every row, empty it again."""
    began = time.perf_counter()
    copy(conn, months)
    rows_per_s = loaded / (time.perf_counter() - began)
    copied = conn.execute("SELECT count(*) FROM bench_plain").fetchone()[0]
    if copied != loaded:
        raise RuntimeError(f"{getattr(copy, '__name__', copy)} stored {copied} of {loaded} rows")
    conn.execute("TRUNCATE bench_plain")
    return rows_per_s


def _write_rows(conn: psycopg.Connection, months: list[tuple[dt.date, pd.DataFrame]]) -> None:
    names = [name for name, _ in COPY_COLUMNS]
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY bench_plain FROM STDIN (FORMAT BINARY)")) as copy:
        copy.set_types([kind for _, kind in COPY_COLUMNS])
        for _, frame in months:
            for chunk in _chunks(frame):
                for row in chunk[names].itertuples(index=False, name=None):
                    copy.write_row(row)


def _adbc_ingest(url: str):
    """ADBC's ingest of the months into bench_plain (its own connection), or None when the ADBC
    PostgreSQL driver is not installed (`pip install -e '.[bench]'`)."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return None
    from stock_assets.database.pgcopy import arrow_schema, as_arrow

    schema = arrow_schema(COPY_COLUMNS)

    def adbc_ingest(conn: psycopg.Connection, months: list[tuple[dt.date, pd.DataFrame]]) -> None:
        with adbc.connect(libpq_url(url), autocommit=True) as adbc_conn, adbc_conn.cursor() as cur:
            for _, frame in months:
                for chunk in _chunks(frame):
                    cur.adbc_ingest("bench_plain", as_arrow(chunk, schema), mode="append")

    return adbc_ingest


def _months(rows: int, tickers: int) -> list[tuple[dt.date, list[dt.date]]]:
    """Consecutive months of business days: enough whole days of `tickers` rows to reach `rows`."""
    days = pd.bdate_range("2010-01-04", periods=-(-rows // tickers)).date
    by_month: dict[dt.date, list[dt.date]] = {}
    for day in days:
        by_month.setdefault(day.replace(day=1), []).append(day)
    return list(by_month.items())


def _generate(month: dt.date, days: list[dt.date], tickers: int) -> pd.DataFrame:
    """A month of bars: a random walk of realistic prices and volumes per ticker, date-ordered."""
    rng = np.random.default_rng(month.toordinal())
    symbols = np.array([_symbol(i) for i in range(tickers)], dtype=object)
    shape = (len(days), tickers)
    level = (20 + rng.random(tickers) * 300) * np.exp(np.cumsum(rng.normal(0.0003, 0.02, shape), axis=0))
    close = np.round(level, 4)
    open_ = np.round(close * np.exp(rng.normal(0, 0.01, shape)), 4)
    high = np.round(np.maximum(open_, close) * (1 + rng.random(shape) * 0.02), 4)
    low = np.round(np.minimum(open_, close) * (1 - rng.random(shape) * 0.02), 4)
    return pd.DataFrame({
        "symbol": np.tile(symbols, len(days)), "trade_date": np.repeat(np.array(days, dtype=object), tickers),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
        "adj_close": np.round(close.ravel() * 0.97, 4), "volume": rng.integers(10_000, 50_000_000, close.size),
        "dividend": 0.0, "split_ratio": 1.0, "source": "bench",
    })


def _chunks(frame: pd.DataFrame, size: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


def _symbol(i: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    name = ""
    i += 26  # at least two letters
    while i:
        i, r = divmod(i, 26)
        name = letters[r] + name
    return name



def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
