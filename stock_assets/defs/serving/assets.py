"""Serving caches: what dashboards read, refreshed and warmed after each load."""


import dagster as dg
from pydantic import Field

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.serving.warmup import (
    WarmupReport,
    most_watched,
    prewarm_latest_month,
    refresh_materialized_views,
    warm_quote_cache,
)


class ServingPolicy(dg.ConfigurableResource):
    """What the cache warmer keeps hot."""

    watched_tickers: list[str] = Field(default_factory=list,
                                       description="Symbols whose recent quotes stay cached; empty = the top by dollar volume.")
    watch_count: int = Field(default=10, description="How many top symbols to warm when no list is given.")
    warm_days: int = Field(default=30, description="Calendar days of recent quotes to warm.")


@dg.asset(
    deps=["monthly_prices", "sector_daily_performance"],
    group_name="serving",
    kinds={"postgres"},
    owners=["team:market-data"],
    code_version="1",
)
def serving_caches(
    context: dg.AssetExecutionContext, database: PostgresResource, quotes: QuoteClient, serving_policy: ServingPolicy
) -> dg.MaterializeResult:
    """Materialized views `market.latest_quotes_mv` and `market.sector_snapshot_mv` refreshed concurrently
    (readers are not blocked), the newest month's partition and indexes prewarmed into shared buffers, and
    the quote client's cache warmed for the most-watched tickers. What was warmed, and how long each step
    took, is in the metadata."""
    report = WarmupReport()
    refresh_materialized_views(database, report)
    prewarm_latest_month(database, report)
    watched = most_watched(database, serving_policy.watched_tickers, serving_policy.watch_count)
    warm_quote_cache(quotes, watched, quotes.market_today(),
                     serving_policy.warm_days, report)
    context.log.info("Warmed %s in %s", sorted(report.warmed), report.seconds)
    return dg.MaterializeResult(metadata={
        "warmed": dg.MetadataValue.json(report.warmed),
        **{f"{step}_s": seconds for step, seconds in report.seconds.items()},
        "total_s": round(sum(report.seconds.values()), 4),
    })
