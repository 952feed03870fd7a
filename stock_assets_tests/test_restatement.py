"""Restatement: a split arriving over stored history gets that history refetched and re-adjusted.

Fault injected: AAPL's 4:1 split arrives (2020-08-31) after its earlier history was stored, as
Yahoo delivers it: the day's answer carries the split, the stored days are from an earlier fetch.
Asserts: the restatement sensor requests AAPL's earlier history only; running that request
replaces AAPL's stored rows and keeps the other tickers' rows untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dagster as dg
import pandas as pd
import pytest

from stock_assets.defs.prices.gaps import RANGE_END_TAG, RANGE_START_TAG
from stock_assets.defs.prices.sensors import restatement_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.testing.yahoo_emulator import YahooEmulator, history_as_known_on
from stock_assets.yahoo.archive import PriceArchive

pytestmark = pytest.mark.reliability


def _evaluate(instance, landing, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"landing_io_manager": landing}) as context:
        return restatement_sensor(context)


def test_a_split_over_stored_history_is_restated_for_that_ticker_only(tmp_path):
    landing = LandingIOManager(base_dir=str(tmp_path))
    resources = {"quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL", "MSFT"]),
                 "landing_io_manager": landing}
    with dg.instance_for_test() as instance:
        history = {RANGE_START_TAG: "2020-08-24", RANGE_END_TAG: "2020-08-28"}
        assert dg.materialize([raw_quotes], resources=resources, instance=instance, tags=history).success
        first = _evaluate(instance, landing)
        assert first.run_requests == []  # the history came with its own adjustments

        # Tamper with the stored AAPL days as if they had been fetched before the split (4x prices).
        for day in pd.bdate_range("2020-08-24", "2020-08-28"):
            path = landing.path_for(dg.AssetKey("raw_quotes"), day.date().isoformat())
            frame = pd.read_parquet(path)
            frame.loc[frame["symbol"] == "AAPL", ["open", "high", "low", "close", "adj_close"]] *= 4
            frame.to_parquet(path, index=False)

        assert dg.materialize([raw_quotes], resources=resources, instance=instance,
                              partition_key="2020-08-31").success
        second = _evaluate(instance, landing, first.cursor)
        [request] = second.run_requests
        assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["AAPL"],
                                                                        "refresh_cache": True}}}}
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2016-01-01", "2020-08-30")
        assert _evaluate(instance, landing, second.cursor).run_requests == []

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


# -- batching, and only what really changes ----------------------------------------------------------

# The 15 tickers of the archive with a dividend or split going ex in 2020-09-28..2020-10-27.
ACTIONS_IN_GAP = ["ABBV", "APD", "CAT", "CMCSA", "COP", "CSCO", "JPM", "MA", "NEE", "O", "ORCL", "PG", "SPG", "T",
                  "VZ"]


def test_a_gap_fill_over_history_that_already_reflects_its_dividends_requests_nothing(tmp_path):
    # The replay answers every window with today's adjustments: stored history already carries the
    # dividends and the split that a 30-day gap fill reports for 15 tickers. Before, that tick asked
    # for 15 whole-history runs, one per ticker.
    landing = LandingIOManager(base_dir=str(tmp_path))
    resources = {"quotes": QuoteClient(), "tickers": TickerSelection(), "landing_io_manager": landing}
    with dg.instance_for_test() as instance:
        for first, last in (("2020-09-14", "2020-09-25"), ("2020-09-28", "2020-10-27")):
            assert dg.materialize([raw_quotes], resources=resources, instance=instance,
                                  tags={RANGE_START_TAG: first, RANGE_END_TAG: last}).success
        tick = _evaluate(instance, landing)
    assert tick.run_requests == []
    assert ", ".join(ACTIONS_IN_GAP) in tick.skip_reason.skip_message  # looked at, found adjusted


@pytest.fixture
def yahoo(database):
    """An emulated Yahoo whose history is the archive as known on 2020-10-12, and a quote client with
    the response cache in PostgreSQL (its own scope)."""
    emulator = YahooEmulator(rate_per_s=1000, burst=1000)
    emulator.use_archive(history_as_known_on(PriceArchive.bundled(), dt.date(2020, 10, 12)))
    with emulator.serve() as url:
        quotes = QuoteClient(source="yahoo", upstream_url=url, database=database, scope=f"restate-{uuid.uuid4().hex[:8]}",
                             rate_per_s=0, max_retries=0, timeout_s=10)
        yield emulator, quotes


def test_dividends_and_a_split_over_stale_history_are_restated_in_one_run_bypassing_the_cache(yahoo, tmp_path):
    emulator, quotes = yahoo
    landing = LandingIOManager(base_dir=str(tmp_path))
    tickers = ["ABBV", "COP", "KO", "MSFT", "NEE", "PG"]  # KO and MSFT: no action in the gap
    resources = {"quotes": quotes, "tickers": TickerSelection(tickers=tickers), "landing_io_manager": landing}
    history = {RANGE_START_TAG: "2020-09-28", RANGE_END_TAG: "2020-10-09"}
    with dg.instance_for_test() as instance:
        # The history, fetched on 2020-10-10: before ABBV's, COP's and PG's dividends and NEE's 4:1 split.
        assert dg.materialize([raw_quotes], resources=resources, instance=instance, tags=history).success
        stale_nee = _stored(landing, "2020-10-09", "NEE")
        # Later, Yahoo's history includes them; the next days arrive (a gap fill).
        emulator.use_archive(PriceArchive.bundled())
        assert dg.materialize([raw_quotes], resources=resources, instance=instance,
                              tags={RANGE_START_TAG: "2020-10-12", RANGE_END_TAG: "2020-10-27"}).success

        tick = _evaluate(instance, landing)
        [request] = tick.run_requests  # one run for the four stale tickers, not one per ticker
        assert request.run_config == {"ops": {"raw_quotes": {"config": {
            "only_tickers": ["ABBV", "COP", "NEE", "PG"], "refresh_cache": True}}}}
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2016-01-01", "2020-10-11")
        assert request.tags["stock_assets/tickers"] == "ABBV,COP,NEE,PG"

        # Run it over the stored window: the very window the response cache holds from the first
        # fetch (trusted 30 days). COP's refetch fails this time: its rows must stay as they were.
        kept = {t: _stored(landing, "2020-10-05", t) for t in ("COP", "KO", "MSFT")}
        emulator.inject("5xx", symbols=["COP"], history_only=True)
        before = len(emulator.requests_of("history"))
        restated = dg.materialize([raw_quotes], resources=resources, instance=instance, tags=history,
                                  run_config=request.run_config)
        assert restated.success
        asked = sorted(e.symbol for e in emulator.requests_of("history")[before:])
        assert asked == ["ABBV", "COP", "NEE", "PG"]  # upstream, not the cache: one request each
        materialization = restated.asset_materializations_for_node("raw_quotes")[0].metadata
        assert materialization["cache_refreshes"].value == 4 and materialization["cache_hits"].value == 0

        truth = PriceArchive.bundled()
        for symbol in ("ABBV", "NEE", "PG"):
            [bar] = truth.bars(symbol, dt.date(2020, 10, 9), dt.date(2020, 10, 10)).itertuples()
            stored = _stored(landing, "2020-10-09", symbol)
            assert stored["adj_close"] == pytest.approx(bar.adj_close, rel=1e-6)
            assert stored["close"] == pytest.approx(bar.close, rel=1e-6)
        assert stale_nee["close"] == pytest.approx(4 * _stored(landing, "2020-10-09", "NEE")["close"], rel=1e-6)
        for symbol, row in kept.items():  # COP kept its (stale) rows; KO and MSFT were not touched
            assert _stored(landing, "2020-10-05", symbol).equals(row)

        # The next tick: ABBV, NEE and PG are consistent now; COP is still stale and already asked for.
        again = _evaluate(instance, landing, tick.cursor)
        assert again.run_requests == []
        assert "restatement requested already for COP" in again.skip_reason.skip_message
        assert list(json.loads(again.cursor)["pending"]) == ["COP"]

    # The refreshed answers replaced the cached ones: an ordinary fetch of the window gets new prices.
    frame, report = quotes.model_copy().fetch(["NEE"], dt.date(2020, 9, 28), dt.date(2020, 10, 10))
    assert report.trace.cache_hits == 1 and report.requests == 0
    assert frame.iloc[-1]["close"] == pytest.approx(_stored(landing, "2020-10-09", "NEE")["close"])


def _stored(landing, day: str, symbol: str) -> pd.Series:
    frame = pd.read_parquet(landing.path_for(dg.AssetKey("raw_quotes"), day))
    return frame[frame["symbol"] == symbol].iloc[0]
