"""Raw quotes: what Yahoo said, per trading day, kept so cleaning can be re-run without refetching."""


import dagster as dg
import pandas as pd

from stock_assets.defs.quotes.resources import QuoteClient, QuoteSourceUnavailable, empty_raw_frame
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.partitions import trading_day_partitions, trading_days, window_dates


@dg.asset(
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="landing_io_manager",
    group_name="ingestion",
    kinds={"yahoo", "pandas", "parquet"},
    owners=["team:market-data"],
    code_version="1",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL),
)
def raw_quotes(
    context: dg.AssetExecutionContext, quotes: QuoteClient, tickers: TickerSelection
) -> dg.Output[pd.DataFrame]:
    """Daily OHLCV bars as Yahoo reports them, with dividends and stock splits, one file per trading day.

    A run covering a range of partitions (a backfill) fetches each ticker's whole range in one
    request. NYSE holidays are stored as empty days without asking Yahoo. A ticker that fails is
    reported in the metadata and does not block the others; the run fails only if every ticker fails.
    """
    start, end = window_dates(context.partition_time_window)
    sessions = trading_days(start, end)
    symbols = tickers.symbols()
    if not sessions:
        context.log.info("No NYSE session in %s..%s: market closed, nothing to fetch", start, end)
        return dg.Output(empty_raw_frame(), metadata={"dagster/row_count": 0, "market_closed": True})

    frame, report = quotes.fetch(symbols, sessions[0], sessions[-1] + pd.Timedelta(days=1), log=context.log)
    if len(report.failures) == len(symbols):
        raise QuoteSourceUnavailable(
            f"Every ticker failed for {sessions[0]}..{sessions[-1]} (source {quotes.source!r}); "
            f"first error: {next(iter(report.failures.values()))}"
        )
    frame = frame[frame["trade_date"].isin(set(sessions))]
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": len(frame),
            "quote_source": quotes.source,
            "tickers_requested": len(symbols),
            "tickers_failed": len(report.failures),
            "failed_tickers": dg.MetadataValue.json(report.failures),
            "trading_days": len(sessions),
            "upstream_requests": report.requests,
            "latency_p50_s": report.latency_percentile(0.5),
            "latency_p95_s": report.latency_percentile(0.95),
            "dividend_events": int((frame["dividends"] > 0).sum()),
            "split_events": int((frame["stock_splits"] > 0).sum()),
        },
    )
