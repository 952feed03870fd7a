"""Cleaned prices: validated, de-duplicated, OHLC-consistent daily bars, with checks on the result."""

import datetime as dt
import functools
import io
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.automation import DAILY_FRESHNESS
from stock_assets.defs.metadata import (
    add_partition_metadata,
    asset_metadata,
    day_names,
    distinct_by_day,
    reasons_by_day,
    rows_by_day,
    share,
)
from stock_assets.defs.partitions import trading_day_partitions, trading_days, window_dates
from stock_assets.defs.prices import cleaning
from stock_assets.defs.prices.batches import CleanedBatch, CleanJob, as_frame, clean_batch
from stock_assets.defs.quotes.resources import empty_raw_frame
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import DATE_COLUMN, LAZY_INPUT, LandedDays, LandedRange, LandingIOManager
from stock_assets.landing.streaming import (
    Spool,
    day_codes,
    day_payloads,
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
REJECTED_SHARE_LIMIT = 0.01
# ... and at least this many rows: one bad bar in a 58-ticker universe is 1.7% of the day, which
# the rejections table and `tickers_complete` already report; three or more on one day is a pattern
# (a bad fetch, a rule gone wrong) worth its own warning. Identical re-fetches (reason `duplicate`)
# lose nothing and are not counted.
REJECTED_MIN_ROWS = 3
UNCOUNTED_REASONS = frozenset({"duplicate"})
# Rows (or symbols) a failing check lists in its metadata; the counts are always complete.
SAMPLE_SIZE = 20
# Every check result is a Dagster event, and each costs milliseconds (3-5 ms with PostgreSQL
# storage, measured): a run records *passing* results only for its newest 31 days (every day of a
# daily, gap-filling or one-month run); failing results are recorded for every day. A backfill of
# the whole history (1,766 days) then adds ~125 events instead of ~7,000.
RECORDED_PASSING_DAYS = 31


def _check_spec(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    # Partitioned checks are a preview in Dagster 1.13: silence exactly that warning, nothing else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                                category=dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset="cleaned_prices", blocking=blocking, description=description,
                                 partitions_def=trading_day_partitions)


# Evaluated per daily partition, so the UI shows each day's result (see `_partition_checks`).
CHECKS = [
    _check_spec("ohlc_consistent", "Every row has positive prices with low <= open, close <= high.", blocking=True),
    _check_spec("unique_symbol_date", "At most one row per (symbol, trade date).", blocking=True),
    _check_spec("rejected_share", f"Fails when a day's rejected rows are both more than {REJECTED_SHARE_LIMIT:.0%} "
                f"of its raw rows and at least {REJECTED_MIN_ROWS} (identical re-fetches not counted): one bad "
                "bar is reported by the rejections table and tickers_complete, several on one day are a "
                "pattern. The result lists the day's rejections by reason."),
    _check_spec("tickers_complete", "Every tracked ticker has a clean bar for every session of its own exchange "
                "(NYSE for US listings, London for OCDO.L, Tokyo for 4063.T, ...)."),
]


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
        # 1. The stored raw days, a month at a time, cut into ticker batches (a symbol's whole
        #    series stays in one batch: the day-over-day rules compare it with its previous bar).
        batch_of: dict[str, int] = {}
        size = tickers_per_batch(len(sessions))
        with stage("cleaned_prices: read raw"):
            for number, (days, table) in enumerate(raw_quotes.months()):
                if table is None:
                    continue
                run.add_raw(table, days)
                _spool_by_ticker(raw_pieces, number, table, batch_of, size)
                del table
        # 2. Clean one ticker batch at a time, many batches side by side in worker processes
        #    (stock_assets/landing/workers.py); rejections are written as each batch is judged.
        batches = raw_pieces.batches() if raw_pieces.pieces else []
        processes = processes_for(len(batches))
        with stage("cleaned_prices: clean"):
            jobs = (CleanJob(batch, str(raw_pieces.root), sorted(k for k in raw_pieces.pieces if k[0] == batch),
                             str(clean_pieces.root), chunks, history, moves,
                             database.portable() if processes > 1 else None)
                    for batch in batches)
            with worker_pool(processes) as pool:
                work = clean_batch if pool is not None else functools.partial(clean_batch, database=database)
                for cleaned in run_batches(pool, work, jobs):
                    run.add_cleaned(cleaned)
                    clean_pieces.pieces |= cleaned.pieces
        # A point-in-time index member with no raw bar in the whole run is one the source does not
        # serve (delisted; raw_quotes names it): reported, not expected by tickers_complete.
        not_served = sorted(tickers.index_only(tracked) - set(batch_of))
        expected = sorted(set(tracked) - set(not_served))
        # 3. The per-day files and the checks, a month (every ticker) at a time.
        empty = _empty_clean_schema()
        counted_by_day = run.counted_by_day
        with stage("cleaned_prices: land + checks"):
            for number, days in enumerate(chunks):
                table = clean_pieces.chunk(number)
                landing_io_manager.write_days(context.asset_key.path, day_payloads(table, days, empty))
                clean = as_frame(table) if table is not None else _empty_clean_frame()
                del table
                run.add_clean(clean, days)
                outcomes += evaluate_checks(clean, run.raw_by_day, counted_by_day, expected, days, any_session,
                                            sessions_by_symbol=own_sessions,
                                            closed_note="NYSE closed" if us_only else "no tracked listing's exchange open",
                                            rejected_reasons=run.reasons_by_day).outcomes
                del clean
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
    yield from _partition_checks(context, evaluation)


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

    def add_raw(self, table, days: list[str]) -> None:
        self.raw_rows += table.num_rows
        codes, names = day_codes(table)
        found = dict(zip(names, np.bincount(codes[codes >= 0], minlength=len(names)).tolist()))
        for day in days:
            self.raw_by_day[day] += found.get(day, 0)

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

    def add_clean(self, clean: pd.DataFrame, days: list[str]) -> None:
        self.clean_rows += len(clean)
        self.clean_by_day.update(rows_by_day(clean, days))
        self.symbols_by_day.update(distinct_by_day(clean, days, "symbol"))


def _spool_by_ticker(pieces: Spool, chunk: int, table, batch_of: dict[str, int], size: int) -> None:
    """One month of raw rows into the spool, cut by ticker batch (symbols numbered as first seen,
    `size` to a batch; spelling differences Yahoo never makes, like case, stay together)."""
    names = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(table.column("symbol"), pa.string())))
    names = pc.fill_null(names, "")
    codes, uniques = pd.factorize(np.asarray(names.to_numpy(zero_copy_only=False), dtype=object))
    for name in uniques:
        batch_of.setdefault(name, len(batch_of) // size)
    batches = np.array([batch_of[name] for name in uniques], dtype=np.int64)[codes]
    order = np.argsort(batches, kind="stable")
    table, batches = table.take(order), batches[order]
    for batch in np.unique(batches):
        first, last = np.searchsorted(batches, [batch, batch + 1])
        pieces.put(int(batch), chunk, table.slice(first, last - first))


@functools.cache
def _empty_clean_schema() -> pa.Schema:
    """The columns of a cleaned day without rows (what cleaning makes of no rows)."""
    return to_table(cleaning.clean_quotes(empty_raw_frame()).clean).schema


def _empty_clean_frame() -> pd.DataFrame:
    return _empty_clean_schema().empty_table().to_pandas()


@dataclass(frozen=True)
class Outcome:
    """One check on one daily partition."""

    check: str
    partition: str
    passed: bool
    metadata: Mapping[str, Any]
    description: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """Every check on every checked partition of a run."""

    partitions: Sequence[str]
    outcomes: Sequence[Outcome] = field(default_factory=list)

    def recorded(self) -> list[Outcome]:
        """What the run records as check evaluations: every failure, passes on the newest days."""
        newest = set(sorted(self.partitions)[-RECORDED_PASSING_DAYS:])
        return [outcome for outcome in self.outcomes if not outcome.passed or outcome.partition in newest]

    def failed(self, check: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.check == check and not outcome.passed]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per check: partitions checked, how many failed (the first ones named), how many recorded."""
        recorded = self.recorded()
        return {
            spec.name: {
                "partitions_checked": len(self.partitions),
                "failed": len(self.failed(spec.name)),
                "failed_partitions": [o.partition for o in self.failed(spec.name)][:SAMPLE_SIZE],
                "results_recorded": sum(o.check == spec.name for o in recorded),
            }
            for spec in CHECKS
        }


def evaluate_checks(
    clean: pd.DataFrame, raw_by_day: Mapping[str, int], rejected_by_day: Mapping[str, int],
    symbols: Sequence[str], partitions: Sequence[str], sessions: Set[str],
    sessions_by_symbol: Mapping[str, Set[str]] | None = None, closed_note: str = "NYSE closed",
    rejected_reasons: Mapping[str, Mapping[str, int]] | None = None,
) -> Evaluation:
    """Every check on every partition in `partitions` (ISO days), computed over the run at once.

    `sessions` are the days among them on which some tracked listing trades: a day that is not one
    expects no bars, so it passes unless rows turn up anyway (and are checked like any others).
    `sessions_by_symbol` are each listing's own sessions (its exchange's calendar): a listing is
    expected to have a bar on those days only. Without it every listing is expected on `sessions`.
    `rejected_by_day` counts the rejections `rejected_share` judges; `rejected_reasons` (per day,
    per reason) is shown."""
    days = _day_keys(clean)
    bad_ohlc = (
        (clean[["open", "high", "low", "close", "adj_close"]] <= 0).any(axis=1)
        | (clean["low"] > clean[["open", "close"]].min(axis=1))
        | (clean["high"] < clean[["open", "close"]].max(axis=1))
    )
    # Only the days with something wrong get a frame of their own (a backfill has ~1,800 days).
    bad_by_day = dict(iter(clean[bad_ohlc].groupby(days[bad_ohlc])))
    duplicated = clean.duplicated(["symbol", "trade_date"])
    dupes_by_day = dict(iter(clean[duplicated].groupby(days[duplicated])))
    tracked = sorted(set(symbols))
    own = {symbol: sessions for symbol in tracked}
    own.update({symbol: days for symbol, days in (sessions_by_symbol or {}).items() if symbol in own})
    # Listings of one calendar share a set of sessions: test each set once per day.
    by_calendar: dict[int, tuple[Set[str], list[str]]] = {}
    for symbol in tracked:
        by_calendar.setdefault(id(own[symbol]), (own[symbol], []))[1].append(symbol)
    is_tracked = clean["symbol"].isin(tracked)
    tracked_by_day = clean["symbol"][is_tracked].groupby(days[is_tracked]).nunique().to_dict()
    none = clean.iloc[:0]

    outcomes = []
    for day in partitions:
        closed = None if day in sessions else f"{day}: {closed_note}, no bars expected"
        bad = bad_by_day.get(day, none)
        violations = len(bad)
        metadata: dict[str, Any] = {"violations": violations}
        if violations:
            metadata["violation_sample"] = dg.MetadataValue.json([
                f"{r.symbol} o={r.open} h={r.high} l={r.low} c={r.close} adj={r.adj_close}"
                for r in bad.head(SAMPLE_SIZE).itertuples(index=False)])
        outcomes.append(Outcome(
            "ohlc_consistent", day, not violations, metadata,
            f"{day}: {violations} row(s) with a non-positive price or outside low <= open, close <= high "
            f"({_names(bad['symbol'])})" if violations else closed))

        dupes = dupes_by_day.get(day, none)
        duplicates = len(dupes)
        metadata = {"duplicates": duplicates}
        if duplicates:
            metadata["duplicate_symbols"] = dg.MetadataValue.json(sorted(set(dupes["symbol"]))[:SAMPLE_SIZE])
        outcomes.append(Outcome(
            "unique_symbol_date", day, not duplicates, metadata,
            f"{day}: {duplicates} extra row(s) for the same symbol ({_names(dupes['symbol'])})"
            if duplicates else closed))

        raw, rejected = raw_by_day.get(day, 0), rejected_by_day.get(day, 0)
        rejected_share = share(rejected, raw)
        passed = rejected_share <= REJECTED_SHARE_LIMIT or rejected < REJECTED_MIN_ROWS
        by_reason = dict((rejected_reasons or {}).get(day, {}))
        metadata = {"rejected_share": rejected_share, "rejected_rows": rejected, "raw_rows": raw,
                    "limit": REJECTED_SHARE_LIMIT, "min_rows": REJECTED_MIN_ROWS}
        if by_reason:
            metadata["rejected_by_reason"] = dg.MetadataValue.json(by_reason)
        reasons_text = ", ".join(f"{why} {count}" for why, count in sorted(by_reason.items()))
        outcomes.append(Outcome(
            "rejected_share", day, passed, metadata,
            closed if passed else f"{day}: {rejected} of {raw} raw rows rejected "
                                  f"({rejected_share:.1%}; fails above {REJECTED_SHARE_LIMIT:.0%} and at least "
                                  f"{REJECTED_MIN_ROWS} rows)" + (f": {reasons_text}" if reasons_text else "")))

        missing = []
        expected = [symbol for days, members in by_calendar.values() if day in days for symbol in members]
        if closed is None and tracked_by_day.get(day, 0) < len(tracked):
            present = set(clean["symbol"][days == day])
            missing = [symbol for symbol in expected if symbol not in present]
        metadata = {"missing_bars": len(missing), "expected_listings": len(expected)}
        if missing:
            metadata["missing_sample"] = dg.MetadataValue.json([f"{s} {day}" for s in missing[:SAMPLE_SIZE]])
        outcomes.append(Outcome(
            "tickers_complete", day, not missing, metadata,
            closed if not missing else f"{day}: {len(missing)} of {len(expected)} tracked tickers have no "
                                       f"clean bar ({_names(missing)})"))
    return Evaluation(partitions=list(partitions), outcomes=outcomes)


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


def _day_keys(frame: pd.DataFrame) -> pd.Series:
    """Each row's daily partition key (ISO date)."""
    if not len(frame):
        return pd.Series([], index=frame.index, dtype="object")
    return day_names(frame["trade_date"])


def _names(symbols, limit: int = 5) -> str:
    names = sorted(set(symbols))
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _partition_checks(
    context: dg.AssetExecutionContext, evaluation: Evaluation
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """The check outputs, one AssetCheckEvaluation per recorded check and day, then the verdict.

    Dagster 1.13 fills in an AssetCheckResult's partition only in single-partition runs, so the
    evaluations are built here, each with its partition and the materialization of that partition
    it checked (which makes it the partition's current result in the UI). Dagster fails the step
    on a failed blocking evaluation without naming the partition; the Failure raised here names
    the days, so the run's error (and the failure sensor) says which days were stopped.
    """
    specs = {spec.name: spec for spec in CHECKS}
    selected = [name for name in specs if dg.AssetCheckKey(context.asset_key, name) in
                context.selected_asset_check_keys]
    for name in selected:
        key = dg.AssetCheckKey(context.asset_key, name)
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    recorded = [outcome for outcome in evaluation.recorded() if outcome.check in selected]
    targets = _materializations(context, sorted({outcome.partition for outcome in recorded}))
    for outcome in recorded:
        spec = specs[outcome.check]
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name=outcome.check,
            passed=outcome.passed,
            metadata=dict(outcome.metadata),
            target_materialization_data=targets.get(outcome.partition),
            severity=dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN,
            description=outcome.description,
            blocking=spec.blocking,
            partition=outcome.partition,
        )
    blocked = {name: evaluation.failed(name) for name in selected if specs[name].blocking}
    blocked = {name: failures for name, failures in blocked.items() if failures}
    if blocked:
        days = sorted({failure.partition for failures in blocked.values() for failure in failures})
        raise dg.Failure(
            description=(
                f"Blocking check(s) failed on {len(days)} partition(s) of cleaned_prices, "
                f"{', '.join(days[:10])}{' ...' if len(days) > 10 else ''}: "
                + "; ".join(f"{name} on {' / '.join(str(f.description) for f in failures[:3])}"
                            f"{' ...' if len(failures) > 3 else ''}" for name, failures in blocked.items())
            ),
            metadata={
                "failed_partitions": dg.MetadataValue.json(days),
                **{f"{name}_failed_partitions": len(failures) for name, failures in blocked.items()},
            },
        )


def _materializations(context: dg.AssetExecutionContext, partitions: Sequence[str]) -> dict[str, Any]:
    """This run's materialization of each partition (what its check results point at), in one query."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    if not partitions:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=list(partitions)),
        limit=len(partitions),
    ).records
    targets: dict[str, Any] = {}
    for record in records:  # newest first
        if record.run_id == context.run.run_id and record.partition_key not in targets:
            targets[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
    return targets


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
