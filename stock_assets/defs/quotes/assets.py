"""Raw quotes: what Yahoo said, per trading day, kept so cleaning can be re-run without refetching."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from stock_assets import settings
from stock_assets.defs.metadata import add_partition_metadata, asset_metadata, distinct_by_day, rows_by_day
from stock_assets.defs.partitions import is_trading_day, trading_day_partitions, window_dates
from stock_assets.defs.quotes.resources import FetchReport, QuoteClient, QuoteSourceUnavailable, empty_raw_frame
from stock_assets.defs.universe.constituents import resolve_tickers, validate_listing
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import REPLACES_SYMBOLS, LandedDays, LandingIOManager
from stock_assets.landing.streaming import day_payloads, month_chunks, spool, stage, ticker_batches, to_table
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
        # The breaker already is the retry governance: re-running the step before its cool-down
        # would only fail fast again, so Dagster's retry policy is bypassed.
        report = getattr(err, "report", None)
        raise dg.Failure(
            description=f"Quote fetch stopped, Yahoo requests are suspended: {err}",
            metadata=report.metadata() if report else None,
            allow_retries=False,
        ) from err


def _all_failed(quotes: QuoteClient, report: FetchReport, symbols, sessions, unserved_ok=frozenset()) -> None:
    """Every ticker failing means the source is down, unless each is a point-in-time index member
    the source does not serve (`unserved_ok`: delisted past members are reported, not errors)."""
    if len(report.failures) == len(symbols) and not set(report.failures) <= set(report.not_served) & set(unserved_ok):
        raise QuoteSourceUnavailable(
            f"Every ticker failed for {sessions[0]}..{sessions[-1]} (source {quotes.source!r}); "
            f"first error: {next(iter(report.failures.values()))}"
        )


def _own_bars(frame: pd.DataFrame, symbols, own_sessions) -> pd.DataFrame:
    """Bars inside the run's window, each on a session of its own exchange."""
    wanted = set(symbols)
    symbol_codes, found_symbols = pd.factorize(frame["symbol"])
    day_codes, found_days = pd.factorize(frame["trade_date"])
    # Which (symbol, day) pairs are kept, judged once per distinct pair: a batch has a few dozen
    # symbols and a few thousand days, but a million rows.
    allowed = np.zeros((len(found_symbols) + 1, len(found_days) + 1), dtype=bool)
    for row, symbol in enumerate(found_symbols):
        days = own_sessions.get(symbol) if symbol in wanted else None
        if days:
            allowed[row, :-1] = [day in days for day in found_days]
    # A boolean Series, not a list: an empty list would select no *columns* of an empty frame (a
    # batch in which every ticker failed, e.g. delisted members).
    keep = pd.Series(allowed[symbol_codes, day_codes], index=frame.index, dtype=bool)
    return frame[keep]


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
    frame = _own_bars(frame, symbols, own_sessions)
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
    dropped; the per-day files are then written a month at a time. Nothing is landed unless the
    fetch as a whole succeeded (not every ticker failed, the breaker stayed closed)."""
    keys = list(context.partition_keys)
    chunks = month_chunks(keys)
    batches = ticker_batches(symbols, len(sessions))
    report = FetchReport()
    figures = DayFigures(keys)
    dividends = splits = 0
    with spool("raw_quotes") as pieces, stage("raw_quotes: fetch"):
        for number, batch in enumerate(batches):
            frame, _ = _fetch(quotes, batch, sessions, context.log, config.refresh_cache, report)
            frame = _own_bars(frame, batch, own_sessions)
            figures.add(frame)
            dividends += int((frame["dividends"] > 0).sum())
            splits += int((frame["stock_splits"] > 0).sum())
            pieces.put_by_chunk(number, to_table(frame), chunks)
            del frame
        _all_failed(quotes, report, symbols, sessions, unserved_ok)
        empty = to_table(empty_raw_frame()).schema
        with stage("raw_quotes: land"):
            for number, days in enumerate(chunks):
                landing.write_days(context.asset_key.path, day_payloads(pieces.chunk(number), days, empty))
    context.log.info("raw_quotes: %d tickers in %d batch(es), %d rows, %d day files",
                     len(symbols), len(batches), figures.rows, len(keys))
    figures.record(context, sessions)
    metadata = _run_metadata(context, config, quotes, report, sessions, figures.rows, dividends, splits)
    metadata["ticker_batches"] = len(batches)
    return dg.Output(LandedDays(files=len(keys), rows=figures.rows), metadata=metadata)


def corporate_actions(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Splits and dividends in a fetched frame: [{symbol, date, kind, value}], date-ordered."""
    actions = []
    for kind, column in (("split", "stock_splits"), ("dividend", "dividends")):
        hits = frame[frame[column] > 0]
        actions += [{"symbol": row.symbol, "date": str(row.trade_date), "kind": kind, "value": float(getattr(row, column))}
                    for row in hits.itertuples(index=False)]
    return sorted(actions, key=lambda a: (a["date"], a["symbol"], a["kind"]))


class DayFigures:
    """Each day's own numbers (see stock_assets/defs/metadata.py), added up batch by batch: rows,
    symbols (batches never share a symbol) and the splits and dividends going ex that day."""

    def __init__(self, keys: list[str]):
        self.keys = list(keys)
        self.rows_by_day = dict.fromkeys(self.keys, 0)
        self.symbols_by_day = dict.fromkeys(self.keys, 0)
        self.actions_by_day: dict[str, list[dict[str, object]]] = {}
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for key, count in rows_by_day(frame, self.keys).items():
            self.rows_by_day[key] += count
        for key, count in distinct_by_day(frame, self.keys, "symbol").items():
            self.symbols_by_day[key] += count
        for action in corporate_actions(frame):
            self.actions_by_day.setdefault(str(action["date"])[:10], []).append(action)

    def record(self, context: dg.AssetExecutionContext, sessions: list) -> None:
        session_keys = {day.isoformat() for day in sessions}
        add_partition_metadata(context, {
            key: {"dagster/row_count": self.rows_by_day[key], "symbols": self.symbols_by_day[key],
                  "nyse_session": is_trading_day(dt.date.fromisoformat(key)),
                  "exchange_session": key in session_keys,  # a session of some tracked listing's exchange
                  "corporate_actions": dg.MetadataValue.json(sorted(
                      self.actions_by_day.get(key, []), key=lambda a: (a["symbol"], a["kind"])))}
            for key in self.keys
        })
