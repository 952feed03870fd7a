"""Loading a month of clean prices into its child table of `market.prices`.

The load is one transaction: take the month's advisory lock (so two loads of the same month queue
instead of interleaving), empty the month's child table, and binary-COPY the new rows in. Readers
see the old month until the commit and the new month after it, never a mix; loading the same month
twice leaves one copy of each row, and the last writer wins.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql

# First key of the two-key advisory lock that guards a month of market.prices.
PRICES_LOCK_NAMESPACE = 0x5052_4943  # "PRIC"

LOAD_COLUMNS = [
    "symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume",
    "dividend", "split_ratio", "source",
]
_COPY_TYPES = [
    "text", "date", "float8", "float8", "float8", "float8", "float8", "int8", "float8", "float8", "text",
]


@dataclass(frozen=True)
class MonthLoad:
    partition: str
    rows_deleted: int
    rows_loaded: int


def ensure_partition(conn: psycopg.Connection, month_start: dt.date) -> str:
    """Create the month's child table if missing (its own short transaction); returns its name."""
    with conn.transaction():
        row = conn.execute("SELECT market.ensure_prices_partition(%s)", [month_start]).fetchone()
    assert row is not None
    return row[0]


def load_month(conn: psycopg.Connection, month_start: dt.date, rows: pd.DataFrame) -> MonthLoad:
    """Replace the month containing `month_start` with `rows` (clean prices of that month only)."""
    outside = rows[(pd.to_datetime(rows["trade_date"]).dt.to_period("M") != pd.Period(month_start, "M"))]
    if len(outside):
        raise ValueError(f"{len(outside)} rows fall outside the month {month_start:%Y-%m}")
    partition = ensure_partition(conn, month_start)
    table = sql.Identifier("market", partition)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PRICES_LOCK_NAMESPACE, _month_key(month_start)])
        deleted = conn.execute(sql.SQL("DELETE FROM {}").format(table)).rowcount
        copy_statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            table, sql.SQL(", ").join(sql.Identifier(c) for c in LOAD_COLUMNS)
        )
        with conn.cursor() as cur, cur.copy(copy_statement) as copy:
            copy.set_types(_COPY_TYPES)
            for record in rows[LOAD_COLUMNS].itertuples(index=False, name=None):
                copy.write_row(record)
    return MonthLoad(partition=partition, rows_deleted=deleted, rows_loaded=len(rows))


def _month_key(month_start: dt.date) -> int:
    return month_start.year * 100 + month_start.month
