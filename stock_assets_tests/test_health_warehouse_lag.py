"""`health` says how far market.prices and the sector tables lag behind the newest clean day."""

from __future__ import annotations

import dagster as dg

from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.health import OK, SKIPPED, WARN, check_warehouse_lag, health_engine
from stock_assets.landing.io_manager import LandingIOManager

ASSETS = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
          sector_daily_performance, sector_monthly_summary]


def test_warehouse_lag_behind_the_newest_clean_day(database, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"database": database, "quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL", "XOM"]),
                 "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}

    def run(selection, first, last=None):
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last} if last else {}
        assert dg.materialize(ASSETS, selection=selection, resources=resources, instance=instance, tags=tags,
                              partition_key=None if last or not first else first).success

    engine = health_engine(database.resolved_url)
    assert check_warehouse_lag(instance, engine).status == SKIPPED  # no clean day yet
    run(["ticker_universe", "index_membership", "sector_classification"], None)
    run(["raw_quotes", "cleaned_prices"], "2020-03-02", "2020-03-06")
    run(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], "2020-03-01")
    current = check_warehouse_lag(instance, engine)
    assert current.status == OK, current.summary
    assert current.details["newest_clean_day"] == "2020-03-06"

    # Two more clean days that never reached the warehouse (a gap fill, a stalled month load).
    run(["raw_quotes", "cleaned_prices"], "2020-03-09", "2020-03-10")
    behind = check_warehouse_lag(instance, engine)
    assert behind.status == WARN
    assert behind.details["sessions_behind"] == {"market.prices": 2, "market.sector_daily_performance": 2}
    assert behind.details["newest"]["market.prices"] == "2020-03-06"
    assert "market.prices 2 session(s) behind" in behind.summary
    engine.dispose()


def test_days_materialized_empty_after_the_end_of_the_data_are_not_lag(database, tmp_path):
    """The replay ends on 2020-10-27: sessions after it are materialized empty, and a warehouse
    holding 2020-10-27 is up to date."""
    instance = dg.DagsterInstance.ephemeral()
    resources = {"database": database, "quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL", "XOM"]),
                 "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}
    tags = {"dagster/asset_partition_range_start": "2020-10-22", "dagster/asset_partition_range_end": "2020-10-30"}
    for selection, run_tags, key in (
        (["ticker_universe", "index_membership", "sector_classification"], {}, None),
        (["raw_quotes", "cleaned_prices"], tags, None),
        (["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], {}, "2020-10-01"),
    ):
        assert dg.materialize(ASSETS, selection=selection, resources=resources, instance=instance, tags=run_tags,
                              partition_key=key).success
    engine = health_engine(database.resolved_url)
    lag = check_warehouse_lag(instance, engine)
    engine.dispose()
    assert lag.details["newest_clean_day"] == "2020-10-27"
    assert (lag.status, lag.details["sessions_behind"]) == (OK, {"market.prices": 0,
                                                                 "market.sector_daily_performance": 0})
