"""The asset graph, from source to summary.

    ticker_universe ─▶ sector_classification ─┐   index_membership ─┐ (point in time)
    raw_quotes ─▶ cleaned_prices ─▶ monthly_prices ─▶ sector_daily_performance ─▶ sector_monthly_summary
    (daily)       (daily, checks)    (monthly child       (monthly, SQL)              (monthly, SQL)
                                       tables of market.prices)
                                             └──────────────┴─▶ serving_caches (views, prewarm, hot quotes)

A new asset goes in the folder of its domain under `defs/` and is listed here.
"""

from __future__ import annotations

import dagster as dg

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.automation import follow_upstream_sensor
from stock_assets.defs.jobs import (
    daily_prices_job,
    daily_prices_schedule,
    monthly_warehouse_job,
    monthly_warehouse_schedule,
    universe_job,
)
from stock_assets.defs.operations.sensors import data_alert_sensor, dead_run_reaper, run_failure_reporter
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.prices.sensors import GapPolicy, gap_sensor, restatement_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.serving.assets import ServingPolicy, serving_caches
from stock_assets.defs.serving.sensors import cache_warming_sensor, serving_job
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.universe.sensors import new_ticker_sensor
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager


def build_resources() -> dict[str, object]:
    """Resources for the environment described by the variables in `stock_assets.settings`."""
    database = PostgresResource(
        url=dg.EnvVar(settings.DATABASE_URL_ENV) if settings.configured_database_url() else None
    )
    return {
        "database": database,
        # The quote client keeps its rate limit, breaker and cache in the same database, so every
        # run and every step process shares them.
        "quotes": QuoteClient(source=settings.quote_source(), database=database,
                              replay_archive=settings.configured_replay_archive()),
        "tickers": TickerSelection(tickers=settings.configured_tickers() or [],
                                   sp500_point_in_time=settings.sp500_point_in_time()),
        "landing_io_manager": LandingIOManager.from_environment(),
        "gap_policy": GapPolicy(),
        "serving_policy": ServingPolicy(),
    }


defs = dg.Definitions(
    assets=[
        ticker_universe,
        index_membership,
        sector_classification,
        raw_quotes,
        cleaned_prices,
        monthly_prices,
        sector_daily_performance,
        sector_monthly_summary,
        serving_caches,
    ],
    jobs=[daily_prices_job, monthly_warehouse_job, universe_job, serving_job],
    schedules=[daily_prices_schedule, monthly_warehouse_schedule],
    sensors=[gap_sensor, new_ticker_sensor, restatement_sensor, cache_warming_sensor, run_failure_reporter,
             follow_upstream_sensor, data_alert_sensor, dead_run_reaper],
    resources=build_resources(),
)
