"""Partitions and the trading calendar, shared by every domain.

Daily assets are partitioned by calendar day, so that each month maps exactly onto its days. A
partition holds each listing's bar of that day in the listing's own exchange time (a London bar of
2020-07-03 is in partition 2020-07-03). Each listing is expected on its own exchange's sessions
(stock_assets/markets.py: NYSE for US listings, XLON for OCDO.L, XTKS for 4063.T); a day on which
no tracked listing's exchange trades is materialized as "market closed" (an empty day) without
asking Yahoo, and the schedules skip it. The NYSE helpers below (`trading_days`, `is_trading_day`)
remain the US calendar.

The first partition is the 1st of the month of `STOCK_ASSETS_FIRST_DAY` (settings.py), 2016-01-01
by default.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import dagster as dg
import exchange_calendars
import pandas as pd

from stock_assets import settings

MARKET_TIMEZONE = "America/New_York"
# The tags that make one run cover a range of partitions (what a single-run backfill launches).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The first partition: STOCK_ASSETS_FIRST_DAY (settings.py), 2016-01-01 unless set, e.g. 1990-01-01
# or a listing's first trade (TSLA: 2010-06-29), taken back to the 1st of its month: a monthly
# partition maps onto all of its days, so a month's days must all exist (days before a listing's
# first trade simply hold no bar of it).
FIRST_MONTH = dt.date.fromisoformat(settings.first_day()).replace(day=1).isoformat()
FIRST_DAY = FIRST_MONTH

trading_day_partitions = dg.DailyPartitionsDefinition(
    start_date=FIRST_DAY,
    timezone=MARKET_TIMEZONE,
    # Include today's partition: the schedule materializes it after the close.
    end_offset=1,
)

monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH,
    timezone=MARKET_TIMEZONE,
    # Include the running month so its partition fills in day by day.
    end_offset=1,
)


@lru_cache(maxsize=1)
def _nyse() -> exchange_calendars.ExchangeCalendar:
    start = min(dt.date.fromisoformat(FIRST_DAY), dt.date(2010, 1, 1)).replace(month=1, day=1)
    return exchange_calendars.get_calendar("XNYS", start=start.isoformat())


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """NYSE sessions with start <= day < end."""
    if end <= start:
        return []
    last = end - dt.timedelta(days=1)
    sessions = _nyse().sessions_in_range(pd.Timestamp(start), pd.Timestamp(last))
    return [ts.date() for ts in sessions]


def is_trading_day(day: dt.date) -> bool:
    return _nyse().is_session(pd.Timestamp(day))


def window_dates(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    """The [start, end) calendar dates of a partition time window, in New York time."""
    return window.start.date(), window.end.date()


def range_tags(first: object, last: object) -> dict[str, str]:
    """Tags for one run over the partitions `first`..`last` (keys or dates, inclusive)."""
    return {RANGE_START_TAG: str(first), RANGE_END_TAG: str(last)}


def month_bounds(partition_key: str) -> tuple[dt.date, dt.date]:
    """[first day, first day of next month) for a monthly partition key like 2020-03-01."""
    start = dt.date.fromisoformat(partition_key)
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start, end
