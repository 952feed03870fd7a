"""The gap sensor evaluated against a real instance: run requests, their ranges and the cursor."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.definitions import defs
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.prices.gaps import RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges
from stock_assets.defs.prices.sensors import GapPolicy, gap_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager

TICKERS = TickerSelection(tickers=["AAPL", "MSFT"])


def _materialize(instance, resources, selection, first, last=None, raise_on_error=True):
    tags = {} if last is None else {RANGE_START_TAG: first, RANGE_END_TAG: last}
    return dg.materialize(
        [raw_quotes, cleaned_prices, monthly_prices], selection=selection, instance=instance, resources=resources, tags=tags,
        partition_key=None if last else first, raise_on_error=raise_on_error,
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def resources(database, tmp_path):
    return {"database": database, "quotes": QuoteClient(), "tickers": TICKERS,
            "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}


def _evaluate(instance, resources, cursor=None, lookback=10, policy=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"database": resources["database"], "quotes": QuoteClient(),
                   "gap_policy": policy or GapPolicy(lookback_days=lookback), "tickers": resources["tickers"],
                   "landing_io_manager": resources["landing_io_manager"]},
    ) as context:
        return gap_sensor(context)


def _ranges(result):
    return [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in result.run_requests]


def test_missing_and_failed_days_become_one_request_per_contiguous_range(instance, resources, database):
    # The replay's clock stands at 2020-10-28: a 10-day look-back holds the sessions 10-19 .. 10-27.
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-17", "2020-10-20").success
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-23", "2020-10-25").success
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-27").success
    broken = {**resources, "database": PostgresResource(url="postgresql://nobody@/none?host=/nonexistent")}
    failed = _materialize(instance, broken, ["raw_quotes", "cleaned_prices"], "2020-10-26", raise_on_error=False)
    assert not failed.success

    result = _evaluate(instance, resources)
    # 10-21/10-22 were never materialized; 10-26's cleaning failed. Weekends are not gaps.
    assert _ranges(result) == [("2020-10-21", "2020-10-22"), ("2020-10-26", "2020-10-26")]
    assert all(r.tags["stock_assets/trigger"] == "gap_sensor" for r in result.run_requests)

    # The cursor remembers what was asked: the next tick requests nothing new.
    again = _evaluate(instance, resources, cursor=result.cursor)
    assert again.run_requests == [] and again.skip_reason is not None
    assert set(json.loads(again.cursor)["requested"]) == {"2020-10-21..2020-10-22", "2020-10-26..2020-10-26"}


def test_ranges_already_queued_or_running_are_not_requested(instance, resources, database):
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-17", "2020-10-19").success
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-23", "2020-10-27").success
    job = defs.resolve_job_def("daily_prices_job")
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED,
                                tags={RANGE_START_TAG: "2020-10-21", RANGE_END_TAG: "2020-10-22"})
    assert _ranges(_evaluate(instance, resources)) == [("2020-10-20", "2020-10-20")]


def test_rows_deleted_behind_dagsters_back_are_gaps(instance, resources, database):
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-01", "2020-10-31").success
    assert _materialize(instance, resources, ["monthly_prices"], "2020-10-01").success
    assert _evaluate(instance, resources).run_requests == []
    with database.begin() as conn:
        conn.execute(text("DELETE FROM market.prices WHERE trade_date IN ('2020-10-19', '2020-10-20')"))
    assert _ranges(_evaluate(instance, resources)) == [("2020-10-19", "2020-10-20")]


def test_contiguity_spans_weekends_and_holidays_only():
    days = [dt.date(2020, 9, 4), dt.date(2020, 9, 8),  # Fri, then Tue after Labor Day: one range
            dt.date(2020, 9, 10)]  # Thu: 9-09 was a session in between, so a new range
    assert contiguous_ranges(days) == [(dt.date(2020, 9, 4), dt.date(2020, 9, 8)),
                                       (dt.date(2020, 9, 10), dt.date(2020, 9, 10))]


def test_one_tickers_rows_deleted_from_the_warehouse_are_refetched_for_that_ticker_only(instance, resources, database):
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-01", "2020-10-31").success
    assert _materialize(instance, resources, ["monthly_prices"], "2020-10-01").success
    with database.begin() as conn:
        conn.execute(text("DELETE FROM market.prices WHERE symbol = 'MSFT' AND trade_date IN ('2020-10-20', '2020-10-22')"))
    result = _evaluate(instance, resources)
    [request] = result.run_requests  # not the whole days: AAPL's rows are there
    assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["MSFT"]}}}}
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2020-10-20", "2020-10-22")
    assert sorted(json.loads(result.cursor)["holes"]) == ["MSFT 2020-10-20", "MSFT 2020-10-22"]

    # The refetch re-cleans the days: until the month is reloaded, market.prices is not asked about them.
    assert _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2020-10-20", "2020-10-22").success
    assert _evaluate(instance, resources).run_requests == []
    assert _materialize(instance, resources, ["monthly_prices"], "2020-10-01").success
    assert _evaluate(instance, resources).run_requests == []
    with database.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM market.prices WHERE symbol = 'MSFT' AND trade_date "
                                 "BETWEEN '2020-10-20' AND '2020-10-22'")).scalar_one() == 3
