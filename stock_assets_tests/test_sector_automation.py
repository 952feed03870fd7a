"""Month boundaries and gap fills propagate declaratively, through a real Dagster instance.

- A month's sector figures depend on the previous month of `monthly_prices` (its last close starts
  the month's first return): loading month N-1 requests month N's sector figures, and once run,
  month N has its first session.
- A month with some of its days materialized loads them: filling one day requests the month even
  while other days of it do not exist (the end of the data, the running month).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets_tests.test_sector_point_in_time import (
    _members,
    _published,
    _stored_prices,
    assert_matches,
    expected_daily,
)

ASSETS = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
          sector_daily_performance, sector_monthly_summary]
TICKERS = ["AAPL", "MSFT", "JPM", "BAC"]
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def landing(tmp_path):
    return LandingIOManager(base_dir=str(tmp_path / "landing"))


@pytest.fixture
def run(database, landing, instance):
    resources = {
        "database": database,
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=TICKERS),
        "landing_io_manager": landing,
    }

    def materialize(selection=None, first=None, last=None, evaluate=None):
        if evaluate is not None:  # evaluate the automation conditions from cursor `evaluate` (or the start)
            return dg.evaluate_automation_conditions(defs=dg.Definitions(assets=ASSETS, resources=resources),
                                                     instance=instance, cursor=evaluate or None)
        result = dg.materialize(
            ASSETS, selection=selection, resources=resources, instance=instance,
            tags=dict(zip(RANGE_TAGS, (first, last))) if last else {},
            partition_key=first if (first and not last) else None,
        )
        assert result.success
        return result

    return materialize


def _requested(result, asset: str) -> set[str]:
    return set(result.get_requested_partitions(dg.AssetKey(asset)))


def test_loading_the_previous_month_recomputes_the_next_months_first_day(run, instance, database, landing):
    run(["ticker_universe", "index_membership", "sector_classification"])
    run(["raw_quotes", "cleaned_prices"], "2020-01-01", "2020-01-31")
    run(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], "2020-01-01")
    january = _published(database, "sector_daily_performance", "trade_date", dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    # December is not loaded: 2020-01-02 has no previous close, so no return.
    assert january.reset_index()["trade_date"].min() == dt.date(2020, 1, 3)
    before = _published(database, "sector_monthly_summary", "month", dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    assert set(before["trading_days"]) == {20}

    first = run(evaluate="")
    assert not _requested(first, "sector_daily_performance")

    # Month N-1 arrives.
    run(["raw_quotes", "cleaned_prices"], "2019-12-01", "2019-12-31")
    run(["monthly_prices"], "2019-12-01")
    second = run(evaluate=first.cursor)
    assert "2020-01-01" in _requested(second, "sector_daily_performance")
    assert "2020-01-01" in _requested(second, "sector_monthly_summary")

    run(["sector_daily_performance", "sector_monthly_summary"], "2020-01-01")
    january = _published(database, "sector_daily_performance", "trade_date", dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    assert january.reset_index()["trade_date"].min() == dt.date(2020, 1, 2)
    after = _published(database, "sector_monthly_summary", "month", dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    assert set(after["trading_days"]) == {21}  # all 21 NYSE sessions of January 2020
    assert not (after["equal_weight_return"] == before["equal_weight_return"]).any()
    rows = _members(database, _stored_prices(database))
    assert_matches(january, expected_daily(rows[rows["trade_date"] >= dt.date(2020, 1, 1)]))

    # A correction to December's last day (as a restatement would bring), and December reloads:
    # January's figures are requested again and change with it.
    landing_file = landing.path_for(dg.AssetKey("cleaned_prices"), "2019-12-31")
    corrected = pd.read_parquet(landing_file)
    corrected.loc[corrected["symbol"] == "AAPL", "adj_close"] *= 1.05
    corrected.to_parquet(landing_file, index=False)
    third = run(evaluate=second.cursor)
    run(["monthly_prices"], "2019-12-01")
    fourth = run(evaluate=third.cursor)
    assert "2020-01-01" in _requested(fourth, "sector_daily_performance")
    run(["sector_daily_performance", "sector_monthly_summary"], "2020-01-01")
    reloaded = _published(database, "sector_daily_performance", "trade_date", dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    first_day = ("Information Technology", dt.date(2020, 1, 2))
    assert reloaded.loc[first_day, "equal_weight_return"] != pytest.approx(january.loc[first_day, "equal_weight_return"])
    rows = _members(database, _stored_prices(database))
    assert_matches(reloaded, expected_daily(rows[rows["trade_date"] >= dt.date(2020, 1, 1)]))


def test_a_filled_day_loads_its_month_while_other_days_of_it_do_not_exist(run, instance, database):
    run(["ticker_universe", "index_membership", "sector_classification"])
    run(["raw_quotes", "cleaned_prices"], "2020-09-01", "2020-09-30")
    run(["monthly_prices"], "2020-09-01")
    first = run(evaluate="")
    # The gap sensor fills 2020-09-28..2020-10-27 (the bundled data ends on 2020-10-27: October's
    # last days can never exist).
    run(["raw_quotes", "cleaned_prices"], "2020-09-28", "2020-10-27")
    second = run(evaluate=first.cursor)
    assert _requested(second, "monthly_prices") >= {"2020-09-01", "2020-10-01"}
    # The sector figures of both months follow in the same request (their upstream is requested).
    assert _requested(second, "sector_daily_performance") >= {"2020-09-01", "2020-10-01"}

    result = run(["monthly_prices"], "2020-09-01", "2020-10-01")
    october = [m for m in result.asset_materializations_for_node("monthly_prices") if m.partition == "2020-10-01"][0]
    assert october.metadata["days_not_materialized"].value == [f"2020-10-{day}" for day in range(28, 32)]
    with database.begin() as conn:
        newest = conn.execute(text("SELECT max(trade_date), count(DISTINCT trade_date) FROM market.prices "
                                   "WHERE trade_date >= '2020-10-01'")).one()
    assert tuple(newest) == (dt.date(2020, 10, 27), 19)

    # Once handled, the same update is not requested again.
    third = run(evaluate=second.cursor)
    assert not _requested(third, "monthly_prices")


def test_a_month_with_no_day_at_all_still_fails_clearly(run, database, tmp_path):
    result = dg.materialize(
        ASSETS, selection=["monthly_prices"], partition_key="2018-02-01", raise_on_error=False,
        resources={"database": database, "quotes": QuoteClient(), "tickers": TickerSelection(tickers=TICKERS),
                   "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "empty"))},
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "no materialization for 28 of 28 partitions" in (failure.user_failure_data.description or "")


def test_demo_range_starts_from_the_previous_month():
    from stock_assets.tooling.demo import previous_month

    assert previous_month(dt.date(2020, 1, 1)) == dt.date(2019, 12, 1)
    assert previous_month(dt.date(2016, 1, 1)) == dt.date(2016, 1, 1)  # the partitions start there
    assert pd.Timestamp(previous_month(dt.date(2020, 3, 1))).month == 2


def test_loading_the_days_a_month_has_keeps_the_stored_days_it_has_no_file_for(run, database, landing):
    run(["raw_quotes", "cleaned_prices"], "2020-03-01", "2020-03-31")
    run(["monthly_prices"], "2020-03-01")
    with database.begin() as conn:
        before = conn.execute(text("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM "
                                   "(SELECT symbol, trade_date, adj_close FROM market.prices) t")).one()
    landing.path_for(dg.AssetKey("cleaned_prices"), "2020-03-10").unlink()  # the landing lost a day
    result = run(["monthly_prices"], "2020-03-01")
    metadata = result.asset_materializations_for_node("monthly_prices")[0].metadata
    assert metadata["days_not_materialized"].value == ["2020-03-10"]
    assert metadata["rows_kept_from_market_prices"].value == len(TICKERS)
    with database.begin() as conn:
        after = conn.execute(text("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM "
                                  "(SELECT symbol, trade_date, adj_close FROM market.prices) t")).one()
    assert tuple(after) == tuple(before) and before[0] == 22 * len(TICKERS)
