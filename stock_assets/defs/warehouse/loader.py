"""Loading a month of clean prices into its child table of `market.prices`, at close to COPY speed.

Rows stream in as chunks (pandas DataFrames or Arrow tables) and reach PostgreSQL as binary COPY
encoded from Arrow batches by pgpq (`stock_assets.database.pgcopy`): no per-row Python work,
memory bounded by one chunk.

Two strategies, both one transaction under the month's advisory lock (two loads of the same
month queue instead of interleaving; readers see the old month or the new one, never a mix):

- `swap` (the default, faster for whole months): COPY into a new unindexed table carrying the
  month's bounds as a CHECK constraint, build its indexes in bulk, then DETACH the old child table
  and ATTACH the new one (`market.swap_in_prices_load_table`, sql/002_partition_functions.sql).
  A month without a child table yet (a backfill's) is built under its final name and only
  attached: no renames, one index build, the same single transaction.
  Statistics are left to autovacuum, which analyzes a freshly filled table within a minute
  (an ANALYZE here cost 12 ms of a month's ~50 ms). The COPY is `FREEZE`: the table was created in
  the same transaction, so its rows are written frozen and its pages all-visible in the visibility
  map. Index-only scans of a freshly loaded month then never visit the heap (no "Heap Fetches"),
  instead of doing so until autovacuum gets round to the table.
- `upsert`: COPY into an unindexed temporary staging table, then one
  `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT FROM` (sql/queries/
  upsert_month_from_stage.sql), deleting rows that vanished upstream. Unchanged rows are not
  rewritten, so it suits small corrections to a month that is mostly right. The rows it writes
  are not frozen (the table already existed), so the child table is vacuumed after the commit, which
  sets its pages all-visible again.

`load_months` loads several months over parallel connections (one COPY stream each): a month's
own work is serial (encoding, COPY, the index build, the swap and its commit), so other streams
keep the cores busy while one builds an index or waits for its commit; on 2 cores, 3 streams
loaded 1M rows about 6 % faster than 2, and about 20 % faster with another process keeping a
core busy (the resource's `load_workers`). `stock-assets bench load` measures both strategies,
one stream and parallel, against the raw COPY limit.
"""

from __future__ import annotations

import datetime as dt
import queue
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from stock_assets.database.pgcopy import DatesOutOfRange, Rows, copy_payloads
from stock_assets.database.schema import load_query

# First key of the two-key advisory lock that guards a month of market.prices.
PRICES_LOCK_NAMESPACE = 0x5052_4943  # "PRIC"

COPY_COLUMNS: list[tuple[str, str]] = [
    ("symbol", "text"), ("trade_date", "date"), ("open", "float8"), ("high", "float8"), ("low", "float8"),
    ("close", "float8"), ("adj_close", "float8"), ("volume", "int8"), ("dividend", "float8"),
    ("split_ratio", "float8"), ("source", "text"),
]
Strategy = Literal["swap", "upsert"]
_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(name) for name, _ in COPY_COLUMNS)

_LOCK_AND_CREATE = ("WITH locked AS (SELECT pg_advisory_xact_lock(%s, %s))"
                    " SELECT market.create_prices_load_table(%s) FROM locked")
_SWAP_IN = "SELECT market.swap_in_prices_load_table(%s), market.prices_partition_name(%s)"

_STAGE_TABLE = sql.SQL(
    "CREATE TEMP TABLE stage_prices (symbol text, trade_date date, open float8, high float8, low float8,"
    " close float8, adj_close float8, volume int8, dividend float8, split_ratio float8, source text)"
    " ON COMMIT DROP"
)


@dataclass(frozen=True)
class MonthLoad:
    partition: str
    rows_replaced: int
    rows_loaded: int
    strategy: str


def load_month(
    conn: psycopg.Connection,
    month_start: dt.date,
    chunks: Iterable[Rows] | Rows,
    strategy: Strategy = "swap",
) -> MonthLoad:
    """Replace the month containing `month_start` with the rows in `chunks` (that month's only)."""
    month_start = month_start.replace(day=1)
    counted = _Counted([chunks] if isinstance(chunks, (pd.DataFrame, pa.Table)) else chunks)
    if strategy == "swap":
        return _swap(conn, month_start, counted)
    if strategy == "upsert":
        return _upsert(conn, month_start, counted)
    raise ValueError(f"unknown load strategy {strategy!r}")


MonthRows = tuple[dt.date, "Iterable[Rows] | Rows"]


def load_months(
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
    months: Sequence[MonthRows],
    strategy: Strategy = "swap",
    workers: int = 3,
) -> list[MonthLoad]:
    """Load each (month_start, rows) of `months` like `load_month`, over up to `workers` connections.

    `connect()` opens one connection per worker (e.g. from the engine's pool); each worker takes
    the next month from a shared queue, so a big month does not hold up the small ones. Every
    month stays one transaction under its lock, exactly as `load_month` alone. Results come back
    in the order of `months`; the first failure is raised once the other workers have stopped.
    """
    if not months:
        return []
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(months)):
        todo.put(index)
    results: list[MonthLoad | None] = [None] * len(months)
    failed: list[BaseException] = []

    def work() -> None:
        with connect() as conn:
            while not failed:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                month_start, rows = months[index]
                try:
                    results[index] = load_month(conn, month_start, rows, strategy=strategy)
                except BaseException as err:
                    failed.append(err)
                    raise

    streams = max(1, min(workers, len(months)))
    with ThreadPoolExecutor(streams, thread_name_prefix="load-month") as pool:
        futures = [pool.submit(work) for _ in range(streams)]
    for future in futures:
        future.result()
    return [load for load in results if load is not None]


def ensure_partition(conn: psycopg.Connection, month_start: dt.date) -> str:
    """Create the month's child table if missing (its own short transaction); returns its name.

    Under the month's lock: CREATE TABLE IF NOT EXISTS still fails when another session creates
    the same table at the same moment.
    """
    with conn.transaction():
        _lock_month(conn, month_start)
        return _scalar(conn, "SELECT market.ensure_prices_partition(%s)", [month_start])


def _swap(conn: psycopg.Connection, month_start: dt.date, rows: "_Counted") -> MonthLoad:
    with conn.transaction():
        # One round trip each: the month's lock, then its load table (the CTE's row comes first) ...
        load_table = _scalar(conn, _LOCK_AND_CREATE, [PRICES_LOCK_NAMESPACE, _lock_key(month_start), month_start])
        # Created in this transaction: FREEZE writes the rows frozen and the pages all-visible.
        _copy(conn, sql.Identifier("market", load_table), rows, month_start, freeze=True)
        # ... and the swap with the child table's name.
        replaced, partition = conn.execute(_SWAP_IN, [month_start, month_start]).fetchone()
    return MonthLoad(partition=partition, rows_replaced=replaced, rows_loaded=rows.count, strategy="swap")


def _upsert(conn: psycopg.Connection, month_start: dt.date, rows: "_Counted") -> MonthLoad:
    partition = ensure_partition(conn, month_start)
    month_end = _next_month(month_start)
    with conn.transaction():
        _lock_month(conn, month_start)
        before = _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("market", partition)))
        conn.execute(_STAGE_TABLE)
        _copy(conn, sql.Identifier("stage_prices"), rows, month_start)
        conn.execute(load_query("upsert_month_from_stage"), {"month_start": month_start, "month_end": month_end})
    _vacuum(conn, partition)
    return MonthLoad(partition=partition, rows_replaced=before, rows_loaded=rows.count, strategy="upsert")


def _copy(conn: psycopg.Connection, table: sql.Composable, rows: Iterable[Rows], month_start: dt.date,
          freeze: bool = False) -> None:
    """COPY the rows into `table`, refusing any row dated outside the month (checked on each
    chunk's Arrow column before its bytes are sent)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY{})").format(
        table, _COLUMN_LIST, sql.SQL(", FREEZE") if freeze else sql.SQL(""),
    )
    try:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for payload in copy_payloads(rows, COPY_COLUMNS, dates_within=(month_start, _next_month(month_start))):
                copy.write(payload)
    except DatesOutOfRange as err:
        raise ValueError(f"{err.count} rows fall outside the month {month_start:%Y-%m}") from err


def _vacuum(conn: psycopg.Connection, partition: str) -> None:
    """VACUUM the month's child table (sets its pages all-visible), when the connection is between
    transactions; VACUUM cannot run inside one, so a caller holding a transaction open skips it."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier("market", partition)))
    finally:
        conn.autocommit = autocommit


def _lock_month(conn: psycopg.Connection, month_start: dt.date) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PRICES_LOCK_NAMESPACE, _lock_key(month_start)])


def _lock_key(month_start: dt.date) -> int:
    return month_start.year * 100 + month_start.month


def _scalar(conn: psycopg.Connection, query, params=None):
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _next_month(month_start: dt.date) -> dt.date:
    return (month_start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class _Counted:
    """Passes chunks through and counts their rows."""

    def __init__(self, chunks: Iterable[Rows]) -> None:
        self._chunks = chunks
        self.count = 0

    def __iter__(self):
        for chunk in self._chunks:
            self.count += len(chunk)
            yield chunk
