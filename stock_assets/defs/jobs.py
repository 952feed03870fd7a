"""Jobs and schedules: daily partitions after the US close, then the month they belong to."""


import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from stock_assets import settings
from stock_assets.defs.partitions import MARKET_TIMEZONE, is_trading_day

daily_prices_job = dg.define_asset_job(
    "daily_prices_job",
    selection=dg.AssetSelection.assets("raw_quotes", "cleaned_prices"),
    description="Fetch and clean one trading day (or a range, as one run).",
)

monthly_warehouse_job = dg.define_asset_job(
    "monthly_warehouse_job",
    selection=dg.AssetSelection.assets("monthly_prices", "sector_daily_performance", "sector_monthly_summary"),
    description="Load a month into its PostgreSQL partition and recompute its sector aggregations.",
)

universe_job = dg.define_asset_job(
    "universe_job",
    selection=dg.AssetSelection.assets("ticker_universe", "index_membership", "sector_classification"),
    description="Refresh the reference tables: the ticker universe, index membership and GICS classification "
                "over time.",
)


@dg.schedule(
    job=daily_prices_job,
    cron_schedule="30 18 * * 1-5",
    execution_timezone=MARKET_TIMEZONE,
    description="After the US close (18:30 New York), fetch and clean the day's quotes.",
)
def daily_prices_schedule(context: dg.ScheduleEvaluationContext):
    day = _scheduled_day(context)
    if not _some_listing_trades(day):
        return dg.SkipReason(f"{day} is not a session of any tracked listing's exchange (NYSE holiday): "
                             "nothing to fetch")
    return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())


@dg.schedule(
    job=monthly_warehouse_job,
    cron_schedule="15 19 * * 1-5",
    execution_timezone=MARKET_TIMEZONE,
    description="After the daily prices (19:15 New York), reload the running month and its sector aggregations.",
)
def monthly_warehouse_schedule(context: dg.ScheduleEvaluationContext):
    day = _scheduled_day(context)
    if not _some_listing_trades(day):
        return dg.SkipReason(f"{day} is not a session of any tracked listing's exchange (NYSE holiday): "
                             "the month did not change")
    month = day.replace(day=1).isoformat()
    return dg.RunRequest(run_key=f"{month}@{day.isoformat()}", partition_key=month)


def _some_listing_trades(day: dt.date) -> bool:
    """Whether `day` is a session of some tracked listing's exchange (a NYSE holiday is a London
    session for OCDO.L); US listings only (the default) means: a NYSE session."""
    if is_trading_day(day):
        return True
    from stock_assets.defs.universe.resources import TickerSelection
    from stock_assets.markets import exchange_of, is_session

    tracked = TickerSelection(tickers=settings.configured_tickers() or []).symbols()
    return any(is_session(code, day) for code in {exchange_of(symbol).calendar for symbol in tracked})


def _scheduled_day(context: dg.ScheduleEvaluationContext) -> dt.date:
    return context.scheduled_execution_time.astimezone(ZoneInfo(MARKET_TIMEZONE)).date()
