"""Raw quotes: what Yahoo said, per trading day, kept so cleaning can be re-run without refetching."""

import functools

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from stock_assets import settings
from stock_assets.defs.metadata import asset_metadata
from stock_assets.defs.partitions import trading_day_partitions, window_dates
from stock_assets.defs.quotes.batches import FETCH_BATCH_TICKERS, DayFigures, FetchJob, fetch_batch, own_bars
from stock_assets.defs.quotes.resources import FetchReport, QuoteClient, QuoteSourceUnavailable, empty_raw_frame
from stock_assets.defs.universe.constituents import resolve_tickers, validate_listing
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import REPLACES_SYMBOLS, LandChunk, LandedDays, LandingIOManager, land_chunk
from stock_assets.landing.streaming import month_chunks, spool, stage, ticker_batches, to_table
from stock_assets.landing.workers import processes_for, run_batches, worker_pool
from stock_assets.markets import sessions_by_symbol
from stock_assets.yahoo.breaker import CircuitOpenError


class RawQuotesConfig(dg.Config):
    """Run configuration of raw_quotes (set by the new-ticker and restatement sensors)."""

    only_tickers: list[str] = Field(
        default_factory=list,
        description="Fetch only these tracked symbols and merge them into the stored days; empty = all tracked.",
    )

    refresh_cache: bool = Field(
        default=False,
        description="Ask Yahoo again instead of answering from the response cache, and keep the fresh "
        "answers (set by the restatement sensor: after a split or dividend, cached history is stale).",
    )

    @field_validator("only_tickers")
    @classmethod
    def _well_formed(cls, value: list[str]) -> list[str]:
        return [validate_listing(symbol) for symbol in value]


@dg.asset(
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="landing_io_manager",
    # Every step that asks Yahoo claims a slot of this instance-wide pool, so concurrent runs queue
    # for Yahoo instead of competing; the shared rate limit (QuoteClient) paces what one step sends.
    pool=settings.YAHOO_POOL,
    group_name="ingestion",
    kinds={"yahoo", "pandas", "parquet"},
    owners=["team:market-data"],
    code_version="1",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
    metadata=asset_metadata("raw_quotes"),
)
def raw_quotes(
    context: dg.AssetExecutionContext, config: RawQuotesConfig, quotes: QuoteClient, tickers: TickerSelection,
    landing_io_manager: dg.ResourceParam[LandingIOManager],
) -> dg.Output:
    """Daily OHLCV bars as Yahoo reports them, with dividends and stock splits, one file per trading day.

    A run covering a range of partitions (a backfill) fetches each ticker's whole range in one
    request, a batch of tickers at a time: each batch is spooled to local disk before the next is
    fetched, and the day files are written a month at a time, so memory follows the batch
    (`STOCK_ASSETS_BATCH_ROWS`), not the range or the universe. Each listing is asked for the sessions of its own exchange (NYSE, London, Tokyo, ...,
    stock_assets/markets.py); a day on which no tracked listing trades is stored as an empty day
    without asking Yahoo. Trade dates are the exchange's local dates, and each row carries what
    Yahoo said about the listing (currency, exchange, time zone, instrument type). A ticker that fails is
    reported in the metadata and does not block the others; the run fails only if every ticker fails,
    or at once (naming the cause) when the circuit breaker suspends requests to Yahoo. The metadata
    says what went over the wire: requests, cache hits, retries, 429s, breaker state, latency.
    A run configured with `only_tickers` fetches those symbols and replaces only their rows in the
    stored days (a new ticker's history, a restatement). Splits and dividends in the answer are
    listed as `corporate_actions`, which the restatement sensor watches.
    """
    start, end = window_dates(context.partition_time_window)
    requested = (resolve_tickers(config.only_tickers, default=[]) if config.only_tickers
                 else tickers.symbols_between(start, end))
    # Each listing trades on its own exchange's sessions (NYSE for AAPL, London for OCDO.L): a day
    # that is a holiday in London but a session in New York asks Yahoo for AAPL only. A ticker
    # fetched as a point-in-time S&P 500 member is asked for its member days only.
    own_sessions = tickers.member_sessions(sessions_by_symbol(requested, start, end))
    symbols = [symbol for symbol in requested if own_sessions[symbol]]
    sessions = sorted({day for symbol in symbols for day in own_sessions[symbol]})
    if not sessions:
        context.log.info("No session of any tracked listing's exchange in %s..%s: market closed, nothing to fetch",
                         start, end)
        DayFigures(context.partition_keys).record(context, sessions)
        return dg.Output(empty_raw_frame(), metadata={"rows_in_run": 0, "market_closed": True})

    unserved_ok = tickers.index_only(symbols)
    if config.only_tickers:
        return _fetch_and_merge(context, config, quotes, symbols, sessions, own_sessions, unserved_ok)
    return _fetch_in_batches(context, config, quotes, symbols, sessions, own_sessions, landing_io_manager,
                             unserved_ok)


def _fetch(quotes: QuoteClient, symbols, sessions, log, refresh_cache: bool, report: FetchReport | None = None):
    try:
        return quotes.fetch(symbols, sessions[0], sessions[-1] + pd.Timedelta(days=1), log=log,
                            refresh_cache=refresh_cache, report=report)
    except CircuitOpenError as err:
        raise _suspended(err, getattr(err, "report", None)) from err


def _suspended(err: CircuitOpenError, report: FetchReport | None) -> dg.Failure:
    # The breaker already is the retry governance: re-running the step before its cool-down
    # would only fail fast again, so Dagster's retry policy is bypassed.
    return dg.Failure(
        description=f"Quote fetch stopped, Yahoo requests are suspended: {err}",
        metadata=report.metadata() if report else None,
        allow_retries=False,
    )


def _all_failed(quotes: QuoteClient, report: FetchReport, symbols, sessions, unserved_ok=frozenset()) -> None:
    """Every ticker failing means the source is down, unless each is a point-in-time index member
    the source does not serve (`unserved_ok`: delisted past members are reported, not errors)."""
    if len(report.failures) == len(symbols) and not set(report.failures) <= set(report.not_served) & set(unserved_ok):
        raise QuoteSourceUnavailable(
            f"Every ticker failed for {sessions[0]}..{sessions[-1]} (source {quotes.source!r}); "
            f"first error: {next(iter(report.failures.values()))}"
        )


def _run_metadata(context, config, quotes: QuoteClient, report: FetchReport, sessions, rows: int,
                  dividends: int, splits: int) -> dict[str, object]:
    # The fetch figures describe the run's fetch; the rows per day are on each partition.
    return {
        "partitions_in_run": len(context.partition_keys),
        "rows_in_run": rows,
        "quote_source": quotes.source,
        "trading_days": len(sessions),
        **report.metadata(),
        "rate_limit_per_s": quotes.effective_rate,
        "dividend_events": dividends,
        "split_events": splits,
        "only_tickers": dg.MetadataValue.json(list(config.only_tickers)),
        "refresh_cache": config.refresh_cache,
    }


def _fetch_and_merge(context, config, quotes: QuoteClient, symbols, sessions, own_sessions,
                     unserved_ok=frozenset()) -> dg.Output:
    """A few symbols (a new ticker, a restatement): fetched at once, merged into the stored days by
    the IO manager, which replaces only their rows."""
    frame, report = _fetch(quotes, symbols, sessions, context.log, config.refresh_cache)
    _all_failed(quotes, report, symbols, sessions, unserved_ok)
    frame = own_bars(frame, symbols, own_sessions)
    # Only what was fetched replaces what is stored: a ticker that failed keeps its old rows.
    frame.attrs[REPLACES_SYMBOLS] = [symbol for symbol in symbols if symbol not in report.failures]
    figures = DayFigures(context.partition_keys)
    figures.add(frame)
    figures.record(context, sessions)
    return dg.Output(frame, metadata=_run_metadata(
        context, config, quotes, report, sessions, len(frame),
        int((frame["dividends"] > 0).sum()), int((frame["stock_splits"] > 0).sum())))


def _fetch_in_batches(context, config, quotes: QuoteClient, symbols, sessions, own_sessions,
                      landing: LandingIOManager, unserved_ok=frozenset()) -> dg.Output:
    """Every tracked symbol, a batch of tickers at a time (stock_assets/landing/streaming.py): each
    batch is fetched (one request per ticker for the whole range), spooled to local disk and
    dropped; the per-day files are then written a month at a time. Many batches are fetched by
    worker processes side by side (stock_assets/landing/workers.py). Nothing is landed unless the
    fetch as a whole succeeded (not every ticker failed, the breaker stayed closed)."""
    keys = list(context.partition_keys)
    chunks = month_chunks(keys)
    batches = ticker_batches(symbols, len(sessions), most=FETCH_BATCH_TICKERS)
    portable = quotes.portable()
    # One pool for the step: the batches are fetched in it (unless the client was handed a session
    # that cannot move to another process) and the month chunks landed.
    processes = processes_for(len(batches))
    fetchers = processes if portable is not None else 1
    report = FetchReport()
    figures = DayFigures(keys)
    dividends = splits = 0
    end = sessions[-1] + pd.Timedelta(days=1)
    with spool("raw_quotes") as pieces, worker_pool(processes) as pool, stage("raw_quotes: fetch"):
        jobs = (FetchJob(number, batch, sessions[0], end, {symbol: own_sessions[symbol] for symbol in batch}, keys,
                         chunks, str(pieces.root), config.refresh_cache, portable if fetchers > 1 else None)
                for number, batch in enumerate(batches))
        try:
            here = functools.partial(fetch_batch, quotes=quotes)
            for fetched in run_batches(pool if fetchers > 1 else None, fetch_batch, jobs, here=here):
                for failure in fetched.report.failures.values():
                    context.log.warning(failure)
                report.absorb(fetched.report)
                figures.absorb(fetched.figures)
                dividends += fetched.dividends
                splits += fetched.splits
                pieces.pieces |= fetched.pieces
        except CircuitOpenError as err:
            report.absorb(getattr(err, "report", None) or FetchReport())
            raise _suspended(err, report) from err
        _all_failed(quotes, report, symbols, sessions, unserved_ok)
        empty = to_table(empty_raw_frame()).schema
        with stage("raw_quotes: land"):
            where = landing.portable() if pool is not None else None
            lands = (LandChunk(number, days, str(pieces.root), pieces.of_chunk(number), empty, context.asset_key.path,
                               where) for number, days in enumerate(chunks))
            for _ in run_batches(pool, land_chunk, lands, here=functools.partial(land_chunk, landing=landing)):
                pass
    context.log.info("raw_quotes: %d tickers in %d batch(es) by %d process(es), %d rows, %d day files",
                     len(symbols), len(batches), fetchers, figures.rows, len(keys))
    figures.record(context, sessions)
    metadata = _run_metadata(context, config, quotes, report, sessions, figures.rows, dividends, splits)
    metadata["ticker_batches"] = len(batches)
    metadata["fetch_processes"] = fetchers
    metadata["land_processes"] = processes
    return dg.Output(LandedDays(files=len(keys), rows=figures.rows), metadata=metadata)
