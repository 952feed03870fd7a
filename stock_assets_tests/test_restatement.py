"""Restatement: a split arriving over stored history gets that history refetched and re-adjusted.

Fault injected: AAPL's 4:1 split arrives (2020-08-31) after its earlier history was stored, as
Yahoo delivers it: the day's answer carries the split, the stored days are from an earlier fetch.
Asserts: the restatement sensor requests AAPL's earlier history only; running that request
replaces AAPL's stored rows and keeps the other tickers' rows untouched.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from stock_assets.defs.prices.gaps import RANGE_END_TAG, RANGE_START_TAG
from stock_assets.defs.prices.sensors import restatement_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager

pytestmark = pytest.mark.reliability


def _evaluate(instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return restatement_sensor(context)


def test_a_split_over_stored_history_is_restated_for_that_ticker_only(tmp_path):
    landing = LandingIOManager(base_dir=str(tmp_path))
    resources = {"quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL", "MSFT"]),
                 "landing_io_manager": landing}
    with dg.instance_for_test() as instance:
        history = {RANGE_START_TAG: "2020-08-24", RANGE_END_TAG: "2020-08-28"}
        assert dg.materialize([raw_quotes], resources=resources, instance=instance, tags=history).success
        first = _evaluate(instance)
        assert first.run_requests == []  # the history came with its own adjustments

        # Tamper with the stored AAPL days as if they had been fetched before the split (4x prices).
        for day in pd.bdate_range("2020-08-24", "2020-08-28"):
            path = landing.path_for(dg.AssetKey("raw_quotes"), day.date().isoformat())
            frame = pd.read_parquet(path)
            frame.loc[frame["symbol"] == "AAPL", ["open", "high", "low", "close", "adj_close"]] *= 4
            frame.to_parquet(path, index=False)

        assert dg.materialize([raw_quotes], resources=resources, instance=instance,
                              partition_key="2020-08-31").success
        second = _evaluate(instance, first.cursor)
        [request] = second.run_requests
        assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["AAPL"]}}}}
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2016-01-01", "2020-08-30")
        assert _evaluate(instance, second.cursor).run_requests == []

        # Run what the sensor asked for (over the stored week, to keep the test short).
        msft_before = pd.read_parquet(landing.path_for(dg.AssetKey("raw_quotes"), "2020-08-26"))
        msft_before = msft_before[msft_before["symbol"] == "MSFT"].reset_index(drop=True)
        restated = dg.materialize([raw_quotes], resources=resources, instance=instance,
                                  tags={RANGE_START_TAG: "2020-08-24", RANGE_END_TAG: "2020-08-28"},
                                  run_config=request.run_config)
        assert restated.success
    day = pd.read_parquet(landing.path_for(dg.AssetKey("raw_quotes"), "2020-08-26"))
    assert sorted(day["symbol"]) == ["AAPL", "MSFT"]
    aapl_close = day.loc[day["symbol"] == "AAPL", "close"].item()
    assert aapl_close == pytest.approx(126.52, abs=0.05)  # split-adjusted again, not 4x
    msft_after = day[day["symbol"] == "MSFT"].reset_index(drop=True)
    pd.testing.assert_frame_equal(msft_after.drop(columns="fetched_at"), msft_before.drop(columns="fetched_at"))
    assert (msft_after["fetched_at"] == msft_before["fetched_at"]).all()  # untouched, not refetched
    assert dt.date(2020, 8, 26) == pd.to_datetime(day["trade_date"]).dt.date.iloc[0]
