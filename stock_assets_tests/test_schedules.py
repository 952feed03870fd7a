"""Schedules: weekday partitions after the US close, New York time; holidays skipped."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from stock_assets.defs.jobs import daily_prices_schedule, monthly_warehouse_schedule

NEW_YORK = ZoneInfo("America/New_York")


def _evaluate(schedule, when: dt.datetime):
    context = dg.build_schedule_context(scheduled_execution_time=when)
    return schedule(context)


def test_cron_is_after_the_close_in_new_york():
    assert daily_prices_schedule.cron_schedule == "30 18 * * 1-5"
    assert daily_prices_schedule.execution_timezone == "America/New_York"
    assert monthly_warehouse_schedule.cron_schedule == "15 19 * * 1-5"


def test_trading_day_requests_its_own_partition():
    request = _evaluate(daily_prices_schedule, dt.datetime(2020, 3, 16, 18, 30, tzinfo=NEW_YORK))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2020-03-16"
    month = _evaluate(monthly_warehouse_schedule, dt.datetime(2020, 3, 16, 19, 15, tzinfo=NEW_YORK))
    assert month.partition_key == "2020-03-01"


def test_late_evening_in_utc_is_still_the_new_york_day():
    # 18:30 New York on 2020-03-16 is 22:30 UTC; 2020-12-31 18:30 EST is 23:30 UTC.
    request = _evaluate(daily_prices_schedule, dt.datetime(2020, 12, 31, 23, 30, tzinfo=dt.timezone.utc))
    assert request.partition_key == "2020-12-31"


def test_nyse_holiday_is_skipped():
    skip = _evaluate(daily_prices_schedule, dt.datetime(2020, 11, 26, 18, 30, tzinfo=NEW_YORK))  # Thanksgiving
    assert isinstance(skip, dg.SkipReason)
    assert "holiday" in skip.skip_message


def test_nyse_holiday_is_a_session_for_a_tracked_london_listing(monkeypatch):
    """Thanksgiving closes New York, not London: with OCDO.L tracked, the day is fetched."""
    thanksgiving = dt.datetime(2020, 11, 26, 18, 30, tzinfo=NEW_YORK)
    monkeypatch.setenv("STOCK_ASSETS_TICKERS", "AAPL,OCDO.L")
    request = _evaluate(daily_prices_schedule, thanksgiving)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2020-11-26"
    # Christmas closes both.
    assert isinstance(_evaluate(daily_prices_schedule, dt.datetime(2020, 12, 25, 18, 30, tzinfo=NEW_YORK)),
                      dg.SkipReason)
    monkeypatch.setenv("STOCK_ASSETS_TICKERS", "AAPL,MSFT")
    assert isinstance(_evaluate(daily_prices_schedule, thanksgiving), dg.SkipReason)
