"""Automation works only when something changed: an unchanged universe refresh recomputes nothing."""

from __future__ import annotations

import dagster as dg

from stock_assets.defs.universe.resources import TickerSelection
from stock_assets_tests.test_serving import ASSETS, _load_october, _resources

SECTORS = dg.AssetKey("sector_daily_performance")


def _universe(instance, resources, tickers):
    result = dg.materialize(ASSETS, selection=["ticker_universe"], instance=instance,
                            resources={**resources, "tickers": TickerSelection(tickers=tickers)})
    assert result.success
    return result.asset_materializations_for_node("ticker_universe")[0].tags["dagster/data_version"]


def test_an_unchanged_universe_refresh_recomputes_no_sector_month(database, tmp_path):
    resources = _resources(database, tmp_path)
    defs = dg.Definitions(assets=ASSETS, resources=resources)
    with dg.instance_for_test() as instance:
        _load_october(instance, resources)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the initial tick acts on nothing
        assert first.total_requested == 0

        same = _universe(instance, resources, ["AAPL", "XOM", "JNJ"])
        again = _universe(instance, resources, ["AAPL", "XOM", "JNJ"])
        assert same == again  # content version: the same universe is recognisably the same
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert quiet.get_requested_partitions(SECTORS) == set(), "an unchanged universe recomputed sector months"

        changed = _universe(instance, resources, ["AAPL", "XOM", "JNJ", "MSFT"])  # MSFT is tracked now
        assert changed != same
        follows = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert "2020-10-01" in follows.get_requested_partitions(SECTORS)
        # Days still count as they always did: a re-materialized day reloads its month.
        assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance,
                              resources=resources, partition_key="2020-10-05").success
        day = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=follows.cursor)
        assert day.get_requested_partitions(dg.AssetKey("monthly_prices")) == {"2020-10-01"}
