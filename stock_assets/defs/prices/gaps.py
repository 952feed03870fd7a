"""Finding gaps in the daily data: what the gap sensor requests (and `health` reports), as plain functions.

Two kinds of gap, both in the look-back window of closed sessions:

- A whole day: an NYSE session whose `raw_quotes` or `cleaned_prices` partition is missing or
  failed in Dagster, or whose rows are all missing from `market.prices` although its month was
  loaded (data deleted behind Dagster's back). Weekends and holidays are never gaps. Gaps separated
  only by non-trading days merge into one range, requested as one single-run backfill.
- A hole: one ticker without a clean bar on a session it should have traded (`expected_sessions`)
  although the day itself was materialized - Yahoo answered an HTML page, a 5xx or a bad value for
  that ticker only, and the run still succeeded. Holes are found in the clean landing data and, for
  months loaded after the day was cleaned, in `market.prices` (sql/queries/ticker_holes.sql).

A partition that is FAILED only because a run fetching some tickers (`only_tickers`: a gap fill, a
new ticker, a restatement) failed still holds every other ticker's data: it is not a whole-day gap.
Days and tickers that a queued or running run already covers are left alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, text

from stock_assets import markets
from stock_assets.database.resource import PostgresResource
from stock_assets.database.schema import load_query
from stock_assets.defs.partitions import (
    FIRST_DAY,
    RANGE_END_TAG,
    RANGE_START_TAG,
    is_trading_day,
    trading_day_partitions,
    trading_days,
)
from stock_assets.landing.stores import LandingStore

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RAW = dg.AssetKey("raw_quotes")
CLEANED = dg.AssetKey("cleaned_prices")
DAILY_ASSETS = (RAW, CLEANED)
MONTHLY = dg.AssetKey("monthly_prices")


def expected_sessions(symbol: str, first: dt.date, end: dt.date) -> list[dt.date]:
    """The sessions on which `symbol` should have a daily bar, first <= day < end: its own
    exchange's sessions (a London listing owes no bar on a London holiday, and one on a NYSE
    holiday). The one place that says which days a ticker owes (listing and delisting dates are
    not known here yet)."""
    return markets.sessions(markets.exchange_of(symbol).calendar, first, end)


def sessions_in_window(as_of: dt.date, lookback_days: int) -> list[dt.date]:
    """NYSE sessions that have closed: from `as_of - lookback_days` up to the day before `as_of`."""
    first = max(as_of - dt.timedelta(days=lookback_days), dt.date.fromisoformat(FIRST_DAY))
    return trading_days(first, as_of)


def only_tickers_of(run: dg.DagsterRun | None) -> list[str]:
    """The tickers a run fetches when it fetches only some (`only_tickers`), else []."""
    if run is None:
        return []
    config = (((run.run_config or {}).get("ops") or {}).get("raw_quotes") or {}).get("config") or {}
    return list(config.get("only_tickers") or [])


def unmaterialized_sessions(instance: dg.DagsterInstance, sessions: list[dt.date]) -> set[dt.date]:
    """Sessions whose raw or cleaned partition Dagster has never materialized, or saw fail last
    (unless only a run for some tickers failed over data that is otherwise stored)."""
    keys = [day.isoformat() for day in sessions]
    gaps: set[dt.date] = set()
    for asset_key in DAILY_ASSETS:
        status = instance.get_status_by_partition(asset_key, keys, trading_day_partitions) or {}
        missing = {day for day in sessions if status.get(day.isoformat()) is None}
        failed = [day for day in sessions if status.get(day.isoformat()) == dg.AssetPartitionStatus.FAILED]
        materialized = instance.get_materialized_partitions(asset_key) if failed else set()
        gaps |= missing | {day for day in failed
                           if not _failed_for_some_tickers(instance, asset_key, day.isoformat(), materialized)}
    return gaps


def _failed_for_some_tickers(instance: dg.DagsterInstance, asset_key: dg.AssetKey, key: str,
                             materialized: set[str]) -> bool:
    if key not in materialized:
        return False
    planned = instance.get_latest_planned_materialization_info(asset_key, key)
    return bool(planned and only_tickers_of(instance.get_run_by_id(planned.run_id)))


def sessions_missing_rows(instance: dg.DagsterInstance, database: PostgresResource,
                          sessions: list[dt.date]) -> set[dt.date]:
    """Sessions of loaded months that have no rows in market.prices."""
    if not sessions:
        return set()
    loaded_months = set(instance.get_materialized_partitions(MONTHLY))
    candidates = [day for day in sessions if day.replace(day=1).isoformat() in loaded_months]
    if not candidates:
        return set()
    with database.begin() as conn:
        present = set(conn.execute(
            text("SELECT DISTINCT trade_date FROM market.prices WHERE trade_date BETWEEN :first AND :last"),
            {"first": candidates[0], "last": candidates[-1]},
        ).scalars())
    return {day for day in candidates if day not in present}


@dataclass
class Coverage:
    """What queued or running runs of the daily job will fetch: whole days, or some tickers' days."""

    days: set[dt.date] = field(default_factory=set)
    ticker_days: dict[str, set[dt.date]] = field(default_factory=dict)

    def covers(self, symbol: str, day: dt.date) -> bool:
        return day in self.days or day in self.ticker_days.get(symbol, ())


def in_flight(instance: dg.DagsterInstance, job_name: str) -> Coverage:
    """Days (and tickers' days) covered by queued or running runs of `job_name`."""
    coverage = Coverage()
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)):
        days = _run_days(run.tags)
        symbols = only_tickers_of(run)
        if not symbols:
            coverage.days |= days
        for symbol in symbols:
            coverage.ticker_days.setdefault(symbol, set()).update(days)
    return coverage


def in_flight_days(instance: dg.DagsterInstance, job_name: str) -> set[dt.date]:
    """Days covered for every ticker by queued or running runs of `job_name`."""
    return in_flight(instance, job_name).days


def _run_days(tags: Mapping[str, str]) -> set[dt.date]:
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        start, end = dt.date.fromisoformat(tags[RANGE_START_TAG]), dt.date.fromisoformat(tags[RANGE_END_TAG])
        return {start + dt.timedelta(days=i) for i in range((end - start).days + 1)}
    if "dagster/partition" in tags:
        return {dt.date.fromisoformat(tags["dagster/partition"])}
    return set()


def contiguous_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Merge sessions into [first, last] ranges; only non-trading days may lie between members."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges:
            first, last = ranges[-1]
            between = [last + dt.timedelta(days=i) for i in range(1, (day - last).days)]
            if not any(is_trading_day(d) for d in between):
                ranges[-1] = (first, day)
                continue
        ranges.append((day, day))
    return ranges


# -- holes: one ticker missing on a stored day --------------------------------------------------


@dataclass(frozen=True)
class Hole:
    """`symbol` has no bar on `session` in `where` (the clean landing data, or market.prices)."""

    symbol: str
    session: dt.date
    where: str

    def __str__(self) -> str:
        return f"{self.symbol} {self.session}"


LANDING, WAREHOUSE = "cleaned_prices", "market.prices"


def ticker_holes(
    instance: dg.DagsterInstance, engine: Engine | None, store: LandingStore, symbols: Iterable[str],
    sessions: list[dt.date], skip_days: Iterable[dt.date] = (), member_sessions=None,
    may_be_unserved: Iterable[str] = (),
) -> list[Hole]:
    """Every (ticker, session) that should have a bar and has none, on materialized days.

    `sessions` is the window; `skip_days` (whole-day gaps) are left out. A day's landing file is
    read for its symbols only (a materialized day without its file misses every ticker). market.prices is asked about the months loaded after the day's clean
    data was (storage ids of the two materializations), so a month not yet reloaded after a gap
    fill does not show the filled bar as a hole again. Without `engine`, only the landing is read.

    Point-in-time S&P 500 members (TickerSelection): `member_sessions` cuts each symbol's owed
    sessions to its member days, and a symbol of `may_be_unserved` without a bar on any stored day
    of the window is one the source does not serve (delisted): not a hole, never refetched.
    """
    symbols = sorted(set(symbols))
    skip = set(skip_days)
    keys = [day.isoformat() for day in sessions if day not in skip]
    cleaned_at = instance.event_log_storage.get_latest_storage_id_by_partition(
        CLEANED, dg.DagsterEventType.ASSET_MATERIALIZATION, set(keys)) if keys else {}
    days = sorted(dt.date.fromisoformat(key) for key in cleaned_at)
    if not days or not symbols:
        return []
    owed = _owed(symbols, days, member_sessions)
    present = clean_symbols_by_day(store, days)
    unserved = set(may_be_unserved) - set().union(*present.values())
    symbols = [symbol for symbol in symbols if symbol not in unserved]
    # A day Dagster materialized whose file is gone lost every ticker: all of them are holes.
    holes = [Hole(symbol, day, LANDING) for day in days
             for symbol in symbols if day in owed[symbol] and symbol not in present.get(day, ())]
    if engine is None:
        return holes
    months = {day.replace(day=1).isoformat() for day in days}
    loaded_at = instance.event_log_storage.get_latest_storage_id_by_partition(
        MONTHLY, dg.DagsterEventType.ASSET_MATERIALIZATION, months)
    checked = [day for day in days if day in present
               and loaded_at.get(day.replace(day=1).isoformat(), 0) > cleaned_at[day.isoformat()]]
    pairs = [(symbol, day) for day in checked for symbol in symbols
             if day in owed[symbol] and symbol in present[day]]
    if pairs:
        with engine.connect() as conn:
            rows = conn.execute(text(load_query("ticker_holes")), {
                "symbols": [symbol for symbol, _ in pairs], "days": [day for _, day in pairs]}).all()
        holes += [Hole(symbol, day, WAREHOUSE) for symbol, day in rows]
    return sorted(holes, key=lambda hole: (hole.session, hole.symbol))


def selection_holes(
    instance: dg.DagsterInstance, engine: Engine | None, store: LandingStore, selection, sessions: list[dt.date],
    skip_days: Iterable[dt.date] = (),
) -> tuple[list[str], list[Hole]]:
    """The symbols `selection` (a TickerSelection) owes over `sessions`, and their holes: with
    point-in-time S&P 500 membership, the window's members on their member days, a member without a
    single stored bar being one the source does not serve (never a hole)."""
    symbols = selection.symbols_between(sessions[0], sessions[-1] + dt.timedelta(days=1)) if sessions else []
    return symbols, ticker_holes(instance, engine, store, symbols, sessions, skip_days,
                                 member_sessions=selection.member_sessions,
                                 may_be_unserved=selection.index_only(symbols))


def _owed(symbols: list[str], days: list[dt.date], member_sessions=None) -> dict[str, set[dt.date]]:
    first, end = days[0], days[-1] + dt.timedelta(days=1)
    owed = {symbol: expected_sessions(symbol, first, end) for symbol in symbols}
    if member_sessions is not None:
        owed = member_sessions(owed)
    return {symbol: set(sessions) for symbol, sessions in owed.items()}


def clean_symbols_by_day(store: LandingStore, days: list[dt.date]) -> dict[dt.date, set[str]]:
    """The symbols in each day's clean landing file (days without a file are left out)."""
    payloads = store.read_many(CLEANED.path, [day.isoformat() for day in days])
    return {dt.date.fromisoformat(key): _symbols(payload) for key, payload in payloads.items() if payload is not None}


def _symbols(payload: bytes) -> set[str]:
    source = pa.BufferReader(payload)
    if "symbol" not in pq.read_schema(source).names:
        return set()  # an empty day written without columns
    return set(pq.read_table(pa.BufferReader(payload), columns=["symbol"]).column("symbol").to_pylist())
