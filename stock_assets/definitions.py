"""The asset graph, from source to summary.

    ticker_universe ─────────────────────────────────────────────┐
    raw_quotes ─▶ cleaned_prices ─▶ monthly_prices ─▶ sector_daily_performance ─▶ sector_monthly_summary
    (daily)       (daily, checks)    (monthly child       (monthly, SQL)              (monthly, SQL)
                                       tables of market.prices)

A new asset goes in the folder of its domain under `defs/` and is listed here.
"""

from __future__ import annotations

import dagster as dg

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.jobs import (
    daily_prices_job,
    daily_prices_schedule,
    monthly_warehouse_job,
    monthly_warehouse_schedule,
    universe_job,
)
from stock_assets.landing.io_manager import LandingIOManager


def build_resources() -> dict[str, object]:
    """Resources for the environment described by the variables in `stock_assets.settings`."""
    return {
        "database": PostgresResource(
            url=dg.EnvVar(settings.DATABASE_URL_ENV) if settings.configured_database_url() else None
        ),
        "quotes": QuoteClient(source=settings.quote_source()),
        "tickers": TickerSelection(tickers=settings.configured_tickers() or []),
        "landing_io_manager": LandingIOManager.from_environment(),
    }


defs = dg.Definitions(
    assets=[
        ticker_universe,
        raw_quotes,
        cleaned_prices,
        monthly_prices,
        sector_daily_performance,
        sector_monthly_summary,
    ],
    jobs=[daily_prices_job, monthly_warehouse_job, universe_job],
    schedules=[daily_prices_schedule, monthly_warehouse_schedule],
    resources=build_resources(),
)
