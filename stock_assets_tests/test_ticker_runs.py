"""Ticker-only run requests and the restatement comparison, as plain functions."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from stock_assets.defs.prices.restatements import Bar, stale_reason
from stock_assets.defs.quotes.ticker_runs import MAX_TAG_CHARS, TICKERS_TAG, ticker_run_request
from stock_assets.defs.universe.constituents import load_constituents


def test_a_universe_sized_request_keeps_tags_and_run_key_short_and_the_config_whole():
    symbols = list(load_constituents()["symbol"])  # ~500: the tag would be ~2,500 characters
    request = ticker_run_request(symbols, dt.date(2016, 1, 1), dt.date(2020, 10, 27), "restatement_sensor",
                                 refresh_cache=True)
    assert request.run_config["ops"]["raw_quotes"]["config"] == {"only_tickers": symbols, "refresh_cache": True}
    assert len(request.tags[TICKERS_TAG]) <= MAX_TAG_CHARS and request.tags[TICKERS_TAG].endswith(" more)")
    assert len(request.run_key) < 100
    small = ticker_run_request(["AAPL", "MSFT"], dt.date(2020, 10, 1), dt.date(2020, 10, 2), "gap_sensor")
    assert small.tags[TICKERS_TAG] == "AAPL,MSFT" and small.run_key == "gap_sensor:AAPL,MSFT:2020-10-01:2020-10-02"
    assert isinstance(small, dg.RunRequest) and "refresh_cache" not in small.run_config["ops"]["raw_quotes"]["config"]


def _bar(day: int, open_: float, close: float, adj: float, dividend: float = 0.0) -> Bar:
    return Bar(dt.date(2020, 10, day), open_, close, adj, dividend)


def test_stored_history_is_stale_only_when_it_misses_the_adjustment():
    # A 1.00 dividend going ex on the 14th after a close of 100: the day before must carry 0.99.
    new = _bar(14, 99.5, 99.0, 99.0, dividend=1.0)
    assert stale_reason(_bar(13, 100.5, 100.0, 99.0), new) is None  # already adjusted
    assert "dividends imply 0.990000" in stale_reason(_bar(13, 100.5, 100.0, 100.0), new)
    # A dividend later in the new fetch: its first bar is adjusted already, the stored one is not.
    assert stale_reason(_bar(13, 100.5, 100.0, 100.0), _bar(14, 100.0, 101.0, 100.0)) is not None
    # A 4:1 split in the new fetch: stored prices four times the new ones are unadjusted; near them, fine.
    assert "4:1 split" in stale_reason(_bar(13, 400, 400.0, 400.0), _bar(14, 101, 101.0, 101.0), [4.0])
    assert stale_reason(_bar(13, 100, 100.0, 100.0), _bar(14, 110, 110.0, 110.0), [4.0]) is None
    # A bad stored bar is cleaning's business, not a restatement.
    assert stale_reason(_bar(13, 100, -1.0, 100.0), _bar(14, 100, 100.0, 100.0)) is None
