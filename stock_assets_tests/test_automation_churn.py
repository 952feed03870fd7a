"""Automation works only when something changed: an unchanged universe refresh recomputes nothing."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from stock_assets.defs.universe import history_assets
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets_tests.test_serving import ASSETS, _load_october, _resources

SECTORS = dg.AssetKey("sector_daily_performance")


# What `universe_job` refreshes: the universe and the point-in-time reference tables.
REFERENCE = ["ticker_universe", "index_membership", "sector_classification"]


def _universe(instance, resources, tickers):
    result = dg.materialize(ASSETS, selection=REFERENCE, instance=instance,
                            resources={**resources, "tickers": TickerSelection(tickers=tickers)})
    assert result.success
    return {name: result.asset_materializations_for_node(name)[0].tags["dagster/data_version"] for name in REFERENCE}


def test_an_unchanged_universe_refresh_recomputes_no_sector_month(database, tmp_path, monkeypatch):
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

        # A real change of what a sector figure is made of: one more index member in October 2020.
        real = history_assets.membership_intervals
        monkeypatch.setattr(history_assets, "membership_intervals", lambda: pd.concat([real(), pd.DataFrame(
            [{"symbol": "ZZZZ", "valid_from": dt.date(2020, 10, 1), "valid_to": dt.date(2020, 10, 20),
              "source": "test"}])], ignore_index=True))
        changed = _universe(instance, resources, ["AAPL", "XOM", "JNJ"])
        assert changed["index_membership"] != same["index_membership"]
        assert changed["sector_classification"] == same["sector_classification"]
        follows = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert "2020-10-01" in follows.get_requested_partitions(SECTORS)
        # Days still count as they always did: a re-materialized day reloads its month.
        assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance,
                              resources=resources, partition_key="2020-10-05").success
        day = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=follows.cursor)
        assert day.get_requested_partitions(dg.AssetKey("monthly_prices")) == {"2020-10-01"}
