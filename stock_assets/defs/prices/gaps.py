"""Finding gaps in the daily data: what the gap sensor requests, as plain functions it can test.

A gap is an NYSE session in the look-back window whose `raw_quotes` or `cleaned_prices` partition
is missing or failed in Dagster, or whose rows are missing from `market.prices` although its month was loaded
(data deleted behind Dagster's back). Weekends and holidays are never gaps. Sessions that a queued
or running run already covers are left alone. Gaps separated only by non-trading days merge into
one range, requested as one single-run backfill.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import dagster as dg
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.partitions import (
    FIRST_DAY,
    RANGE_END_TAG,
    RANGE_START_TAG,
    is_trading_day,
    trading_day_partitions,
    trading_days,
)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
DAILY_ASSETS = (dg.AssetKey("raw_quotes"), dg.AssetKey("cleaned_prices"))
MONTHLY = dg.AssetKey("monthly_prices")


def sessions_in_window(as_of: dt.date, lookback_days: int) -> list[dt.date]:
    """NYSE sessions that have closed: from `as_of - lookback_days` up to the day before `as_of`."""
    first = max(as_of - dt.timedelta(days=lookback_days), dt.date.fromisoformat(FIRST_DAY))
    return trading_days(first, as_of)


def unmaterialized_sessions(instance: dg.DagsterInstance, sessions: list[dt.date]) -> set[dt.date]:
    """Sessions whose raw or cleaned partition Dagster has never materialized, or saw fail last."""
    keys = [day.isoformat() for day in sessions]
    bad = {None, dg.AssetPartitionStatus.FAILED}
    gaps: set[dt.date] = set()
    for asset_key in DAILY_ASSETS:
        status = instance.get_status_by_partition(asset_key, keys, trading_day_partitions) or {}
        gaps |= {day for day in sessions if status.get(day.isoformat()) in bad}
    return gaps


def sessions_missing_rows(instance: dg.DagsterInstance, database: PostgresResource,
                          sessions: list[dt.date]) -> set[dt.date]:
    """Sessions of loaded months that have no rows in market.prices."""
    if not sessions:
        return set()
    loaded_months = set(instance.get_materialized_partitions(MONTHLY))
    candidates = [day for day in sessions if day.replace(day=1).isoformat() in loaded_months]
    if not candidates:
        return set()
    with database.begin() as conn:
        present = set(conn.execute(
            text("SELECT DISTINCT trade_date FROM market.prices WHERE trade_date BETWEEN :first AND :last"),
            {"first": candidates[0], "last": candidates[-1]},
        ).scalars())
    return {day for day in candidates if day not in present}


def in_flight_days(instance: dg.DagsterInstance, job_name: str) -> set[dt.date]:
    """Days covered by queued or running runs of `job_name`."""
    covered: set[dt.date] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)):
        tags = run.tags
        if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
            start, end = dt.date.fromisoformat(tags[RANGE_START_TAG]), dt.date.fromisoformat(tags[RANGE_END_TAG])
            covered.update(start + dt.timedelta(days=i) for i in range((end - start).days + 1))
        elif "dagster/partition" in tags:
            covered.add(dt.date.fromisoformat(tags["dagster/partition"]))
    return covered


def contiguous_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Merge sessions into [first, last] ranges; only non-trading days may lie between members."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges:
            first, last = ranges[-1]
            between = [last + dt.timedelta(days=i) for i in range(1, (day - last).days)]
            if not any(is_trading_day(d) for d in between):
                ranges[-1] = (first, day)
                continue
        ranges.append((day, day))
    return ranges

