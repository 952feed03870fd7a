"""One ticker batch of a cleaned_prices run: read from the raw spool, cleaned, its rejections and
listings written, its clean rows spooled by month.

`clean_batch` is the whole of a batch's work, done in the step's process or in a worker process
(stock_assets/landing/workers.py) alike: a batch holds each of its symbols' whole series, so the
day-over-day rules see every previous bar, and batches never share a symbol.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.metadata import distinct_by_day, rows_by_day
from stock_assets.defs.prices.checks import Outcome, evaluate_checks
from stock_assets.defs.prices.cleaning import REJECTED_COLUMNS, clean_quotes
from stock_assets.defs.universe.listings import upsert_listings
from stock_assets.landing.io_manager import DATE_COLUMN, LandChunk, LandingIOManager, read_days, write_chunk
from stock_assets.landing.stores import LandingStore
from stock_assets.landing.streaming import Spool, day_codes, to_table
from stock_assets.landing.workers import built_once


@dataclass(frozen=True)
class RawBatching:
    """Which ticker batch a raw row goes to, the same in every process: the tracked symbols in
    order, `size` to a batch; a symbol the raw days hold but the run no longer tracks joins a
    batch by a stable hash of its name. Names are compared trimmed and upper-cased, so spelling
    differences Yahoo never makes stay together."""

    batch_of: Mapping[str, int]
    batches: int

    @classmethod
    def of(cls, symbols: Sequence[str], size: int) -> RawBatching:
        names = list(dict.fromkeys(symbol.strip().upper() for symbol in symbols))
        return cls({name: position // size for position, name in enumerate(names)},
                   max(1, -(-len(names) // size)))

    def batch(self, name: str) -> int:
        found = self.batch_of.get(name)
        return found if found is not None else zlib.crc32(name.encode()) % self.batches


@dataclass(frozen=True)
class RawMonthJob:
    """A month of stored raw days to read and spool by ticker batch."""

    number: int
    days: Sequence[str]  # stored days of the month
    asset_path: Sequence[str]
    spool_root: str
    batching: RawBatching
    landing: dict[str, object] | None = None  # LandingIOManager.portable(), in a worker process


@dataclass
class RawMonth:
    """What a spooled month reports back: its rows per day, the symbols it held, its pieces."""

    rows: int
    rows_by_day: dict[str, int]
    names: set[str]
    pieces: set[tuple[int, int]]


def spool_raw_month(job: RawMonthJob, store: LandingStore | None = None) -> RawMonth:
    """Read one month of raw days and spool it by ticker batch; `store` in the step's own process,
    a worker opens the landing zone from `job.landing` once."""
    if store is None:
        assert job.landing is not None, "a month read in a worker needs the landing zone's configuration"
        store = built_once(_landing_store, job.landing)
    spool = Spool(job.spool_root)
    table = read_days(store, job.asset_path, job.days)
    if table is None:
        return RawMonth(0, {}, set(), set())
    codes, names = day_codes(table)
    by_day = dict(zip(names, np.bincount(codes[codes >= 0], minlength=len(names)).tolist()))
    symbols = pc.fill_null(pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(table.column("symbol"), pa.string()))), "")
    symbol_codes, found = pd.factorize(np.asarray(symbols.to_numpy(zero_copy_only=False), dtype=object))
    batches = np.array([job.batching.batch(name) for name in found], dtype=np.int64)[symbol_codes]
    order = np.argsort(batches, kind="stable")
    rows, table, batches = table.num_rows, table.take(order), batches[order]
    for batch in np.unique(batches):
        first, last = np.searchsorted(batches, [batch, batch + 1])
        spool.put(int(batch), job.number, table.slice(first, last - first))
    return RawMonth(rows, by_day, set(found), spool.pieces)


def _landing_store(config: Mapping[str, object]) -> LandingStore:
    return LandingIOManager.from_portable(config).store()


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
