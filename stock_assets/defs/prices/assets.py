"""Cleaned prices: validated, de-duplicated, OHLC-consistent daily bars, with checks on the result."""

import datetime as dt
import functools
import io
from collections import Counter
from collections.abc import Iterator, Sequence

import dagster as dg
import pandas as pd
import pyarrow as pa
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.automation import DAILY_FRESHNESS
from stock_assets.defs.metadata import (
    add_partition_metadata,
    asset_metadata,
    reasons_by_day,
    rows_by_day,
    share,
)
from stock_assets.defs.partitions import trading_day_partitions, trading_days, window_dates
from stock_assets.defs.prices import cleaning
from stock_assets.defs.prices.batches import (
    CheckChunk,
    CheckedChunk,
    CleanedBatch,
    CleanJob,
    RawBatching,
    RawMonthJob,
    clean_batch,
    land_and_check_chunk,
    spool_raw_month,
)
from stock_assets.defs.prices.checks import (  # noqa: F401 - the checks' limits are part of this asset's story
    CHECKS,
    RECORDED_PASSING_DAYS,
    REJECTED_MIN_ROWS,
    REJECTED_SHARE_LIMIT,
    SAMPLE_SIZE,
    UNCOUNTED_REASONS,
    Evaluation,
    Outcome,
    evaluate_checks,
    partition_checks,
)
from stock_assets.defs.quotes.resources import empty_raw_frame
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import (
    DATE_COLUMN,
    LAZY_INPUT,
    LandChunk,
    LandedDays,
    LandedRange,
    LandingIOManager,
)
from stock_assets.landing.streaming import (
    month_chunks,
    spool,
    stage,
    tickers_per_batch,
    to_table,
)
from stock_assets.landing.workers import processes_for, run_batches, worker_pool
from stock_assets.markets import exchange_of, sessions_by_symbol

# Calendar days before a run whose raw bars the day-over-day rules compare the run's first day
# with: a long weekend plus a holiday, and a ticker missing a day or two, stay covered.
HISTORY_DAYS = 10
@dg.asset(
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="landing_io_manager",
    # The raw days arrive as a handle, read a month at a time (never the whole range at once).
    ins={"raw_quotes": dg.AssetIn(metadata={LAZY_INPUT: True})},
    check_specs=CHECKS,
    freshness_policy=DAILY_FRESHNESS,
    group_name="prices",
    kinds={"pandas", "parquet", "postgres"},
    owners=["team:market-data"],
    code_version="1",
    metadata={**asset_metadata("cleaned_prices"), "rejections_table": "market.price_rejections"},
)
def cleaned_prices(
    context: dg.AssetExecutionContext,
    raw_quotes: LandedRange,
    database: PostgresResource,
    tickers: TickerSelection,
    landing_io_manager: dg.ResourceParam[LandingIOManager],
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """Daily bars that passed validation: finite, positive, OHLC-consistent, one row per symbol and day.

    Prices are rounded to 6 decimals (removing Yahoo's float32 noise), dividends and split ratios
    ride along for split/dividend-aware consumers. Rejected rows (missing or non-finite values,
    non-positive or implausible prices, zero-volume bad bars, OHLC violations, conflicting
    duplicates, moves like an unreported split, x10+ jumps) are written with their reason and a
    detail naming what was wrong to `market.price_rejections`, replaced for the partition range
    on every run. A run's first day is compared with the raw bars of the days before it, read
    from the landing zone; a move an operator confirmed in `market.confirmed_moves` is kept (see
    stock_assets/defs/prices/cleaning.py for every rule).

    A range is cleaned a batch of tickers at a time (each symbol's whole series in one batch, so
    the day-over-day rules see every previous bar) and its day files are written a month at a
    time: memory follows the batch, not the range or the universe (stock_assets/landing/streaming.py).

    The checks are evaluated for each day of the run, each day with its own result (a weekend or
    holiday passes: nothing to check); a day that fails a blocking check fails the run, naming it.
    """
    start, end = window_dates(context.partition_time_window)
    keys = list(context.partition_keys)
    sessions = trading_days(start, end)
    session_keys = {day.isoformat() for day in sessions}
    tracked = tickers.symbols_between(start, end)
    # Each listing is expected on its own exchange's sessions only (defs/universe/listings.py), a
    # point-in-time S&P 500 member on its member days only.
    own_sessions = _session_keys_by_symbol(tracked, start, end, tickers.member_sessions)
    calendars = {id(days): days for days in own_sessions.values()}  # one set per calendar
    listings_per_calendar = Counter(id(days) for days in own_sessions.values())
    any_session = set().union(*calendars.values())
    us_only = all(exchange_of(symbol).calendar == "XNYS" for symbol in tracked)
    history = previous_raw_quotes(landing_io_manager, start)
    moves = confirmed_moves(database, start, end)
    _delete_rejections(database, start, end)

    run = _RunTotals(keys)
    chunks = month_chunks(keys)
    outcomes: list[Outcome] = []
    with spool("cleaned_prices-raw") as raw_pieces, spool("cleaned_prices-clean") as clean_pieces:
        # One pool for the three stages below (stock_assets/landing/workers.py); None: work here.
        size = tickers_per_batch(len(sessions))
        batching = RawBatching.of(tracked, size)
        processes = processes_for(batching.batches)
        seen: set[str] = set()  # the symbols the raw days hold
        with worker_pool(processes) as pool:
            # 1. The stored raw days, a month at a time, cut into ticker batches (a symbol's whole
            #    series stays in one batch: the day-over-day rules compare it with its previous bar).
            with stage("cleaned_prices: read raw"):
                months = (RawMonthJob(number, raw_quotes.stored(days), raw_quotes.asset_path, str(raw_pieces.root),
                                      batching, landing_io_manager.portable() if pool is not None else None)
                          for number, days in enumerate(raw_quotes.month_chunks()))
                here = functools.partial(spool_raw_month, store=raw_quotes.store)
                for month in run_batches(pool, spool_raw_month, months, here=here):
                    run.add_raw(month.rows, month.rows_by_day)
                    seen |= month.names
                    raw_pieces.pieces |= month.pieces
            # 2. Clean one ticker batch at a time, many batches side by side; rejections are
            #    written as each batch is judged.
            batches = raw_pieces.batches() if raw_pieces.pieces else []
            with stage("cleaned_prices: clean"):
                jobs = (CleanJob(batch, str(raw_pieces.root), raw_pieces.of_batch(batch), str(clean_pieces.root),
                                 chunks, history, moves, database.portable() if pool is not None else None)
                        for batch in batches)
                here = functools.partial(clean_batch, database=database)
                for cleaned in run_batches(pool, clean_batch, jobs, here=here):
                    run.add_cleaned(cleaned)
                    clean_pieces.pieces |= cleaned.pieces
            # A point-in-time index member with no raw bar in the whole run is one the source does
            # not serve (delisted; raw_quotes names it): reported, not expected by tickers_complete.
            not_served = sorted(tickers.index_only(tracked) - seen)
            expected = sorted(set(tracked) - set(not_served))
            # 3. The per-day files and the checks, a month (every ticker) at a time.
            empty = _empty_clean_schema()
            where = landing_io_manager.portable() if pool is not None else None
            closed_note = "NYSE closed" if us_only else "no tracked listing's exchange open"
            with stage("cleaned_prices: land + checks"):
                checks = (CheckChunk(
                    LandChunk(number, days, str(clean_pieces.root), clean_pieces.of_chunk(number), empty,
                              context.asset_key.path, where),
                    raw_by_day={day: run.raw_by_day[day] for day in days},
                    counted_by_day={day: run.counted_by_day[day] for day in days},
                    reasons_by_day={day: run.reasons_by_day[day] for day in days},
                    expected=expected, any_session=any_session, own_sessions=own_sessions, closed_note=closed_note,
                ) for number, days in enumerate(chunks))
                here = functools.partial(land_and_check_chunk, landing=landing_io_manager)
                for checked in run_batches(pool, land_and_check_chunk, checks, here=here):
                    run.add_clean(checked)
                    outcomes += checked.outcomes
    context.log.info("cleaned_prices: %d raw rows in %d ticker batch(es) of up to %d by %d process(es), "
                     "%d clean, %d rejected", run.raw_rows, len(batches), size, processes, run.clean_rows,
                     run.rejected_rows)
    evaluation = Evaluation(partitions=keys, outcomes=outcomes)

    # Each day's own numbers on its own partition (a range run would otherwise show the run's
    # totals on every day); the run's totals under `*_in_run` names (see stock_assets/defs/metadata.py).
    add_partition_metadata(context, {
        key: {
            "dagster/row_count": run.clean_by_day[key],
            "raw_rows": run.raw_by_day[key],
            "rejected_rows": run.rejected_by_day[key],
            "rejected_share": share(run.rejected_by_day[key], run.raw_by_day[key]),
            "rejected_by_reason": dg.MetadataValue.json(run.reasons_by_day[key]),
            "symbols": run.symbols_by_day[key],
            "nyse_session": key in session_keys,  # False: weekend or holiday, zero rows expected
            # Tracked listings whose exchange has a session that day (each is expected to have a bar).
            "listings_in_session": sum(count for calendar, count in listings_per_calendar.items()
                                       if key in calendars[calendar]),
        }
        for key in keys
    })
    yield dg.Output(
        LandedDays(files=len(keys), rows=run.clean_rows),
        metadata={
            "partitions_in_run": len(keys),
            "rows_in_run": run.clean_rows,
            "raw_rows_in_run": run.raw_rows,
            "rejected_rows_in_run": run.rejected_rows,
            "rejected_share_in_run": share(run.rejected_rows, run.raw_rows),
            "rejected_by_reason_in_run": dg.MetadataValue.json(dict(sorted(run.reasons.items()))),
            "symbols_in_run": run.symbols,
            "checks_in_run": dg.MetadataValue.json(evaluation.summary()),
            "listings_described_in_run": run.listings,
            "ticker_batches": len(batches),
            "clean_processes": processes,
            "index_members_not_served": len(not_served),
            "index_members_not_served_sample": dg.MetadataValue.json(not_served[:SAMPLE_SIZE]),
        },
    )
    # After the Output, so that each result points at the materialization of its day it checked.
    yield from partition_checks(context, evaluation)


class _RunTotals:
    """A run's numbers, per day and in total, added up batch by batch and month by month."""

    def __init__(self, keys: list[str]):
        self.keys = keys
        self.raw_by_day = dict.fromkeys(keys, 0)
        self.clean_by_day = dict.fromkeys(keys, 0)
        self.symbols_by_day = dict.fromkeys(keys, 0)
        self.rejected_by_day = dict.fromkeys(keys, 0)
        self.counted_by_day = dict.fromkeys(keys, 0)
        self.reasons_by_day: dict[str, dict[str, int]] = {key: {} for key in keys}
        self.reasons: Counter = Counter()
        self.raw_rows = self.clean_rows = self.rejected_rows = self.symbols = self.listings = 0

    def add_raw(self, rows: int, rows_by_day: dict[str, int]) -> None:
        self.raw_rows += rows
        for day, count in rows_by_day.items():
            if day in self.raw_by_day:
                self.raw_by_day[day] += count

    def add_cleaned(self, cleaned: CleanedBatch) -> None:
        rejected = cleaned.rejected
        self.rejected_rows += len(rejected)
        self.symbols += cleaned.symbols
        self.listings += cleaned.listings
        self.reasons.update(cleaned.rejected_by_reason)
        counted = rejected[~rejected["reason"].isin(UNCOUNTED_REASONS)]
        for key, count in rows_by_day(rejected, self.keys).items():
            self.rejected_by_day[key] += count
        for key, count in rows_by_day(counted, self.keys).items():
            self.counted_by_day[key] += count
        for key, reasons in reasons_by_day(rejected, self.keys).items():
            for reason, count in reasons.items():
                self.reasons_by_day[key][reason] = self.reasons_by_day[key].get(reason, 0) + count

    def add_clean(self, checked: CheckedChunk) -> None:
        self.clean_rows += checked.rows
        self.clean_by_day.update(checked.clean_by_day)
        self.symbols_by_day.update(checked.symbols_by_day)


@functools.cache
def _empty_clean_schema() -> pa.Schema:
    """The columns of a cleaned day without rows (what cleaning makes of no rows)."""
    return to_table(cleaning.clean_quotes(empty_raw_frame()).clean).schema


def _session_keys_by_symbol(symbols: Sequence[str], start, end, restrict=None) -> dict[str, frozenset[str]]:
    """Each listing's own sessions in [start, end) as ISO days; listings of one calendar share one set.
    `restrict` cuts a symbol's sessions (TickerSelection.member_sessions: a member's member days)."""
    shared: dict[int, frozenset[str]] = {}
    result = {}
    sessions = sessions_by_symbol(list(symbols), start, end)
    for symbol, days in (restrict(sessions) if restrict else sessions).items():
        if id(days) not in shared:
            shared[id(days)] = frozenset(day.isoformat() for day in days)
        result[symbol] = shared[id(days)]
    return result


def confirmed_moves(database: PostgresResource, start: dt.date, end: dt.date) -> list[tuple[str, dt.date]]:
    """The (symbol, day) moves an operator confirmed in market.confirmed_moves, for the run's days
    and the HISTORY_DAYS before them (its previous bars)."""
    first = start - dt.timedelta(days=HISTORY_DAYS)
    with database.begin() as conn:
        rows = conn.execute(text("SELECT symbol, trade_date FROM market.confirmed_moves"
                                 " WHERE trade_date >= :first AND trade_date < :end"), {"first": first, "end": end})
        return [(symbol, day) for symbol, day in rows]


def previous_raw_quotes(landing: LandingIOManager, start: dt.date) -> pd.DataFrame | None:
    """The stored raw bars of the HISTORY_DAYS days before `start` (what Yahoo said then, with
    when it was fetched); None when none of them was ever materialized (the history's start)."""
    keys = [(start - dt.timedelta(days=back)).isoformat() for back in range(HISTORY_DAYS, 0, -1)]
    payloads = [p for p in landing.store().read_many(["raw_quotes"], keys).values() if p is not None]
    # Day by day through pandas: files written by earlier versions may differ in schema (a column
    # added since, a timestamp unit), which one Arrow concatenation refuses.
    frames = [frame for frame in (pd.read_parquet(io.BytesIO(p)) for p in payloads) if len(frame)]
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    if DATE_COLUMN not in frame:
        return None
    frame[DATE_COLUMN] = pd.to_datetime(frame[DATE_COLUMN]).dt.date
    return frame


def _delete_rejections(database: PostgresResource, start, end) -> None:
    """A run replaces the rejections of its range: the old ones go first, each batch adds its own."""
    with database.begin() as conn:
        conn.execute(
            text("DELETE FROM market.price_rejections WHERE trade_date >= :start AND trade_date < :end"),
            {"start": start, "end": end},
        )
