"""The new-ticker sensor against a real universe table and instance."""

from __future__ import annotations

import json

import dagster as dg

from stock_assets.defs.prices.gaps import RANGE_END_TAG, RANGE_START_TAG
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.universe.sensors import new_ticker_sensor


def _track(database, symbols):
    assert dg.materialize([ticker_universe], resources={"database": database,
                                                        "tickers": TickerSelection(tickers=symbols)}).success


def _evaluate(database, cursor):
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                 resources={"database": database, "quotes": QuoteClient()}) as context:
        return new_ticker_sensor(context)


def test_new_tickers_get_their_history_and_only_they(database):
    _track(database, ["AAPL", "MSFT"])
    first = _evaluate(database, None)
    assert first.run_requests == [] and json.loads(first.cursor) == ["AAPL", "MSFT"]

    _track(database, ["AAPL", "MSFT", "NVDA", "KO"])
    second = _evaluate(database, first.cursor)
    [request] = second.run_requests
    assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["KO", "NVDA"]}}}}
    # The whole history up to the replay's last session, as one single-run backfill.
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2016-01-01", "2020-10-27")
    assert json.loads(second.cursor) == ["AAPL", "KO", "MSFT", "NVDA"]

    # Nothing new: nothing requested. Dropping a ticker requests nothing either.
    assert _evaluate(database, second.cursor).run_requests == []
    _track(database, ["AAPL", "KO"])
    third = _evaluate(database, second.cursor)
    assert third.run_requests == [] and json.loads(third.cursor) == ["AAPL", "KO"]


def test_a_new_listing_outside_the_index_gets_its_history(database):
    """An ETF and a London listing are no S&P 500 members; tracking them still fetches their history."""
    with database.begin() as conn:
        conn.exec_driver_sql("DELETE FROM market.listings")
    _track(database, ["AAPL"])
    first = _evaluate(database, None)
    _track(database, ["AAPL", "QQQ", "OCDO.L"])
    [request] = _evaluate(database, first.cursor).run_requests
    assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["OCDO.L", "QQQ"]}}}}
    with database.begin() as conn:
        listed = conn.exec_driver_sql("SELECT symbol, calendar, exchange_timezone, price_currency, tracked "
                                      "FROM market.listings ORDER BY symbol").all()
    assert [tuple(row) for row in listed] == [("AAPL", "XNYS", "America/New_York", "USD", True),
                                              ("OCDO.L", "XLON", "Europe/London", "GBP", True),
                                              ("QQQ", "XNYS", "America/New_York", "USD", True)]


def test_more_new_tickers_than_a_batch_holds_get_the_streamed_backfill_not_one_merge(database, monkeypatch):
    # 1,214 sessions at 2,500 rows a batch: 2 tickers a batch. Three new ones would be merged in
    # memory at once; the regular backfill streams every tracked ticker in batches instead.
    monkeypatch.setenv("STOCK_ASSETS_BATCH_ROWS", "2500")
    _track(database, ["AAPL"])
    first = _evaluate(database, None)
    _track(database, ["AAPL", "KO", "MSFT", "NVDA"])
    [request] = _evaluate(database, first.cursor).run_requests
    assert request.run_config == {}  # no only_tickers: every tracked ticker, in batches
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2016-01-01", "2020-10-27")
    assert request.tags["stock_assets/tickers"] == "KO,MSFT,NVDA"

    _track(database, ["AAPL", "KO", "MSFT", "NVDA", "PG", "WMT"])  # two fit one batch: merged
    [request] = _evaluate(database, json.dumps(["AAPL", "KO", "MSFT", "NVDA"])).run_requests
    assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["PG", "WMT"]}}}}
