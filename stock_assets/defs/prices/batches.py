"""One ticker batch of a cleaned_prices run: read from the raw spool, cleaned, its rejections and
listings written, its clean rows spooled by month.

`clean_batch` is the whole of a batch's work, done in the step's process or in a worker process
(stock_assets/landing/workers.py) alike: a batch holds each of its symbols' whole series, so the
day-over-day rules see every previous bar, and batches never share a symbol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.metadata import distinct_by_day, rows_by_day
from stock_assets.defs.prices.checks import Outcome, evaluate_checks
from stock_assets.defs.prices.cleaning import REJECTED_COLUMNS, clean_quotes
from stock_assets.defs.universe.listings import upsert_listings
from stock_assets.landing.io_manager import DATE_COLUMN, LandChunk, LandingIOManager, write_chunk
from stock_assets.landing.streaming import Spool, to_table
from stock_assets.landing.workers import built_once


@dataclass(frozen=True)
class CleanJob:
    """A batch to clean: its pieces in the raw spool, where its clean pieces go, what it is judged with."""

    number: int
    raw_root: str
    raw_pieces: Sequence[tuple[int, int]]
    clean_root: str
    chunks: Sequence[Sequence[str]]  # the run's month chunks (streaming.month_chunks)
    history: pd.DataFrame | None  # raw bars of the days before the run (the first day's previous bars)
    confirmed_moves: Sequence[tuple[str, dt.date]]
    database: dict[str, object] | None = None  # PostgresResource.portable(), in a worker process


@dataclass
class CleanedBatch:
    """What a cleaned batch reports back; its clean rows are in the spool, its rejections in the database."""

    rejected: pd.DataFrame
    rejected_by_reason: dict[str, int]
    symbols: int
    listings: int
    pieces: set[tuple[int, int]]


def clean_batch(job: CleanJob, database: PostgresResource | None = None) -> CleanedBatch:
    """Clean one batch; `database` in the step's own process, a worker builds its own once."""
    if database is None:
        assert job.database is not None, "a batch cleaned in a worker needs the database's configuration"
        database = built_once(_postgres, job.database)
    raw_spool = Spool(job.raw_root)
    raw_spool.pieces = set(job.raw_pieces)
    raw = as_frame(raw_spool.batch(job.number))
    history = job.history
    earlier = history[history["symbol"].isin(set(raw["symbol"].dropna()))] if history is not None else None
    result = clean_quotes(raw, history=earlier, confirmed_moves=job.confirmed_moves)
    insert_rejections(database, result.rejected)
    listings = upsert_listings(database, raw)
    clean_spool = Spool(job.clean_root)
    clean_spool.put_by_chunk(job.number, to_table(result.clean), job.chunks)
    return CleanedBatch(
        rejected=result.rejected,
        rejected_by_reason=dict(result.rejected_by_reason),
        symbols=int(result.clean["symbol"].nunique()) if len(result.clean) else 0,
        listings=listings,
        pieces=clean_spool.pieces,
    )


@dataclass(frozen=True)
class CheckChunk:
    """A month chunk of clean rows to land as day files and to check, day by day."""

    land: LandChunk
    raw_by_day: Mapping[str, int]  # of the chunk's days
    counted_by_day: Mapping[str, int]  # rejections the rejected_share check counts
    reasons_by_day: Mapping[str, Mapping[str, int]]
    expected: Sequence[str]  # the listings expected to have bars
    any_session: Set[str]
    own_sessions: Mapping[str, Set[str]]
    closed_note: str


@dataclass
class CheckedChunk:
    """What a landed and checked chunk reports back."""

    rows: int
    clean_by_day: dict[str, int]
    symbols_by_day: dict[str, int]
    outcomes: list[Outcome]


def land_and_check_chunk(job: CheckChunk, landing: LandingIOManager | None = None) -> CheckedChunk:
    """Write one month chunk's clean day files and judge every check on each of its days."""
    days = job.land.days
    table = write_chunk(job.land, landing)
    clean = as_frame(table) if table is not None else job.land.empty.empty_table().to_pandas()
    del table
    outcomes = evaluate_checks(clean, job.raw_by_day, job.counted_by_day, job.expected, days, job.any_session,
                               sessions_by_symbol=job.own_sessions, closed_note=job.closed_note,
                               rejected_reasons=job.reasons_by_day).outcomes
    return CheckedChunk(len(clean), rows_by_day(clean, days), distinct_by_day(clean, days, "symbol"), list(outcomes))


def _postgres(config) -> PostgresResource:
    return PostgresResource(**config)


def as_frame(table) -> pd.DataFrame:
    """A spooled Arrow table as pandas, trade dates as dates."""
    frame = table.to_pandas()
    if DATE_COLUMN in frame:
        frame[DATE_COLUMN] = pd.to_datetime(frame[DATE_COLUMN]).dt.date
    return frame


_INSERT_REJECTION = text(
    "INSERT INTO market.price_rejections"
    " (trade_date, symbol, reason, detail, open, high, low, close, adj_close, volume)"
    " VALUES (:trade_date, :symbol, :reason, :detail, :open, :high, :low, :close, :adj_close, :volume)"
)


def insert_rejections(database: PostgresResource, rejected: pd.DataFrame) -> None:
    rows = rejected.astype(object).where(rejected.notna(), None)
    if len(rows):
        with database.begin() as conn:
            conn.execute(_INSERT_REJECTION, rows[REJECTED_COLUMNS].to_dict("records"))
