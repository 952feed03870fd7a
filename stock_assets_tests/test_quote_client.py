"""The quote client on the replay (the same yfinance code path as live) and with Yahoo unreachable."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
import requests

from stock_assets.defs.quotes.resources import (
    RAW_COLUMNS,
    QuoteClient,
    QuoteSourceUnavailable,
    TickerFetchError,
)


def test_replay_returns_bars_with_corporate_actions(state_dir):
    frame = QuoteClient().daily_bars("AAPL", dt.date(2020, 8, 3), dt.date(2020, 9, 3))
    assert list(frame.columns) == RAW_COLUMNS
    assert frame["trade_date"].min() == dt.date(2020, 8, 3)
    assert frame["trade_date"].max() == dt.date(2020, 9, 2)
    assert (frame["source"] == "replay").all()
    by_day = frame.set_index("trade_date")
    assert by_day.loc[dt.date(2020, 8, 31), "stock_splits"] == 4.0  # AAPL 4:1
    assert by_day.loc[dt.date(2020, 8, 7), "dividends"] == pytest.approx(0.205, abs=1e-3)
    assert by_day["dividends"].gt(0).sum() == 1


def test_one_request_per_ticker_for_a_range(state_dir):
    client = QuoteClient()
    frame, report = client.fetch(["AAPL", "MSFT", "XOM"], dt.date(2016, 1, 4), dt.date(2020, 10, 28))
    assert report.requests == 3 and not report.failures
    assert len(frame) == 3 * 1214
    adapter = client.session.get_adapter("https://query2.finance.yahoo.com")
    history_calls = [r["symbol"] for r in adapter.chart_requests if "period1" in r]
    assert sorted(history_calls) == ["AAPL", "MSFT", "XOM"]


def test_unknown_ticker_fails_alone(state_dir):
    client = QuoteClient()
    frame, report = client.fetch(["AAPL", "ZZZZ"], dt.date(2020, 1, 2), dt.date(2020, 1, 10))
    assert set(frame["symbol"]) == {"AAPL"}
    assert list(report.failures) == ["ZZZZ"]
    assert report.failures["ZZZZ"].startswith("ZZZZ: not in the bundled replay archive")  # not "delisted"


def test_empty_answer_for_trading_days_is_an_error_not_no_trading(state_dir):
    with pytest.raises(TickerFetchError, match="no bars for 2021-03-01..2021-03-04"):
        QuoteClient().daily_bars("AAPL", dt.date(2021, 3, 1), dt.date(2021, 3, 5))  # after the recording ends


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_live_mode_fails_clearly_when_yahoo_is_unreachable(state_dir):
    session = requests.Session()
    # A proxy on a closed loopback port: every connection is refused, as with no route to Yahoo.
    session.proxies = {"https": f"http://127.0.0.1:{_closed_port()}", "http": f"http://127.0.0.1:{_closed_port()}"}
    client = QuoteClient(source="yahoo").with_session(session)
    with pytest.raises(QuoteSourceUnavailable, match="Live Yahoo Finance cannot be reached") as raised:
        client.daily_bars("AAPL", dt.date(2024, 1, 2), dt.date(2024, 1, 5))
    assert "STOCK_ASSETS_QUOTE_SOURCE=replay" in str(raised.value)
