"""Cleaned prices: validated, de-duplicated, OHLC-consistent daily bars, with checks on the result."""


from typing import Iterator

import dagster as dg
import pandas as pd
from sqlalchemy import text

from stock_assets.automation import DAILY_FRESHNESS
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.prices.cleaning import REJECTED_COLUMNS, CleaningResult, clean_quotes
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.metadata import (
    add_partition_metadata, asset_metadata, distinct_by_day, reasons_by_day, rows_by_day, share,
)
from stock_assets.partitions import trading_day_partitions, trading_days, window_dates

REJECTED_SHARE_LIMIT = 0.01

CHECKS = [
    dg.AssetCheckSpec("ohlc_consistent", asset="cleaned_prices", blocking=True,
                      description="Every row has positive prices with low <= open, close <= high."),
    dg.AssetCheckSpec("unique_symbol_date", asset="cleaned_prices", blocking=True,
                      description="At most one row per (symbol, trade date)."),
    dg.AssetCheckSpec("rejected_share", asset="cleaned_prices",
                      description=f"Rejected rows stay under {REJECTED_SHARE_LIMIT:.0%} of the raw rows."),
    dg.AssetCheckSpec("tickers_complete", asset="cleaned_prices",
                      description="Every tracked ticker has a clean bar for every NYSE session."),
]


@dg.asset(
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="landing_io_manager",
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
    raw_quotes: pd.DataFrame,
    database: PostgresResource,
    tickers: TickerSelection,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Daily bars that passed validation: finite, positive, OHLC-consistent, one row per symbol and day.

    Prices are rounded to 6 decimals (removing Yahoo's float32 noise), dividends and split ratios
    ride along for split/dividend-aware consumers. Rejected rows (NaN/inf, non-positive prices,
    zero-volume bad bars, OHLC violations, duplicates) are written with their reason to
    `market.price_rejections`, replaced for the partition range on every run.
    """
    start, end = window_dates(context.partition_time_window)
    result = clean_quotes(raw_quotes)
    _replace_rejections(database, result, start, end)

    clean = result.clean
    raw_rows = len(raw_quotes)
    rejected_share = share(len(result.rejected), raw_rows)
    # Each day's own numbers on its own partition (a range run would otherwise show the run's
    # totals on every day); the run's totals under `*_in_run` names (see stock_assets/metadata.py).
    keys = context.partition_keys
    clean_by_day, raw_by_day = rows_by_day(clean, keys), rows_by_day(raw_quotes, keys)
    rejected_by_day, reasons = rows_by_day(result.rejected, keys), reasons_by_day(result.rejected, keys)
    symbols_by_day = distinct_by_day(clean, keys, "symbol")
    sessions = trading_days(start, end)
    session_keys = {day.isoformat() for day in sessions}
    add_partition_metadata(context, {
        key: {
            "dagster/row_count": clean_by_day[key],
            "raw_rows": raw_by_day[key],
            "rejected_rows": rejected_by_day[key],
            "rejected_share": share(rejected_by_day[key], raw_by_day[key]),
            "rejected_by_reason": dg.MetadataValue.json(reasons[key]),
            "symbols": symbols_by_day[key],
            "nyse_session": key in session_keys,  # False: weekend or holiday, zero rows expected
        }
        for key in keys
    })
    yield dg.Output(
        clean,
        metadata={
            "partitions_in_run": len(keys),
            "rows_in_run": len(clean),
            "raw_rows_in_run": raw_rows,
            "rejected_rows_in_run": len(result.rejected),
            "rejected_share_in_run": rejected_share,
            "rejected_by_reason_in_run": dg.MetadataValue.json(result.rejected_by_reason),
            "symbols_in_run": int(clean["symbol"].nunique()),
        },
    )
    yield from _checks(clean, rejected_share, tickers.symbols(), sessions)


_INSERT_REJECTION = text(
    "INSERT INTO market.price_rejections"
    " (trade_date, symbol, reason, detail, open, high, low, close, adj_close, volume)"
    " VALUES (:trade_date, :symbol, :reason, :detail, :open, :high, :low, :close, :adj_close, :volume)"
)


def _replace_rejections(database: PostgresResource, result: CleaningResult, start, end) -> None:
    rows = result.rejected.astype(object).where(result.rejected.notna(), None)
    with database.begin() as conn:
        conn.execute(
            text("DELETE FROM market.price_rejections WHERE trade_date >= :start AND trade_date < :end"),
            {"start": start, "end": end},
        )
        if len(rows):
            conn.execute(
                _INSERT_REJECTION,
                rows[REJECTED_COLUMNS].to_dict("records"),
            )


def _checks(
    clean: pd.DataFrame, rejected_share: float, symbols: list[str], sessions: list
) -> Iterator[dg.AssetCheckResult]:
    bad_ohlc = clean[
        (clean[["open", "high", "low", "close", "adj_close"]] <= 0).any(axis=1)
        | (clean["low"] > clean[["open", "close"]].min(axis=1))
        | (clean["high"] < clean[["open", "close"]].max(axis=1))
    ]
    yield dg.AssetCheckResult(
        check_name="ohlc_consistent",
        passed=bad_ohlc.empty,
        metadata={"violations": len(bad_ohlc)},
    )
    dupes = int(clean.duplicated(["symbol", "trade_date"]).sum())
    yield dg.AssetCheckResult(check_name="unique_symbol_date", passed=dupes == 0, metadata={"duplicates": dupes})
    yield dg.AssetCheckResult(
        check_name="rejected_share",
        passed=rejected_share <= REJECTED_SHARE_LIMIT,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected_share": rejected_share, "limit": REJECTED_SHARE_LIMIT},
    )
    expected = pd.MultiIndex.from_product([symbols, sessions], names=["symbol", "trade_date"])
    present = pd.MultiIndex.from_frame(clean[["symbol", "trade_date"]])
    missing = expected.difference(present)
    yield dg.AssetCheckResult(
        check_name="tickers_complete",
        passed=len(missing) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "missing_bars": len(missing),
            "missing_sample": dg.MetadataValue.json([f"{s} {d}" for s, d in list(missing)[:20]]),
        },
    )
